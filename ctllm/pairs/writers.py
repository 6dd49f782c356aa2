"""Write Pairs for other tools: TRL JSONL (standard, conversational), LLaMA-Factory alpaca ranking JSON,
Parquet, this project's canonical JSONL, and ``datasets.Dataset``.

Every format also carries ``source``, ``language`` and ``meta`` (meta as JSON text, so rows from different
sources keep one column type), which ``read_pairs`` reads back: a round trip gives equal pairs.
Files are written to a temporary name and renamed, so a failed export leaves no half file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.schema import Message, Pair, RatedAnswer

EXPORT_FORMATS = ("trl", "trl-conversational", "alpaca-ranking", "parquet", "canonical")
RATED_EXPORT_FORMATS = ("trl-unpaired", "trl-unpaired-parquet")  # unpaired rated answers (KTO)
PARQUET_BATCH = 10_000

try:  # orjson writes JSON several times faster
    import orjson

    def _dumps(value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode("utf-8")

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)


def _extras(pair: Pair) -> dict[str, str]:
    return {"source": pair.source, "language": pair.language, "meta": _dumps(pair.meta)}


def needs_conversational(pairs: Iterable[Pair]) -> bool:
    """TRL's standard format holds only a single user turn: a system prompt or earlier turns need messages."""
    return any(len(p.prompt) != 1 for p in pairs)


def trl_row(pair: Pair, conversational: bool) -> dict[str, Any]:
    if conversational:
        row: dict[str, Any] = {
            "prompt": [dict(m) for m in pair.prompt],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    else:
        row = {"prompt": pair.last_user, "chosen": pair.chosen, "rejected": pair.rejected}
    return row | _extras(pair)


def _alpaca_history(turns: tuple[Message, ...]) -> list[list[str]]:
    """Earlier turns as [[question, answer], ...]; turns of one role in a row are joined (readers never make them)."""
    merged: list[Message] = []
    for message in turns:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = Message(role=message["role"], content=merged[-1]["content"] + "\n\n" + message["content"])
        else:
            merged.append(message)
    if merged and merged[0]["role"] == "assistant":
        merged.insert(0, Message(role="user", content=""))
    return [[merged[i]["content"], merged[i + 1]["content"]] for i in range(0, len(merged) - 1, 2)]


def alpaca_row(pair: Pair) -> dict[str, Any]:
    turns = pair.prompt[1:] if pair.system else pair.prompt
    last = len(turns) - 1 if turns and turns[-1]["role"] == "user" else len(turns)
    return {
        "instruction": pair.last_user,
        "input": "",
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "system": pair.system,
        "history": _alpaca_history(turns[:last]),
    } | _extras(pair)


def dataset_info_entry(name: str, file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` content LLaMA-Factory needs for an alpaca ranking export: {name: {...}}."""
    return {
        name: {
            "file_name": file_name,
            "ranking": True,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
                "history": "history",
            },
        }
    }


def _write_lines(lines: Iterator[str], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(line)
            out.write("\n")


def _write_alpaca(pairs: list[Pair], path: Path) -> None:
    """A JSON array with one row per line: LLaMA-Factory reads it, and people can read it too."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write("[\n")
        for i, pair in enumerate(pairs):
            out.write(_dumps(alpaca_row(pair)))
            out.write(",\n" if i < len(pairs) - 1 else "\n")
        out.write("]\n")


def _write_parquet(pairs: list[Pair], path: Path) -> None:
    # Lazy: importing pyarrow takes seconds; start-up (the app, the CLI) does not need it.
    import pyarrow.parquet as pq

    # Lazy: importing ctllm.pairs.parquet_table (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.pairs.parquet_table import SCHEMA, pairs_table

    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        for start in range(0, max(len(pairs), 1), PARQUET_BATCH):
            writer.write_table(pairs_table(pairs[start : start + PARQUET_BATCH]))


def write_pairs(pairs: Iterable[Pair], path: Path, fmt: str) -> int:
    """Write ``pairs`` to ``path`` in one of EXPORT_FORMATS; returns how many were written.

    "trl" writes TRL's standard rows (prompt = the user's text) when every pair is one user turn, and TRL's
    conversational rows for the whole file otherwise (a system prompt or earlier turns need messages).
    """
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    items = list(pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        if fmt in ("trl", "trl-conversational"):
            conversational = fmt == "trl-conversational" or needs_conversational(items)
            _write_lines((_dumps(trl_row(p, conversational)) for p in items), partial)
        elif fmt == "canonical":
            _write_lines((_dumps(p.to_dict()) for p in items), partial)
        elif fmt == "alpaca-ranking":
            _write_alpaca(items, partial)
        else:
            _write_parquet(items, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(items)


def rated_row(answer: RatedAnswer, conversational: bool) -> dict[str, Any]:
    """TRL's unpaired preference row: prompt / completion / label (messages when ``conversational``)."""
    if conversational:
        row: dict[str, Any] = {"prompt": [dict(m) for m in answer.prompt],
                               "completion": [{"role": "assistant", "content": answer.completion}]}
    else:
        row = {"prompt": answer.last_user, "completion": answer.completion}
    return row | {"label": answer.desirable, "source": answer.source, "language": answer.language,
                  "meta": _dumps(answer.meta)}


def write_rated(answers: Iterable[RatedAnswer], path: Path, fmt: str) -> int:
    """Write rated answers in TRL's unpaired format, JSONL ("trl-unpaired") or Parquet ("trl-unpaired-parquet");
    conversational rows for the whole file when any prompt is more than one user turn. Returns how many."""
    if fmt not in RATED_EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r} for rated answers; choose one of "
                        f"{', '.join(RATED_EXPORT_FORMATS)}")
    path = Path(path)
    items = list(answers)
    conversational = any(len(a.prompt) != 1 for a in items)
    rows = (rated_row(a, conversational) for a in items)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        if fmt == "trl-unpaired":
            _write_lines((_dumps(row) for row in rows), partial)
        else:
            # Lazy: importing pyarrow takes seconds; start-up (the app, the CLI) does not need it.
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(list(rows)), partial, compression="zstd")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(items)


def to_hf_dataset(pairs: Iterable[Pair], conversational: bool = False) -> Any:
    """A ``datasets.Dataset`` in TRL's columns (conversational when asked or when a prompt needs messages)."""
    # Lazy: importing datasets takes seconds; start-up (the app, the CLI) does not need it.
    from datasets import Dataset

    items = list(pairs)
    conversational = conversational or needs_conversational(items)
    rows = [trl_row(p, conversational) for p in items]
    names = ("prompt", "chosen", "rejected", "source", "language", "meta")
    return Dataset.from_dict({name: [r[name] for r in rows] for name in names})
