"""``Store``: opening the file (schema and migrations, leftovers of killed imports) and the collections; the
rest of its methods come from one mixin per concern (ingest, reading, query, labels)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs import cjk_index
from ctllm.pairs.schema import RatedAnswer
from ctllm.pairs.store.ingest import IngestMixin, delete_pairs
from ctllm.pairs.store.labels import LabelsMixin
from ctllm.pairs.store.query import QueryMixin
from ctllm.pairs.store.rated import RatedMixin
from ctllm.pairs.store.reading import ReadMixin
from ctllm.pairs.store.records import COLLECTION_COLUMNS, Collection, to_collection
from ctllm.pairs.store.schema import ensure_schema
from ctllm.pairs.store.sql import dumps

KINDS = ("import", "manual", "votes", "synth")


class Store(IngestMixin, ReadMixin, QueryMixin, LabelsMixin, RatedMixin):
    """Thread-safe access to the store file; make one per process and share it between threads."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        with self._write() as db:
            ensure_schema(db, self.path)
        self._remove_abandoned_imports()

    def create_collection(
        self, name: str, kind: str = "import", source: str = "", format: str = "", meta: dict | None = None
    ) -> Collection:
        name = name.strip()
        if not name:
            raise UserError("a collection needs a name")
        if kind not in KINDS:
            raise UserError(f"collection kind must be one of {', '.join(KINDS)}, not {kind!r}")
        with self._write() as db:
            if db.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                raise UserError(f"a collection named {name!r} exists already")
            db.execute(
                "INSERT INTO collections(name, kind, source, format, created, meta) VALUES (?, ?, ?, ?, ?, ?)",
                (name, kind, source, format, time.time(), dumps(meta or {})),
            )
        return self.get_collection(name)

    def ensure_collection(self, name: str, kind: str = "import", **fields: Any) -> Collection:
        """The named collection, created when missing."""
        found = self.find_collection(name)
        if found is not None:
            return found
        try:
            return self.create_collection(name, kind, **fields)
        except UserError:  # another thread created it in between
            return self.get_collection(name)

    def find_collection(self, ref: str | int | Collection) -> Collection | None:
        if isinstance(ref, Collection):
            ref = ref.id
        column = "id" if isinstance(ref, int) else "name"
        row = self.db.execute(f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE {column} = ?", (ref,)).fetchone()
        return to_collection(row) if row else None

    def get_collection(self, ref: str | int | Collection) -> Collection:
        found = self.find_collection(ref)
        if found is None:
            names = ", ".join(c.name for c in self.list_collections()) or "none yet"
            raise UserError(f"no collection {ref!r} (collections: {names})")
        return found

    def list_collections(self) -> list[Collection]:
        rows = self.db.execute(f"SELECT {COLLECTION_COLUMNS} FROM collections ORDER BY id")
        return [to_collection(row) for row in rows]

    def update_collection_meta(self, ref: str | int | Collection, **changes: Any) -> Collection:
        collection = self.get_collection(ref)
        with self._write() as db:
            (raw,) = db.execute("SELECT meta FROM collections WHERE id = ?", (collection.id,)).fetchone()
            db.execute(
                "UPDATE collections SET meta = ? WHERE id = ?", (dumps(json.loads(raw) | changes), collection.id)
            )
        return self.get_collection(collection.id)

    def kto_examples(self, ref: str | int | Collection) -> list[RatedAnswer]:
        """What KTO trains on from a collection: each resolved pair as a desirable and an undesirable example
        (``Pair.as_rated``), then the collection's unpaired rated answers, by id."""
        collection = self.get_collection(ref)
        examples = [answer for pair in self.collection_pairs(collection) for answer in pair.as_rated()]
        return examples + [stored.answer for stored in self.iter_rated(collection)]

    def delete_collection(self, ref: str | int | Collection) -> int:
        """Delete a collection with its pairs, labels, scores and rated answers; returns how many pair rows went."""
        cid = self.get_collection(ref).id
        with self._write() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM pairs WHERE collection_id = ?", (cid,))]
            db.execute("DELETE FROM labels WHERE collection_id = ?", (cid,))
            db.execute("DELETE FROM rated_answers WHERE collection_id = ?", (cid,))
            delete_pairs(db, ids)
            cjk_index.delete_segments(db, "collection_id = ?", (cid,))
            db.execute("DELETE FROM collections WHERE id = ?", (cid,))
        return len(ids)


PairStore = Store  # the name other modules know it by
