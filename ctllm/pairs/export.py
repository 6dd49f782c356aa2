"""A collection → a file (or a hub dataset), labels resolved into chosen / rejected (``Store.resolved_pairs``).

Formats are the writers' (``EXPORT_FORMATS``). An alpaca-ranking export also writes or updates
``dataset_info.json`` beside the file, so LLaMA-Factory finds it without hand edits. The hub is reached only
by ``push_to_hub``, called when the user gives a repository and a token.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.resolve import LEFT_OUT
from ctllm.pairs.store import Collection, Store
from ctllm.pairs.writers import (
    EXPORT_FORMATS,
    RATED_EXPORT_FORMATS,
    dataset_info_entry,
    to_hf_dataset,
    write_pairs,
    write_rated,
)

SUFFIXES = {
    "trl": ".trl.jsonl",
    "trl-conversational": ".trl-conversational.jsonl",
    "alpaca-ranking": ".alpaca.json",
    "parquet": ".parquet",
    "canonical": ".pairs.jsonl",
    "trl-unpaired": ".trl-unpaired.jsonl",
    "trl-unpaired-parquet": ".trl-unpaired.parquet",
}
DATASET_INFO = "dataset_info.json"


@dataclass
class ExportSummary:
    collection: str
    format: str
    path: Path | None  # None for a hub push
    written: int
    outcomes: Counter[str] = field(default_factory=Counter)  # resolve.KEPT / LEFT_OUT counts
    dataset_info: Path | None = None
    repo: str | None = None
    noun: str = "pairs"

    @property
    def left_out(self) -> dict[str, int]:
        return {reason: self.outcomes[reason] for reason in LEFT_OUT if self.outcomes[reason]}

    def report(self) -> str:
        where = self.repo if self.repo else str(self.path)
        kept = ", ".join(f"{self.outcomes[k]:,} {k}" for k in ("source", "confirmed", "swapped") if self.outcomes[k])
        text = f"wrote {self.written:,} {self.noun} of {self.collection!r} to {where} ({self.format})"
        if kept:
            text += f"; order: {kept}"
        left = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in self.left_out.items())
        text += f"; left out: {left}" if left else "; none left out"
        if self.dataset_info:
            text += f"; LLaMA-Factory entry in {self.dataset_info}"
        return text


def default_file_name(collection: str, fmt: str) -> str:
    safe = re.sub(r"[^\w.-]+", "_", collection, flags=re.UNICODE).strip("._") or "collection"
    return safe + SUFFIXES[fmt]


def _out_path(path: str | Path, target: Collection, fmt: str) -> Path:
    """``path`` itself, or inside an existing folder a file named after the collection."""
    out = Path(path).expanduser()
    return out / default_file_name(target.name, fmt) if out.is_dir() else out


def export_rated(store: Store, collection: str | int | Collection, path: str | Path, fmt: str) -> ExportSummary:
    """Write the collection's unpaired rated answers in TRL's unpaired format (``RATED_EXPORT_FORMATS``) to
    ``path`` (a file, or an existing folder: a file named after the collection goes inside)."""
    if fmt not in RATED_EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(RATED_EXPORT_FORMATS)}")
    target = store.get_collection(collection)
    out = _out_path(path, target, fmt)
    if not store.count_rated(target):
        raise UserError(f"collection {target.name!r} has no rated answer to export")
    written = write_rated((r.answer for r in store.iter_rated(target)), out, fmt)
    return ExportSummary(target.name, fmt, out, written, noun="rated answers")


def export_collection(
    store: Store, collection: str | int | Collection, path: str | Path, fmt: str, *, split: str | None = None
) -> ExportSummary:
    """Write the collection's resolved pairs to ``path`` (a file, or an existing folder: a file named after the
    collection goes inside). ``split`` keeps only pairs of that split."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    target = store.get_collection(collection)
    out = _out_path(path, target, fmt)
    pairs, outcomes = store.resolved_pairs(target, split)
    if not pairs:
        raise UserError(f"collection {target.name!r} has no pair to export ({_outcome_text(outcomes)})")
    written = write_pairs(pairs, out, fmt)
    info = _update_dataset_info(out) if fmt == "alpaca-ranking" else None
    return ExportSummary(target.name, fmt, out, written, outcomes, info)


def _outcome_text(outcomes: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in outcomes.items()) or "it is empty"


def _update_dataset_info(data_file: Path) -> Path:
    """Add the file's entry to ``dataset_info.json`` beside it, keeping the entries already there."""
    info_path = data_file.parent / DATASET_INFO
    entries: dict[str, Any] = {}
    if info_path.exists():
        try:
            entries = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UserError(f"{info_path}: cannot update it, it is not valid JSON ({error})") from None
        if not isinstance(entries, dict):
            raise UserError(f"{info_path}: cannot update it, it does not hold a JSON object")
    name = data_file.name.removesuffix(".json").removesuffix(".alpaca")
    entries.update(dataset_info_entry(name, data_file.name))
    partial = info_path.with_name(info_path.name + ".partial")
    partial.write_text(json.dumps(entries, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, info_path)
    return info_path


def to_dataset(store: Store, collection: str | int | Collection, *, conversational: bool = False,
               split: str | None = None) -> tuple[Any, Counter[str]]:
    """The resolved pairs as a ``datasets.Dataset`` (TRL columns), with the resolution outcomes."""
    pairs, outcomes = store.resolved_pairs(collection, split)
    return to_hf_dataset(pairs, conversational=conversational), outcomes


def push_to_hub(
    store: Store,
    collection: str | int | Collection,
    repo: str,
    token: str,
    *,
    private: bool = True,
    conversational: bool = False,
) -> ExportSummary:
    """Upload the resolved pairs as a hub dataset (only when the user asks, with their repository and token)."""
    if not repo.strip() or "/" not in repo:
        raise UserError(f"hub repository must look like 'owner/name', not {repo!r}")
    if not token.strip():
        raise UserError("pushing to the hub needs a token with write access")
    target = store.get_collection(collection)
    dataset, outcomes = to_dataset(store, target, conversational=conversational)
    if len(dataset) == 0:
        raise UserError(f"collection {target.name!r} has no pair to push ({_outcome_text(outcomes)})")
    try:
        dataset.push_to_hub(repo, token=token, private=private)
    except Exception as error:  # network, auth and quota errors all surface here
        raise UserError(f"push to {repo} failed: {error}") from None
    fmt = "trl-conversational" if conversational else "trl"
    return ExportSummary(target.name, fmt, None, len(dataset), outcomes, repo=repo)
