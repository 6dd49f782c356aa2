"""Paths typed by users (model folders, data files) resolve only inside folders the operator allows."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ctllm.errors import UserError

# The checkout (or installed tree) this package runs from, and the assets shipped with it.
REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def safe_resolve(
    path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]], base: Path | None = None
) -> Path:
    """Resolve ``path`` (relative ones against ``base``, default the working folder) and refuse it unless the
    result lies inside one of ``roots``.

    Symlinks and ``..`` are resolved first, so a link or a ``..`` that leads out of every root is refused, while
    one that stays inside is fine. The path need not exist; callers check that and name it in their own error.
    """
    text = os.fspath(path)
    if not text.strip():
        raise UserError("empty path")
    if "\x00" in text:
        raise UserError(f"path {text!r} contains a NUL byte")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    resolved = candidate.resolve()
    allowed = [Path(root).expanduser().resolve() for root in roots]
    if any(is_inside(resolved, root) for root in allowed):
        return resolved
    shown = ", ".join(str(root) for root in allowed) or "(none configured)"
    raise UserError(
        f"path {text!r} resolves to {resolved}, outside the allowed folders: {shown}. "
        "The operator can allow more folders with CTLLM_ALLOWED_ROOTS (comma-separated)."
    )
