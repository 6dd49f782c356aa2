"""Small helpers the store's modules share: JSON text for columns, placeholder lists, id chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

try:
    import orjson

    def dumps(value: Any) -> str:
        return orjson.dumps(value, default=str).decode("utf-8")

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))
