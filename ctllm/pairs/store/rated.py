"""Unpaired rated answers (KTO's data): a prompt, one answer, desirable or not; added, counted, listed per
collection. Texts are not in the search indexes: the Pairs tab browses pairs only."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator

from ctllm.pairs.schema import RatedAnswer
from ctllm.pairs.store.connection import Connections
from ctllm.pairs.store.records import Collection, StoredRated
from ctllm.pairs.store.sql import dumps

_COLUMNS = "id, collection_id, prompt, completion, desirable, source, language, meta, created_by, created"
LIST_BATCH = 1000
LIST_SQL = f"SELECT {_COLUMNS} FROM rated_answers WHERE collection_id = ? AND id > ? ORDER BY id LIMIT ?"
COUNT_SQL = "SELECT count(*) FROM rated_answers WHERE collection_id = ?"
COUNT_LABEL_SQL = "SELECT count(*) FROM rated_answers WHERE collection_id = ? AND desirable = ?"


def rated_hash(answer: RatedAnswer) -> str:
    """Identity of a rated answer (prompt turns, completion, label): the same answer rated both ways is kept twice."""
    payload = json.dumps([list(map(dict, answer.prompt)), answer.completion, answer.desirable], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RatedMixin(Connections):
    def _collection_id(self, collection: str | int | Collection) -> int:
        return self.get_collection(collection).id  # type: ignore[attr-defined]  (Store's)

    def add_rated(
        self, collection: str | int | Collection, answers: Iterable[RatedAnswer], created_by: str = ""
    ) -> tuple[int, int]:
        """Add rated answers to a collection in one transaction; returns (added, duplicates skipped)."""
        cid = self._collection_id(collection)
        now = time.time()
        rows = [(cid, dumps([dict(m) for m in a.prompt]), a.completion, int(a.desirable), a.language, a.source,
                 dumps(a.meta), rated_hash(a), created_by, now) for a in answers]
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO rated_answers(collection_id, prompt, completion, desirable, language, source,"
                " meta, content_hash, created_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = db.total_changes - before
        return added, len(rows) - added

    def count_rated(self, collection: str | int | Collection, desirable: bool | None = None) -> int:
        cid = self._collection_id(collection)
        if desirable is None:
            return int(self.db.execute(COUNT_SQL, (cid,)).fetchone()[0])
        return int(self.db.execute(COUNT_LABEL_SQL, (cid, int(desirable))).fetchone()[0])

    def list_rated(
        self, collection: str | int | Collection, limit: int = 100, after_id: int = 0
    ) -> list[StoredRated]:
        """Up to ``limit`` rated answers of a collection by id, from after ``after_id`` (keyset paging)."""
        cid = self._collection_id(collection)
        rows = self.db.execute(LIST_SQL, (cid, after_id, limit))
        return [_to_stored(row) for row in rows]

    def iter_rated(self, collection: str | int | Collection) -> Iterator[StoredRated]:
        """Every rated answer of a collection by id, read in batches."""
        after = 0
        while batch := self.list_rated(collection, LIST_BATCH, after):
            yield from batch
            after = batch[-1].id


def _to_stored(row: tuple) -> StoredRated:
    rid, cid, prompt, completion, desirable, source, language, meta, created_by, created = row
    answer = RatedAnswer(tuple(json.loads(prompt)), completion, bool(desirable), source, language, json.loads(meta))
    return StoredRated(rid, cid, answer, created_by, created)
