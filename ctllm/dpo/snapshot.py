"""A run's training data frozen as Parquet, with a content hash the run's config records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ctllm.errors import UserError
from ctllm.pairs.parquet_table import SCHEMA, pairs_table
from ctllm.pairs.schema import Pair

HASH_METADATA_KEY = b"ctllm.pairs_hash"



def pairs_hash(pairs: Iterable[Pair]) -> str:
    """sha256 over the pairs' texts in order (prompt turns, chosen, rejected); metadata does not count."""
    digest = hashlib.sha256(b"ctllm-pairs-v1\n")
    for pair in pairs:
        digest.update(pair.content_hash().encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def write_snapshot(pairs: Sequence[Pair], path: Path) -> str:
    """Write ``pairs`` as Parquet at ``path`` (atomically) and return their :func:`pairs_hash`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content_hash = pairs_hash(pairs)
    table = pairs_table(pairs, {HASH_METADATA_KEY: content_hash.encode("ascii")})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return content_hash


def read_snapshot(path: Path) -> list[Pair]:
    """The pairs of a snapshot, in their order; raises UserError when the file is not one."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"{path}: not a readable Parquet snapshot ({error})") from error
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise UserError(f"{path}: snapshot lacks column(s) {', '.join(missing)}")
    pairs = []
    for row, record in enumerate(table.select(SCHEMA.names).to_pylist()):
        try:
            meta = json.loads(record["meta"]) if record["meta"] else {}
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: row {row}: field 'meta' is not JSON ({error})") from error
        pairs.append(
            Pair(
                prompt=tuple(record["prompt"] or ()),
                chosen=record["chosen"] or "",
                rejected=record["rejected"] or "",
                source=record["source"] or "",
                language=record["language"] or "",
                meta=meta,
            )
        )
    return pairs


def snapshot_hash(path: Path) -> str | None:
    """The hash recorded in a snapshot's metadata (cheap: reads the footer only)."""
    metadata = pq.read_schema(Path(path)).metadata or {}
    value = metadata.get(HASH_METADATA_KEY)
    return value.decode("ascii") if value else None
