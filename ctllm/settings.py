"""The one settings object, built from environment variables (``CTLLM_*``) and CLI flags.

Precedence: explicit keyword / CLI flag > environment variable > default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ctllm.pairs.schema import MAX_FIELD_CHARS

ENV_PREFIX = "CTLLM_"
# Gradio's own variables, read when the CTLLM_ one is not set (a Space sets them; so may any host).
GRADIO_ENV = {"host": "GRADIO_SERVER_NAME", "port": "GRADIO_SERVER_PORT"}


def default_data_dir() -> Path:
    """``/data`` when it exists and is writable (a Space with persistent storage), else ``./data``."""
    space_data = Path("/data")
    if space_data.is_dir() and os.access(space_data, os.W_OK):
        return space_data
    return Path("data").resolve()


def _parse_bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    # Model specs (see ctllm.models.registry): "embedded", a hub id, a local folder, "run:NAME".
    sft_model: str = "embedded"
    dpo_model: str = "latest-run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: bf16 on CUDA, fp32 on CPU)
    trust_remote_code: bool = False  # operator switch; presets may not turn it on by themselves
    offline: bool = False  # refuse hub look-ups entirely
    host: str = "127.0.0.1"
    port: int = 7860
    # Limits.
    max_upload_mb: int = 200
    max_field_chars: int = MAX_FIELD_CHARS
    max_new_tokens_limit: int = 1024
    generation_rate_per_minute: int = 30
    # Roles: comma-separated user names. On localhost without auth the local user is admin.
    admins: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()  # empty: every signed-in user may annotate
    auth: tuple[str, ...] = ()  # "user:password" pairs for launch(auth=...) off a Space
    # Folders inside which user-typed paths (model folders, data files) may resolve.
    allowed_roots: tuple[Path, ...] = ()
    hf_oauth: str = "auto"  # "Sign in with Hugging Face": auto (on a Space only), on, off

    @property
    def db_path(self) -> Path:
        return self.data_dir / "studio.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def path_roots(self) -> tuple[Path, ...]:
        """Allowed roots for user-typed paths: the configured ones, else the data dir and assets."""
        if self.allowed_roots:
            return self.allowed_roots
        return (self.data_dir, Path(__file__).resolve().parent.parent / "assets")

    def ensure_dirs(self) -> Settings:
        for folder in (self.data_dir, self.runs_dir, self.models_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None and f.name in GRADIO_ENV:
                raw = env.get(GRADIO_ENV[f.name]) or None
            if raw is not None:
                values[f.name] = _convert(f.name, raw)
        if env.get("HF_HUB_OFFLINE") and "offline" not in values:
            values["offline"] = _parse_bool(env["HF_HUB_OFFLINE"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        parser = argparse.ArgumentParser(add_help=False)
        add_settings_arguments(parser, server=True)
        args, _ = parser.parse_known_args(argv)
        return cls.from_namespace(args, env)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
        overrides = {}
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                overrides[f.name] = _convert(f.name, value) if isinstance(value, str) else value
        return cls.from_env(env, **overrides)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _convert(name: str, raw: str) -> object:
    if name in {"trust_remote_code", "offline"}:
        return _parse_bool(raw)
    if name in {"port", "max_upload_mb", "max_field_chars", "max_new_tokens_limit", "generation_rate_per_minute"}:
        return int(raw)
    if name == "data_dir":
        return Path(raw).expanduser().resolve()
    if name == "allowed_roots":
        return tuple(Path(p).expanduser().resolve() for p in _parse_list(raw))
    if name in {"admins", "annotators", "auth"}:
        return tuple(_parse_list(raw))
    return raw


def add_settings_arguments(parser: argparse.ArgumentParser, server: bool = False) -> None:
    """The settings every command accepts (``--data-dir`` etc.; ``--host``/``--port`` for the app only).

    Values stay strings here and are converted by ``Settings.from_namespace``."""
    group = parser.add_argument_group("settings (also CTLLM_* environment variables)")
    group.add_argument("--data-dir", dest="data_dir", default=None, help="data folder (default ./data or /data)")
    group.add_argument("--sft-model", dest="sft_model", default=None, help="SFT / reference model spec")
    group.add_argument("--dpo-model", dest="dpo_model", default=None, help="DPO model spec for chat")
    group.add_argument("--device", dest="device", default=None, help="auto | cpu | cuda | cuda:N")
    group.add_argument("--dtype", dest="dtype", default=None, help="auto | float32 | bfloat16 | float16")
    if server:
        group.add_argument("--host", dest="host", default=None, help="address (default GRADIO_SERVER_NAME, 127.0.0.1)")
        group.add_argument("--port", dest="port", default=None, help="port (default: GRADIO_SERVER_PORT, else 7860)")
