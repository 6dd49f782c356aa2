"""Connections and write transactions (see "Concurrency" in the package docstring): the base of every part of
``Store``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ctllm.errors import UserError
from ctllm.pairs.search import text_contains

_STORAGE_PROBLEMS = ("disk is full", "database is locked", "readonly database", "disk I/O error")
_PRAGMAS = (
    "journal_mode = WAL",
    "synchronous = NORMAL",
    "busy_timeout = 30000",
    "foreign_keys = ON",
    "cache_size = -65536",
    "temp_store = MEMORY",
    "journal_size_limit = 67108864",
)

_Self = TypeVar("_Self", bound="Connections")


class Connections:
    """Thread-local connections to the store file, write transactions, and the SQL functions queries call."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._hits: dict[str, bytes] = {}  # a running CJK search's candidates (see QueryMixin._cjk_filter)

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; writes go through ``_write``)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            for pragma in _PRAGMAS:
                connection.execute(f"PRAGMA {pragma}")
            connection.create_function("ctllm_contains", 4, _contains_sql, deterministic=True)
            connection.create_function("ctllm_hit", 2, self._hit_sql)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at its start (BEGIN IMMEDIATE), committed before the caller returns."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            if any(problem in str(error) for problem in _STORAGE_PROBLEMS):
                raise UserError(f"{self.path}: the store could not save this ({error}); nothing was written") from None
            raise

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hit_sql(self, token: str, pair_id: int) -> int:
        """0: not a candidate; 1: holds the query; 2: may hold it (check the text)."""
        hits = self._hits.get(token, b"")
        return hits[pair_id] if 0 <= pair_id < len(hits) else 0


def _contains_sql(prompt_json: str, chosen: str, rejected: str, needle: str) -> int:
    return int(text_contains(prompt_json, chosen, rejected, needle))
