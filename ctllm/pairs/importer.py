"""File (or ``datasets`` folder, or hub id) → a collection in the store: read every row, then write all good pairs in
one transaction. Used by ``python -m ctllm import`` and the Pairs tab.

Nothing is written when the read aborts (``on_error="abort"`` and a bad row), when no row is good, or when the
write fails: a collection this import created is removed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ctllm.errors import UserError
from ctllm.pairs.readers import UNPAIRED_FORMAT, RowError, read_pairs, read_rated
from ctllm.pairs.schema import MAX_FIELD_CHARS
from ctllm.pairs.store import Collection, Store


@dataclass
class ImportSummary:
    collection: str
    format: str
    rows: int  # source rows seen
    added: int
    duplicates: int  # pairs already in the collection (or repeated in the file)
    errors: list[RowError] = field(default_factory=list)
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    noun: str = "pairs"

    def report(self, max_errors: int = 20) -> str:
        lines = [
            f"collection {self.collection!r}: {self.added:,} {self.noun} added, "
            f"{self.duplicates:,} duplicates skipped, "
            f"{len(self.errors):,} bad rows skipped (format {self.format}, {self.rows:,} rows read; "
            f"read {self.read_seconds:.1f} s, store {self.write_seconds:.1f} s)"
        ]
        lines += [f"  {error}" for error in self.errors[:max_errors]]
        if len(self.errors) > max_errors:
            lines.append(f"  ... and {len(self.errors) - max_errors:,} more")
        return "\n".join(lines)


def import_pairs(
    store: Store,
    source: str | Path,
    collection: str,
    *,
    kind: str = "import",
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    on_error: str = "skip",
    max_field_chars: int = MAX_FIELD_CHARS,
    pku_choice: str = "safer",
    all_ranked_pairs: bool = False,
    allow_hub: bool = False,
    created_by: str = "",
    read_progress: Callable[[int], None] | None = None,
    store_progress: Callable[[int], None] | None = None,
    max_bytes: int | None = None,
) -> ImportSummary:
    """Import ``source`` into ``collection`` (created when missing; an existing one gets the new pairs).

    ``max_bytes``: the upload size limit (``Settings.max_upload_mb << 20``); a larger file is refused unread."""
    started = time.perf_counter()
    result = read_pairs(
        source,
        fmt=fmt,
        mapping=mapping,
        on_error=on_error,
        max_field_chars=max_field_chars,
        pku_choice=pku_choice,
        all_ranked_pairs=all_ranked_pairs,
        allow_hub=allow_hub,
        progress=read_progress,
        max_bytes=max_bytes,
    )
    read_seconds = time.perf_counter() - started
    if not result.pairs:
        shown = "\n  ".join(str(e) for e in result.errors[:10])
        raise UserError(f"{source}: no valid pairs ({result.rows} rows, {len(result.errors)} bad):\n  {shown}")

    created = store.find_collection(collection) is None
    target = store.ensure_collection(collection, kind, source=str(source), format=result.format)
    started = time.perf_counter()
    try:
        added, duplicates = store.add_pairs(target, result.pairs, created_by=created_by, progress=store_progress)
    except BaseException:
        if created:
            store.delete_collection(target)
        raise
    write_seconds = time.perf_counter() - started
    summary = ImportSummary(
        target.name, result.format, result.rows, added, duplicates, result.errors, read_seconds, write_seconds
    )
    _record_import(store, target, source, summary)
    return summary


def _record_import(store: Store, target: Collection, source: str | Path, summary: ImportSummary) -> None:
    """The import's line in the collection's meta ("imports")."""
    imports = list(target.meta.get("imports", []))
    imports.append(
        {
            "source": str(source),
            "format": summary.format,
            "rows": summary.rows,
            "added": summary.added,
            "duplicates": summary.duplicates,
            "errors": len(summary.errors),
            "time": time.time(),
        }
    )
    store.update_collection_meta(target, imports=imports)


def import_rated(
    store: Store,
    source: str | Path,
    collection: str,
    *,
    kind: str = "import",
    on_error: str = "skip",
    max_field_chars: int = MAX_FIELD_CHARS,
    allow_hub: bool = False,
    created_by: str = "",
    max_bytes: int | None = None,
) -> ImportSummary:
    """Import unpaired rated answers (TRL's prompt / completion / label rows) into ``collection`` (created when
    missing); nothing is written when the read aborts or no row is good."""
    started = time.perf_counter()
    result = read_rated(source, on_error=on_error, max_field_chars=max_field_chars, allow_hub=allow_hub,
                        max_bytes=max_bytes)
    read_seconds = time.perf_counter() - started
    if not result.answers:
        shown = "\n  ".join(str(e) for e in result.errors[:10])
        raise UserError(f"{source}: no valid rated answers ({result.rows} rows, {len(result.errors)} bad):\n  {shown}")
    created = store.find_collection(collection) is None
    target = store.ensure_collection(collection, kind, source=str(source), format=UNPAIRED_FORMAT)
    started = time.perf_counter()
    try:
        added, duplicates = store.add_rated(target, result.answers, created_by=created_by)
    except BaseException:
        if created:
            store.delete_collection(target)
        raise
    summary = ImportSummary(target.name, UNPAIRED_FORMAT, result.rows, added, duplicates, result.errors,
                            read_seconds, time.perf_counter() - started, noun="rated answers")
    _record_import(store, target, source, summary)
    return summary
