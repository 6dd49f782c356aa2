"""The one Parquet layout of pairs: exports (``--format parquet``) and training-run snapshots both use it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ctllm.pairs.schema import Pair

SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("source", pa.string()),
        ("language", pa.string()),
        ("meta", pa.string()),  # JSON text: sources carry arbitrary fields
    ]
)


def pairs_table(pairs: Sequence[Pair], metadata: dict[bytes, bytes] | None = None) -> pa.Table:
    """``pairs`` as an Arrow table of :data:`SCHEMA` (``metadata`` goes in the schema, e.g. a content hash)."""
    columns: dict[str, list[Any]] = {
        "prompt": [[dict(m) for m in p.prompt] for p in pairs],
        "chosen": [p.chosen for p in pairs],
        "rejected": [p.rejected for p in pairs],
        "source": [p.source for p in pairs],
        "language": [p.language for p in pairs],
        "meta": [json.dumps(p.meta, ensure_ascii=False, default=str) for p in pairs],
    }
    return pa.table(columns, schema=SCHEMA.with_metadata(metadata) if metadata else SCHEMA)
