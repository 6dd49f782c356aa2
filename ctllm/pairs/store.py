"""The pairs store: one SQLite file (``Settings.db_path``) holding collections, pairs, labels and run scores.

Layout
  collections  an imported dataset, hand-written pairs, chat votes or synthetic pairs (``KINDS``)
  pairs        small per-pair columns only (collection, version links, language, source, split, lengths,
               hashes), so filtered scans and paging touch compact rows; texts live in ``pair_texts``
  pair_texts   prompt (JSON messages), chosen, rejected, meta (JSON)
  labels       one verdict per (pair version chain, annotator); a new verdict replaces the annotator's old one
  scores       a run's implicit-reward margin per pair, for "lowest margin first"
  pairs_fts    word index (FTS5, contentless) of the texts with their CJK characters left out; a pair with no
               word left (most Chinese pairs) has no row there (``_has_words``)
  search_*     the CJK substring index (``ctllm.pairs.cjk_index``): segments of bulk-imported pairs, and
               ``search_unindexed``, pairs added one at a time (checked by a scan until FOLD_AT of them are
               folded into a segment)

Versions: ``edit_pair`` never changes a row. It adds a new pair whose ``parent_id`` is the edited one and whose
``root_id`` is the chain's first pair, and marks the old row ``is_latest = 0``. Browsing, search and export see
latest versions only; labels belong to the chain (``root_id``), so a verdict survives a typo fix.

Search (see ``ctllm.pairs.search``): a query holding a CJK character is an exact substring search (candidates
from the CJK index, checked on the text); other queries match words through FTS5 (the last word as a prefix);
queries with no letter or digit use a LIKE scan.

Concurrency: one connection per thread, WAL, ``BEGIN IMMEDIATE`` for every write (no read-to-write upgrade
deadlocks), a busy timeout, short transactions. ``synchronous=NORMAL`` in WAL mode: a committed write survives
the process being killed (not a power cut).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ctllm.errors import UserError
from ctllm.pairs import cjk_index
from ctllm.pairs.resolve import SHOWN_FIRST, VERDICTS, choice_of, resolve
from ctllm.pairs.schema import Pair
from ctllm.pairs.search import (
    fts_query,
    has_cjk,
    has_word,
    like_pattern,
    substring_needle,
    text_contains,
    word_texts,
)
from ctllm.pids import pid_exists

try:
    import orjson

    def _dumps(value: Any) -> str:
        return orjson.dumps(value, default=str).decode("utf-8")

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)


SCHEMA_VERSION = 5
KINDS = ("import", "manual", "votes", "synth")
LABEL_STATES = ("unlabelled", "labelled", "mine", "not_mine", "disagreement")
SORTS = ("id", "length_diff", "-length_diff", "score")
PAGE_SIZE = 20
BATCH = 2000
FTS_HASH_BYTES = 64 << 20
BULK_INDEX_MIN = 1000  # an add_pairs of this many pairs or more gets CJK index segments of its own
FOLD_AT = 4000  # pairs waiting in search_unindexed that are folded into a segment
LISTED_CANDIDATES = 50_000  # up to this many, a CJK query sorted otherwise than by id reads its candidates only

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('import', 'manual', 'votes', 'synth')),
    source TEXT NOT NULL DEFAULT '',
    format TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    root_id INTEGER NOT NULL,
    parent_id INTEGER REFERENCES pairs(id),
    is_latest INTEGER NOT NULL DEFAULT 1,
    language TEXT NOT NULL,
    source TEXT NOT NULL,
    split TEXT NOT NULL,
    prompt_chars INTEGER NOT NULL,
    chosen_chars INTEGER NOT NULL,
    rejected_chars INTEGER NOT NULL,
    len_diff INTEGER NOT NULL,
    prompt_hash INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    pending TEXT  -- an unfinished import's token: the row stays hidden (is_latest = 0) until the import ends
);
CREATE TABLE IF NOT EXISTS pair_texts (
    pair_id INTEGER PRIMARY KEY REFERENCES pairs(id),
    prompt TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS pairs_dedup ON pairs(collection_id, content_hash) WHERE parent_id IS NULL;
-- Paging indexes cover the filter columns, so a deep page jump with filters never reads table rows.
CREATE INDEX IF NOT EXISTS pairs_by_id ON pairs(collection_id, is_latest, id, root_id, language, split, source);
CREATE INDEX IF NOT EXISTS pairs_by_language ON pairs(collection_id, is_latest, language, id, root_id);
CREATE INDEX IF NOT EXISTS pairs_by_len_diff ON pairs(collection_id, is_latest, len_diff, id, root_id, language);
CREATE INDEX IF NOT EXISTS pairs_by_root ON pairs(root_id);
CREATE INDEX IF NOT EXISTS pairs_pending ON pairs(pending) WHERE pending IS NOT NULL;
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    root_id INTEGER NOT NULL,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    annotator TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('first', 'second', 'tie', 'both_bad', 'skip')),
    shown_first TEXT NOT NULL CHECK (shown_first IN ('chosen', 'rejected')),
    choice TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    UNIQUE (root_id, annotator)
);
CREATE INDEX IF NOT EXISTS labels_by_collection ON labels(collection_id, annotator, root_id);
CREATE INDEX IF NOT EXISTS labels_by_annotator ON labels(annotator, id);
CREATE TABLE IF NOT EXISTS scores (
    name TEXT NOT NULL,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    margin REAL NOT NULL,
    chosen REAL,
    rejected REAL,
    created REAL NOT NULL,
    PRIMARY KEY (name, pair_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_by_margin ON scores(collection_id, name, margin, pair_id);
CREATE VIRTUAL TABLE IF NOT EXISTS pairs_fts USING fts5(
    coll, prompt, chosen, rejected, content='', tokenize='unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS search_unindexed (pair_id INTEGER PRIMARY KEY);
""" + cjk_index.SCHEMA


def _index_texts(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) as the word index holds them, for (prompt text, chosen, rejected) triples."""
    words = word_texts([t for triple in triples for t in triple])
    return [(words[i], words[i + 1], words[i + 2]) for i in range(0, len(words), 3)]


def _prompt_hash(prompt_json: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_json.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


# ---------------------------------------------------------------------------------------------------------------
# What the store returns.


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    kind: str
    source: str
    format: str
    created: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StoredPair:
    id: int
    collection_id: int
    pair: Pair
    root_id: int
    parent_id: int | None
    is_latest: bool
    split: str
    created_by: str
    created: float


@dataclass(frozen=True)
class Label:
    id: int
    pair_id: int
    root_id: int
    annotator: str
    verdict: str
    shown_first: str
    choice: str  # the verdict in terms of the stored sides (see resolve.choice_of)
    reason: str
    created: float


@dataclass(frozen=True)
class PairQuery:
    """Filters for paging, counting and search. ``annotator`` goes with label_state "mine" / "not_mine"."""

    language: str | None = None
    source: str | None = None
    split: str | None = None
    label_state: str | None = None
    annotator: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[StoredPair]
    next_cursor: tuple | None  # pass as ``after`` for the next page; None on the last page
    page: int | None = None  # 1-based page number when the page was asked for by number


@dataclass(frozen=True)
class Progress:
    total: int  # latest pairs in the collection
    mine: int  # labelled by the annotator (skips included)
    anyone: int  # labelled by at least one annotator
    labels: int  # label rows in the collection
    annotators: int


class DuplicatePair(UserError):
    def __init__(self, collection: str, existing_id: int) -> None:
        super().__init__(f"collection {collection!r} already holds this pair (pair {existing_id})")
        self.existing_id = existing_id


_PAIR_COLUMNS = (
    "p.id, p.collection_id, p.root_id, p.parent_id, p.is_latest, p.language, p.source, p.split, p.created_by, "
    "p.created"
)


# ---------------------------------------------------------------------------------------------------------------


class Store:
    """Thread-safe access to the store file; make one per process and share it between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._hits: dict[str, bytes] = {}  # a running CJK search's candidates (see _cjk_filter)
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path}: store schema {version} is newer than this program ({SCHEMA_VERSION})")
            if version == 1:
                _migrate_from_1(db)
            if version in (1, 2, 3, 4):  # 2: every CJK character a token; 3: no skip terms; 4: word-less rows
                db.execute("DROP TABLE IF EXISTS pairs_fts")
            for statement in _split_sql(_SCHEMA):
                db.execute(statement)
            # A 64 MB in-memory buffer before the index writes a segment: fewer merges on a big import.
            db.execute("INSERT INTO pairs_fts(pairs_fts, rank) VALUES ('hashsize', ?)", (FTS_HASH_BYTES,))
            if version in (1, 2, 3, 4):
                _reindex(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._remove_abandoned_imports()

    # -- connections and transactions -------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; writes go through ``_write``)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            for pragma in (
                "journal_mode = WAL",
                "synchronous = NORMAL",
                "busy_timeout = 30000",
                "foreign_keys = ON",
                "cache_size = -65536",
                "temp_store = MEMORY",
                "journal_size_limit = 67108864",
            ):
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections -------------------------------------------------------------------------------------------

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
                (name, kind, source, format, time.time(), _dumps(meta or {})),
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
        row = self.db.execute(
            f"SELECT id, name, kind, source, format, created, meta FROM collections WHERE {column} = ?", (ref,)
        ).fetchone()
        return _collection(row) if row else None

    def get_collection(self, ref: str | int | Collection) -> Collection:
        found = self.find_collection(ref)
        if found is None:
            names = ", ".join(c.name for c in self.list_collections()) or "none yet"
            raise UserError(f"no collection {ref!r} (collections: {names})")
        return found

    def list_collections(self) -> list[Collection]:
        rows = self.db.execute("SELECT id, name, kind, source, format, created, meta FROM collections ORDER BY id")
        return [_collection(row) for row in rows]

    def update_collection_meta(self, ref: str | int | Collection, **changes: Any) -> Collection:
        collection = self.get_collection(ref)
        with self._write() as db:
            (raw,) = db.execute("SELECT meta FROM collections WHERE id = ?", (collection.id,)).fetchone()
            db.execute(
                "UPDATE collections SET meta = ? WHERE id = ?", (_dumps(json.loads(raw) | changes), collection.id)
            )
        return self.get_collection(collection.id)

    def delete_collection(self, ref: str | int | Collection) -> int:
        """Delete a collection with its pairs, labels and scores; returns how many pair rows went."""
        cid = self.get_collection(ref).id
        with self._write() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM pairs WHERE collection_id = ?", (cid,))]
            db.execute("DELETE FROM labels WHERE collection_id = ?", (cid,))
            _delete_pairs(db, ids)
            cjk_index.delete_segments(db, "collection_id = ?", (cid,))
            db.execute("DELETE FROM collections WHERE id = ?", (cid,))
        return len(ids)

    # -- adding pairs ------------------------------------------------------------------------------------------

    def add_pairs(
        self,
        collection: str | int | Collection,
        pairs: Iterable[Pair],
        *,
        created_by: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, int]:
        """Add pairs, all or nothing: returns (added, duplicates skipped).

        A pair whose texts (prompt, chosen, rejected) are already in the collection is a duplicate. The pairs are
        written in short transactions of BATCH pairs, hidden until the last batch is in and then shown in one
        transaction, so annotators' label writes never wait long behind a big import. On any failure the hidden
        rows are removed (those of a process that died are removed when a store next opens the file).
        ``progress`` is called with the number of pairs handled so far.

        The CJK index: a big add gets segments of its own, built in a second thread (numpy sorts release the GIL,
        so it runs beside the SQLite writes on another core) and written, hidden like the rows, as each block of
        65,536 ids fills; a small add goes to ``search_unindexed``.
        """
        cid = self.get_collection(collection).id
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        seen = {
            digest
            for (digest,) in self.db.execute(
                "SELECT content_hash FROM pairs WHERE collection_id = ? AND parent_id IS NULL", (cid,)
            )
        }
        added = duplicates = done = 0
        now = time.time()
        index = cjk_index.BackgroundBuilder()
        preparer = ThreadPoolExecutor(1, thread_name_prefix="prepare-rows")
        added_ids: list[int] = []
        try:
            with cjk_index.small_pages(), self._rare_checkpoints():
                for batch, prepared in _prepared_ahead(pairs, preparer):
                    with self._write() as db:
                        next_id = _next_id(db)
                        versions = []
                        for pair, row in zip(batch, prepared, strict=True):
                            if row.digest in seen:
                                duplicates += 1
                                continue
                            seen.add(row.digest)
                            versions.append((next_id, next_id, None, pair, row))
                            next_id += 1
                        _insert(db, cid, versions, created_by, now, pending=token)
                    ids = [v[0] for v in versions]
                    added_ids += ids
                    index.add(ids, partial(_texts_of, [v[3] for v in versions]), len(added_ids) >= BULK_INDEX_MIN)
                    for segment in index.ready():
                        self._write_segment(segment, cid, token)
                    added += len(versions)
                    done += len(batch)
                    if progress is not None:
                        progress(done)
                for segment in index.finish() if added >= BULK_INDEX_MIN else ():
                    self._write_segment(segment, cid, token)
                with self._write() as db:
                    db.execute("UPDATE pairs SET is_latest = 1, pending = NULL WHERE pending = ?", (token,))
                    db.execute("UPDATE search_segments SET pending = NULL WHERE pending = ?", (token,))
                    if added < BULK_INDEX_MIN:
                        _add_unindexed(db, added_ids)
        except BaseException as error:
            with suppress(Exception):  # whatever is left is removed when a store next opens the file
                self._remove_pending(token)
            if isinstance(error, sqlite3.IntegrityError):  # the dedup index caught a concurrent import
                raise UserError(f"another import added some of these pairs to collection {cid} meanwhile; "
                                "nothing was imported, try again") from None
            raise
        finally:
            index.close()
            preparer.shutdown(cancel_futures=True)
        return added, duplicates

    @contextmanager
    def _rare_checkpoints(self) -> Iterator[None]:
        """During a big write, this connection copies the WAL into the database every 64 MB instead of every 4 MB
        (fewer checkpoints and fsyncs); after it, one checkpoint. Each commit is as durable as ever (WAL,
        synchronous=NORMAL): only when WAL pages reach the database file changes."""
        db = self.db
        db.execute("PRAGMA wal_autocheckpoint = 16384")
        try:
            yield
        finally:
            db.execute("PRAGMA wal_autocheckpoint = 1000")
            with suppress(sqlite3.OperationalError):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _write_segment(self, segment: cjk_index.Segment, cid: int, token: str) -> None:
        with self._write() as db:
            cjk_index.write_segment(db, segment, cid, pending=token)

    def _remove_pending(self, token: str) -> None:
        with self._write() as db:
            cjk_index.delete_segments(db, "pending = ?", (token,))
        while True:
            with self._write() as db:
                ids = [r[0] for r in db.execute("SELECT id FROM pairs WHERE pending = ? LIMIT ?", (token, BATCH))]
                _delete_pairs(db, ids)
            if not ids:
                return

    def _remove_abandoned_imports(self) -> None:
        """Hidden rows of imports whose process is gone (killed mid-import)."""
        tokens = [r[0] for r in self.db.execute("SELECT DISTINCT pending FROM pairs WHERE pending IS NOT NULL")]
        for token in tokens:
            if not _process_alive(int(token.split("-", 1)[0])):
                self._remove_pending(token)

    def add_pair(self, collection: str | int | Collection, pair: Pair, by: str = "") -> StoredPair:
        """Add one pair (hand-written, a chat vote); DuplicatePair when the collection holds it already."""
        target = self.get_collection(collection)
        digest = pair.content_hash()
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM pairs WHERE collection_id = ? AND content_hash = ? AND parent_id IS NULL",
                (target.id, digest),
            ).fetchone()
            if row:
                raise DuplicatePair(target.name, row[0])
            pid = _next_id(db)
            _insert(db, target.id, [(pid, pid, None, pair, prepare_rows([pair])[0])], by, time.time())
            _add_unindexed(db, [pid])
        return self.get_pair(pid)

    def edit_pair(
        self,
        pair_id: int,
        *,
        chosen: str | None = None,
        rejected: str | None = None,
        prompt: Sequence[dict] | None = None,
        by: str = "",
    ) -> int:
        """Save an edited copy of a pair as its new version; returns the new pair id (the original is kept)."""
        current = self.get_pair(pair_id)
        if not current.is_latest:
            latest = self.latest_version(pair_id)
            raise UserError(f"pair {pair_id} has a newer version ({latest.id}); edit that one")
        old = current.pair
        new = Pair(
            prompt=tuple(prompt) if prompt is not None else old.prompt,
            chosen=old.chosen if chosen is None else chosen,
            rejected=old.rejected if rejected is None else rejected,
            source=old.source,
            language=old.language,
            meta=dict(old.meta) | {"edited_from": pair_id},
        )
        for name, text in (("chosen", new.chosen), ("rejected", new.rejected)):
            if not text.strip():
                raise UserError(f"pair {pair_id}: the edited {name} response is empty")
        if new.chosen.strip() == new.rejected.strip():
            raise UserError(f"pair {pair_id}: the edited responses are identical")
        if new == old:
            raise UserError(f"pair {pair_id}: nothing changed")
        with self._write() as db:
            updated = db.execute("UPDATE pairs SET is_latest = 0 WHERE id = ? AND is_latest = 1", (pair_id,)).rowcount
            if updated != 1:  # edited by someone else since we read it
                raise UserError(f"pair {pair_id} was edited meanwhile; reload it")
            pid = _next_id(db)
            version = (pid, current.root_id, pair_id, new, prepare_rows([new])[0])
            _insert(db, current.collection_id, [version], by, time.time())
            _add_unindexed(db, [pid])
            db.execute("UPDATE pairs SET split = ? WHERE id = ?", (current.split, pid))
            db.execute("DELETE FROM scores WHERE pair_id = ?", (pair_id,))  # scored texts that are gone
        return pid

    def set_split(self, pair_ids: Iterable[int], split: str) -> int:
        """Mark pairs (e.g. a held-out set) with a split name; returns how many rows changed."""
        ids = list(pair_ids)
        with self._write() as db:
            return sum(
                db.execute(f"UPDATE pairs SET split = ? WHERE id IN ({_marks(chunk)})", (split, *chunk)).rowcount
                for chunk in _chunks(ids, 500)
            )

    # -- reading pairs -----------------------------------------------------------------------------------------

    def get_pair(self, pair_id: int) -> StoredPair:
        found = self._pairs_by_id([pair_id])
        if not found:
            raise UserError(f"no pair with id {pair_id}")
        return found[0]

    def latest_version(self, pair_id: int) -> StoredPair:
        row = self.db.execute(
            "SELECT id FROM pairs WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?) AND is_latest = 1",
            (pair_id,),
        ).fetchone()
        if row is None:
            raise UserError(f"no pair with id {pair_id}")
        return self.get_pair(row[0])

    def versions(self, pair_id: int) -> list[StoredPair]:
        """Every version of a pair's chain, oldest first."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM pairs WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?) ORDER BY id", (pair_id,)
            )
        ]
        return self._pairs_by_id(ids)

    def _pairs_by_id(self, ids: Sequence[int]) -> list[StoredPair]:
        """Pairs in the order of ``ids``."""
        if not ids:
            return []
        found: dict[int, StoredPair] = {}
        for chunk in _chunks(list(ids), 500):
            rows = self.db.execute(
                f"SELECT {_PAIR_COLUMNS}, t.prompt, t.chosen, t.rejected, t.meta"
                f" FROM pairs p JOIN pair_texts t ON t.pair_id = p.id WHERE p.id IN ({_marks(chunk)})",
                chunk,
            )
            for row in rows:
                found[row[0]] = _stored_pair(row)
        return [found[i] for i in ids if i in found]

    def iter_pairs(
        self, collection: str | int | Collection, split: str | None = None, batch: int = 1000
    ) -> Iterator[StoredPair]:
        """Latest versions in id order (consistent pages of ``batch``; safe to write meanwhile)."""
        cid = self.get_collection(collection).id
        after = 0
        split_sql = " AND p.split = ?" if split is not None else ""
        while True:
            params: list[Any] = [cid, after, *([split] if split is not None else []), batch]
            rows = self.db.execute(
                f"SELECT {_PAIR_COLUMNS}, t.prompt, t.chosen, t.rejected, t.meta FROM pairs p"
                f" JOIN pair_texts t ON t.pair_id = p.id WHERE p.collection_id = ? AND p.is_latest = 1"
                f" AND p.id > ?{split_sql} ORDER BY p.id LIMIT ?",
                params,
            ).fetchall()
            if not rows:
                return
            yield from (_stored_pair(r) for r in rows)
            after = rows[-1][0]

    def resolved_pairs(
        self, collection: str | int | Collection, split: str | None = None
    ) -> tuple[list[Pair], Counter[str]]:
        """What an export or a training run gets: latest versions with labels resolved (see ``resolve``).

        Returns the pairs and how many pairs had each outcome (resolve.KEPT and resolve.LEFT_OUT).
        """
        choices = self.choices_by_root(collection)
        pairs: list[Pair] = []
        outcomes: Counter[str] = Counter()
        for stored in self.iter_pairs(collection, split):
            resolution = resolve(stored.pair, choices.get(stored.root_id, ()))
            outcomes[resolution.outcome] += 1
            if resolution.pair is not None:
                pairs.append(resolution.pair)
        return pairs, outcomes

    def collection_pairs(self, collection: str | int | Collection, split: str | None = None) -> list[Pair]:
        """The resolved pairs of a collection (labels applied; ties, both-bad and no-majority pairs left out)."""
        return self.resolved_pairs(collection, split)[0]

    def page(
        self,
        collection: str | int | Collection,
        query: PairQuery | None = None,
        *,
        sort: str = "id",
        score_name: str | None = None,
        after: tuple | None = None,
        page: int | None = None,
        size: int = PAGE_SIZE,
    ) -> Page:
        """One page of latest pairs: the next after ``after`` (keyset), or page number ``page`` (1-based).

        Sorts: "id" (import order), "length_diff" / "-length_diff" (chosen minus rejected characters, ascending /
        descending), "score" (``score_name``'s margin, lowest first; pairs without that score are left out).
        A text query with sort "id" pages through the search index in id order.
        """
        if page is not None and page < 1:
            raise UserError(f"page numbers start at 1, not {page}")
        with self._planned(collection, query or PairQuery(), sort, score_name) as plan:
            if plan.candidates is not None:
                ids, more = self._walk_candidates(plan, after, (page - 1) * size if page else 0, size)
                next_cursor = (ids[-1],) if more else None
                return Page(self._pairs_by_id(ids), next_cursor, page)
            return self._page(plan, after, page, size)

    def _page(self, plan: _Plan, after: tuple | None, page: int | None, size: int) -> Page:
        if page is not None:
            after = None
            if page > 1:
                row = self.db.execute(
                    f"SELECT {plan.key_sql} {plan.from_where} ORDER BY {plan.order} LIMIT 1 OFFSET ?",
                    [*plan.params, (page - 1) * size - 1],
                ).fetchone()
                if row is None:
                    return Page([], None, page)
                after = tuple(row)
        keyset, key_params = plan.keyset(after)
        rows = self.db.execute(
            f"SELECT {plan.id_sql}, {plan.key_sql} {plan.from_where}{keyset} ORDER BY {plan.order} LIMIT ?",
            [*plan.params, *key_params, size + 1],
        ).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        items = self._pairs_by_id([r[0] for r in rows])
        next_cursor = tuple(rows[-1][1:]) if more else None
        return Page(items, next_cursor, page)

    def count(
        self, collection: str | int | Collection, query: PairQuery | None = None, *, limit: int | None = None
    ) -> int:
        """How many latest pairs match; with ``limit``, counting stops there (for "10,000+" displays)."""
        with self._planned(collection, query or PairQuery(), "id", None) as plan:
            if plan.candidates is not None:
                return len(self._walk_candidates(plan, None, 0, limit, count_only=True)[0])
            inner = f"SELECT 1 {plan.from_where}" + (" LIMIT ?" if limit is not None else "")
            params = [*plan.params, *([limit] if limit is not None else [])]
            return self.db.execute(f"SELECT count(*) FROM ({inner})", params).fetchone()[0]

    def search(
        self, collection: str | int | Collection, text: str, *, after: tuple | None = None, size: int = PAGE_SIZE
    ) -> Page:
        """Full-text search (Chinese substrings of any length; English words, the last one as a prefix)."""
        return self.page(collection, PairQuery(text=text), after=after, size=size)

    @contextmanager
    def _planned(
        self, collection: str | int | Collection, query: PairQuery, sort: str, score_name: str | None
    ) -> Iterator[_Plan]:
        """A query's plan; a CJK text query's candidates are registered for ``ctllm_hit`` while it runs."""
        token = uuid.uuid4().hex
        try:
            yield self._plan(collection, query, sort, score_name, token)
        finally:
            self._hits.pop(token, None)

    def _hit_sql(self, token: str, pair_id: int) -> int:
        """0: not a candidate; 1: holds the query; 2: may hold it (check the text)."""
        hits = self._hits.get(token, b"")
        return hits[pair_id] if 0 <= pair_id < len(hits) else 0

    def _cjk_filter(self, cid: int, text: str, token: str) -> tuple[tuple[str, list[Any]], np.ndarray]:
        """The condition for a substring query holding CJK characters, and its candidates in id order."""
        found = cjk_index.lookup(self.db, text, cid)
        waiting = np.array(
            [r[0] for r in self.db.execute(
                "SELECT u.pair_id FROM search_unindexed u CROSS JOIN pairs p ON p.id = u.pair_id"
                " WHERE p.collection_id = ?", (cid,))],
            dtype=np.int64,
        )
        top = int(max(found.ids.max(initial=-1), waiting.max(initial=-1)))
        hits = np.zeros(top + 1, dtype=np.uint8)
        hits[found.ids] = 1 if found.exact else 2
        hits[waiting] = 2
        self._hits[token] = hits.tobytes()
        if _INSTR_SAFE.fullmatch(text):  # SQLite's instr on the stored texts is exact here, and faster
            check, params = "instr(t.chosen, ?) OR instr(t.rejected, ?) OR instr(t.prompt, ?)", [text] * 3
        else:
            check, params = "ctllm_contains(t.prompt, t.chosen, t.rejected, ?)", [substring_needle(text)]
        condition = (
            "CASE ctllm_hit(?, p.id) WHEN 0 THEN 0 WHEN 1 THEN 1 ELSE EXISTS (SELECT 1 FROM pair_texts t"
            f" WHERE t.pair_id = p.id AND ({check})) END",
            [token, *params],
        )
        return condition, np.flatnonzero(hits)

    def _walk_candidates(
        self, plan: _Plan, after: tuple | None, skip: int, size: int | None, count_only: bool = False
    ) -> tuple[list[int], bool]:
        """Matching ids in id order from a CJK query's candidates: ``skip`` of them left out, then up to ``size``
        (all when None); and whether more follow. Candidates are checked in growing chunks, so a first page
        stops early."""
        candidates = plan.candidates
        assert candidates is not None
        if after is not None:
            if len(after) != 1:
                raise UserError("this cursor belongs to another sort order; start from the first page")
            candidates = candidates[np.searchsorted(candidates, int(after[0]), side="right"):]
        found: list[int] = []
        seen = 0
        want = None if size is None else skip + size + (0 if count_only else 1)
        start, chunk = 0, 64
        while start < len(candidates) and (want is None or seen < want):
            part = candidates[start : start + chunk].tolist()
            start += len(part)
            chunk = min(chunk * 4, 4096)
            limit = -1 if want is None else want - seen
            rows = self.db.execute(
                f"SELECT p.id {plan.from_where} AND p.id IN ({_marks(part)}) ORDER BY p.id LIMIT ?",
                [*plan.params, *part, limit],
            ).fetchall()
            for (pid,) in rows:
                if seen >= skip:
                    found.append(pid)
                seen += 1
        more = size is not None and not count_only and len(found) > size
        return (found[:size] if size is not None else found), more

    def _plan(
        self, collection: str | int | Collection, query: PairQuery, sort: str, score_name: str | None, token: str = ""
    ) -> _Plan:
        """The FROM/WHERE, sort keys and order for a query; each branch keeps its ORDER BY on an index."""
        cid = self.get_collection(collection).id
        if sort not in SORTS:
            raise UserError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        filters: list[tuple[str, list[Any]]] = []  # conditions on p beyond "in this collection, latest version"
        for column in ("language", "source", "split"):
            value = getattr(query, column)
            if value:
                filters.append((f"p.{column} = ?", [value]))
        if query.label_state:
            filters.append(_label_clause(cid, query.label_state, query.annotator))
        text = (query.text or "").strip()
        candidates = None
        if text and has_cjk(text):
            condition, candidates = self._cjk_filter(cid, text, token)
            if sort != "id" and len(candidates) <= LISTED_CANDIDATES:  # the id sort walks them instead
                filters.append(("p.id IN (SELECT value FROM json_each(?))", [_dumps(candidates.tolist())]))
            filters.append(condition)
            text = ""
        match = fts_query(text) if text else None
        if text and match is None:  # no letter or digit (punctuation, emoji): a LIKE scan of this collection
            filters.append((
                "EXISTS (SELECT 1 FROM pair_texts t WHERE t.pair_id = p.id AND (t.prompt LIKE ? ESCAPE '\\'"
                " OR t.chosen LIKE ? ESCAPE '\\' OR t.rejected LIKE ? ESCAPE '\\'))",
                [like_pattern(text)] * 3,
            ))
        matched = f"coll : c{cid} AND ({match})" if match else None
        in_collection = [("p.collection_id = ?", [cid]), ("p.is_latest = 1", [])]

        if sort == "score":
            if not score_name:
                raise UserError("sorting by score needs a score name (a run's scores)")
            where = [("s.collection_id = ?", [cid]), ("s.name = ?", [score_name])]
            source = "FROM scores s"
            if filters or matched:  # scores exist for latest versions only, so the join is for filters alone
                source += " JOIN pairs p ON p.id = s.pair_id"
                where += in_collection + filters
            if matched:
                where.append(("s.pair_id IN (SELECT rowid FROM pairs_fts WHERE pairs_fts MATCH ?)", [matched]))
            return _Plan(source, where, "s.pair_id", ("s.margin", "s.pair_id"), "s.margin, s.pair_id", False)
        if matched and sort == "id":  # drive from the index, which yields matches in rowid order
            where = [("f.pairs_fts MATCH ?", [matched])] + in_collection + filters
            source = "FROM pairs_fts f CROSS JOIN pairs p ON p.id = f.rowid"
            return _Plan(source, where, "f.rowid", ("f.rowid",), "f.rowid", False)
        where = in_collection + filters
        if matched:
            where.append(("p.id IN (SELECT rowid FROM pairs_fts WHERE pairs_fts MATCH ?)", [matched]))
        if sort == "length_diff":
            return _Plan("FROM pairs p", where, "p.id", ("p.len_diff", "p.id"), "p.len_diff, p.id", False)
        if sort == "-length_diff":
            return _Plan("FROM pairs p", where, "p.id", ("p.len_diff", "p.id"), "p.len_diff DESC, p.id DESC", True)
        return _Plan("FROM pairs p", where, "p.id", ("p.id",), "p.id", False, candidates)

    # -- labels ------------------------------------------------------------------------------------------------

    def add_label(self, pair_id: int, annotator: str, verdict: str, shown_first: str, reason: str = "") -> int:
        """Record an annotator's verdict on a pair (replacing their earlier one on the same pair); returns its id.

        ``verdict`` is about positions (first / second / tie / both_bad / skip); ``shown_first`` says which stored
        side ("chosen" or "rejected") was shown first. Committed when this returns.
        """
        annotator = annotator.strip()
        if not annotator:
            raise UserError("a label needs an annotator name")
        if verdict not in VERDICTS:
            raise UserError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        if shown_first not in SHOWN_FIRST:
            raise UserError(f"shown_first must be one of {', '.join(SHOWN_FIRST)}, not {shown_first!r}")
        choice = choice_of(verdict, shown_first)
        with self._write() as db:
            row = db.execute("SELECT root_id, collection_id FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if row is None:
                raise UserError(f"no pair with id {pair_id}")
            root, cid = row
            db.execute("DELETE FROM labels WHERE root_id = ? AND annotator = ?", (root, annotator))
            cursor = db.execute(
                "INSERT INTO labels(pair_id, root_id, collection_id, annotator, verdict, shown_first, choice, reason,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pair_id, root, cid, annotator, verdict, shown_first, choice, reason, time.time()),
            )
            return int(cursor.lastrowid)

    def undo_last_label(self, annotator: str, collection: str | int | Collection | None = None) -> Label | None:
        """Remove the annotator's most recent label (in one collection when given); returns it, or None."""
        where, params = "annotator = ?", [annotator]
        if collection is not None:
            where += " AND collection_id = ?"
            params.append(self.get_collection(collection).id)
        with self._write() as db:
            row = db.execute(
                f"SELECT {_LABEL_COLUMNS} FROM labels WHERE {where} ORDER BY id DESC LIMIT 1", params
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM labels WHERE id = ?", (row[0],))
        return Label(*row)

    def labels_for(self, pair_id: int) -> list[Label]:
        """Labels on a pair's version chain, oldest first."""
        rows = self.db.execute(
            f"SELECT {_LABEL_COLUMNS} FROM labels WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?)"
            " ORDER BY id",
            (pair_id,),
        )
        return [Label(*row) for row in rows]

    def label_of(self, pair_id: int, annotator: str) -> Label | None:
        row = self.db.execute(
            f"SELECT {_LABEL_COLUMNS} FROM labels WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?)"
            " AND annotator = ?",
            (pair_id, annotator),
        ).fetchone()
        return Label(*row) if row else None

    def collection_labels(self, collection: str | int | Collection) -> list[Label]:
        """Every label in a collection, oldest first (for agreement statistics and exports)."""
        cid = self.get_collection(collection).id
        rows = self.db.execute(f"SELECT {_LABEL_COLUMNS} FROM labels WHERE collection_id = ? ORDER BY id", (cid,))
        return [Label(*row) for row in rows]

    def choices_by_root(self, collection: str | int | Collection) -> dict[int, list[str]]:
        """{root_id: [each annotator's choice]} for a collection."""
        cid = self.get_collection(collection).id
        out: dict[int, list[str]] = {}
        for root, choice in self.db.execute("SELECT root_id, choice FROM labels WHERE collection_id = ?", (cid,)):
            out.setdefault(root, []).append(choice)
        return out

    def next_unlabelled(
        self, collection: str | int | Collection, annotator: str, after_id: int = 0, query: PairQuery | None = None
    ) -> StoredPair | None:
        """The next latest pair after ``after_id`` the annotator has not labelled, wrapping round to the start."""
        base = query or PairQuery()
        filters = PairQuery(base.language, base.source, base.split, "not_mine", annotator, base.text)
        for cursor in ((after_id,), None):
            found = self.page(collection, filters, after=cursor, size=1).items
            if found:
                return found[0]
        return None

    def progress(self, collection: str | int | Collection, annotator: str | None = None) -> Progress:
        cid = self.get_collection(collection).id
        db = self.db
        total = db.execute("SELECT count(*) FROM pairs WHERE collection_id = ? AND is_latest = 1", (cid,)).fetchone()[0]
        labels, anyone, annotators = db.execute(
            "SELECT count(*), count(DISTINCT root_id), count(DISTINCT annotator) FROM labels WHERE collection_id = ?",
            (cid,),
        ).fetchone()
        mine = 0
        if annotator:
            mine = db.execute(
                "SELECT count(*) FROM labels WHERE collection_id = ? AND annotator = ?", (cid, annotator)
            ).fetchone()[0]
        return Progress(total, mine, anyone, labels, annotators)

    # -- scores ------------------------------------------------------------------------------------------------

    def save_scores(self, name: str, scores: Iterable[Sequence[Any]]) -> int:
        """Store a run's per-pair scores: rows of (pair_id, margin[, chosen_reward, rejected_reward]).

        Saving under an existing name replaces that name's score for the same pairs. Returns rows written.
        """
        if not name.strip():
            raise UserError("scores need a name (the run that made them)")
        now = time.time()
        rows = []
        for item in scores:
            pid, margin, *rest = item
            chosen, rejected = (list(rest) + [None, None])[:2]
            rows.append((name, float(margin), chosen, rejected, now, int(pid)))
        with self._write() as db:  # only latest versions: an edited pair's old text is no longer shown
            return db.executemany(
                "INSERT OR REPLACE INTO scores(name, pair_id, collection_id, margin, chosen, rejected, created)"
                " SELECT ?1, id, collection_id, ?2, ?3, ?4, ?5 FROM pairs WHERE id = ?6 AND is_latest = 1",
                rows,
            ).rowcount

    def score_names(self, collection: str | int | Collection) -> list[tuple[str, int]]:
        """(score name, pairs scored) for a collection, most recent first."""
        cid = self.get_collection(collection).id
        return [
            (name, n)
            for name, n, _ in self.db.execute(
                "SELECT name, count(*), max(created) FROM scores WHERE collection_id = ?"
                " GROUP BY name ORDER BY max(created) DESC",
                (cid,),
            )
        ]

    def scores_for(self, pair_id: int) -> dict[str, float]:
        return dict(self.db.execute("SELECT name, margin FROM scores WHERE pair_id = ?", (pair_id,)).fetchall())

    # -- statistics inputs -------------------------------------------------------------------------------------

    def counts(self, collection: str | int | Collection | None = None) -> list[dict[str, Any]]:
        """Per collection: pairs (latest versions), by language and split, labelled, disagreements, versions."""
        collections = [self.get_collection(collection)] if collection is not None else self.list_collections()
        out = []
        for c in collections:
            db = self.db
            total = db.execute(
                "SELECT count(*) FROM pairs WHERE collection_id = ? AND is_latest = 1", (c.id,)
            ).fetchone()[0]
            by = {}
            for column in ("language", "split", "source"):
                by[column] = dict(
                    db.execute(
                        f"SELECT {column}, count(*) FROM pairs WHERE collection_id = ? AND is_latest = 1"
                        f" GROUP BY {column} ORDER BY count(*) DESC, {column}",
                        (c.id,),
                    ).fetchall()
                )
            plan_labelled = self.count(c, PairQuery(label_state="labelled"))
            disagreements = self.count(c, PairQuery(label_state="disagreement"))
            edited = db.execute(
                "SELECT count(*) FROM pairs WHERE collection_id = ? AND parent_id IS NOT NULL AND is_latest = 1",
                (c.id,),
            ).fetchone()[0]
            out.append(
                {
                    "collection": c.name,
                    "kind": c.kind,
                    "pairs": total,
                    **{f"by_{k}": v for k, v in by.items()},
                    "labelled": plan_labelled,
                    "unlabelled": total - plan_labelled,
                    "disagreements": disagreements,
                    "edited": edited,
                }
            )
        return out

    def lengths(self, collection: str | int | Collection) -> list[tuple[int, int, int, str]]:
        """(prompt, chosen, rejected characters, language) of every latest pair."""
        cid = self.get_collection(collection).id
        return self.db.execute(
            "SELECT prompt_chars, chosen_chars, rejected_chars, language FROM pairs"
            " WHERE collection_id = ? AND is_latest = 1",
            (cid,),
        ).fetchall()

    def duplicate_prompts(self, collection: str | int | Collection) -> tuple[int, int]:
        """(prompts appearing in more than one pair, pairs holding such a prompt) among latest versions."""
        cid = self.get_collection(collection).id
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM pairs"
            " WHERE collection_id = ? AND is_latest = 1 GROUP BY prompt_hash HAVING n > 1)",
            (cid,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def shared_with_other_collections(self, collection: str | int | Collection) -> int:
        """Latest pairs whose exact texts are also in another collection."""
        cid = self.get_collection(collection).id
        return self.db.execute(
            "SELECT count(*) FROM pairs p WHERE p.collection_id = ? AND p.is_latest = 1 AND EXISTS ("
            "SELECT 1 FROM pairs q WHERE q.content_hash = p.content_hash AND q.collection_id != p.collection_id)",
            (cid,),
        ).fetchone()[0]

    def label_rows(self, collection: str | int | Collection) -> list[tuple[int, str, str, str, int, int]]:
        """(root id, annotator, verdict, choice, chosen characters, rejected characters) for every label, the
        lengths taken from the pair's latest version."""
        cid = self.get_collection(collection).id
        return self.db.execute(
            "SELECT l.root_id, l.annotator, l.verdict, l.choice, p.chosen_chars, p.rejected_chars FROM labels l"
            " JOIN pairs p ON p.root_id = l.root_id AND p.is_latest = 1 WHERE l.collection_id = ? ORDER BY l.id",
            (cid,),
        ).fetchall()

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


# ---------------------------------------------------------------------------------------------------------------
# Helpers.

# A query with no ASCII letter or digit and nothing JSON escapes: found in a prompt's JSON exactly when it is in one
# of its messages (it cannot begin or end inside an escape such as \n or \u00e9), and no case to fold.
_INSTR_SAFE = re.compile(r'[^A-Za-z0-9"\\/\x00-\x1f]+')
_STORAGE_PROBLEMS = ("disk is full", "database is locked", "readonly database", "disk I/O error")
_LABEL_COLUMNS = "id, pair_id, root_id, annotator, verdict, shown_first, choice, reason, created"


@dataclass(frozen=True)
class _Plan:
    source: str  # "FROM ..."
    where: list[tuple[str, list[Any]]]  # conditions with their parameters, joined by AND
    id_sql: str  # the pair id column
    keys: tuple[str, ...]  # the sort key, also the keyset cursor
    order: str
    descending: bool
    candidates: np.ndarray | None = None  # a CJK text query's candidate ids, walked in order (sort "id" only)

    @property
    def from_where(self) -> str:
        return f"{self.source} WHERE " + " AND ".join(clause for clause, _ in self.where)

    @property
    def params(self) -> list[Any]:
        return [value for _, values in self.where for value in values]

    @property
    def key_sql(self) -> str:
        return ", ".join(self.keys)

    def keyset(self, after: tuple | None) -> tuple[str, list[Any]]:
        if after is None:
            return "", []
        if len(after) != len(self.keys):
            raise UserError("this cursor belongs to another sort order; start from the first page")
        op = "<" if self.descending else ">"
        if len(self.keys) == 1:
            return f" AND {self.keys[0]} {op} ?", list(after)
        return f" AND ({self.key_sql}) {op} ({_marks(after)})", list(after)


def _label_clause(cid: int, state: str, annotator: str | None) -> tuple[str, list[Any]]:
    if state not in LABEL_STATES:
        raise UserError(f"label state must be one of {', '.join(LABEL_STATES)}, not {state!r}")
    if state in ("mine", "not_mine") and not annotator:
        raise UserError(f"label state {state!r} needs an annotator")
    anyone = "SELECT root_id FROM labels WHERE collection_id = ?"
    if state == "unlabelled":
        return f"p.root_id NOT IN ({anyone})", [cid]
    if state == "labelled":
        return f"p.root_id IN ({anyone})", [cid]
    if state == "mine":
        return f"p.root_id IN ({anyone} AND annotator = ?)", [cid, annotator]
    if state == "not_mine":
        return f"p.root_id NOT IN ({anyone} AND annotator = ?)", [cid, annotator]
    return (
        f"p.root_id IN ({anyone} AND choice != 'skip' GROUP BY root_id HAVING count(DISTINCT choice) > 1)",
        [cid],
    )


def _collection(row: Sequence[Any]) -> Collection:
    return Collection(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


def _stored_pair(row: Sequence[Any]) -> StoredPair:
    pid, cid, root, parent, latest, language, source, split, by, created, prompt, chosen, rejected, meta = row
    meta = json.loads(meta)
    if split != str(meta.get("split") or "train"):  # set_split changed it: the pair carries the store's split
        meta["split"] = split
    pair = Pair(
        prompt=tuple(json.loads(prompt)),
        chosen=chosen,
        rejected=rejected,
        source=source,
        language=language,
        meta=meta,
    )
    return StoredPair(pid, cid, pair, root, parent, bool(latest), split, by, created)


class Prepared(NamedTuple):
    """What a pair needs before it is written, computed away from the write transaction."""

    digest: str  # Pair.content_hash()
    prompt_json: str
    prompt_hash: int
    prompt_chars: int
    split: str
    meta_json: str
    fts_prompt: str
    fts_chosen: str
    fts_rejected: str


def prepare_rows(pairs: Sequence[Pair]) -> list[Prepared]:
    """Hashes, JSON and word-index texts for a batch of pairs (all the per-pair Python work of a write)."""
    words = word_texts([t for p in pairs for t in (p.prompt_text, p.chosen, p.rejected)])
    out = []
    for i, p in enumerate(pairs):
        prompt_json = _dumps([dict(m) for m in p.prompt])
        out.append(Prepared(
            p.content_hash(), prompt_json, _prompt_hash(prompt_json), sum(len(m["content"]) for m in p.prompt),
            str(p.meta.get("split") or "train"), _dumps(p.meta), words[3 * i], words[3 * i + 1], words[3 * i + 2],
        ))
    return out


_Version = tuple[int, int, "int | None", Pair, Prepared]  # (id, root id, parent id, pair, prepared rows)


def _insert(
    db: sqlite3.Connection, cid: int, versions: Sequence[_Version], by: str, now: float, pending: str | None = None
) -> None:
    """Insert pair versions (ids chosen by the caller) with their texts and index rows; ``pending`` ones hidden."""
    meta_rows, text_rows, fts_rows = [], [], []
    tag = f"c{cid}"
    for pid, root, parent, pair, row in versions:
        chosen_chars, rejected_chars = len(pair.chosen), len(pair.rejected)
        meta_rows.append((
            pid, cid, root, parent, pair.language, pair.source, row.split, row.prompt_chars, chosen_chars,
            rejected_chars, chosen_chars - rejected_chars, row.prompt_hash, row.digest, by, now, pending,
            int(pending is None),
        ))
        text_rows.append((pid, row.prompt_json, pair.chosen, pair.rejected, row.meta_json))
        if _has_words((row.fts_prompt, row.fts_chosen, row.fts_rejected)):
            fts_rows.append((pid, tag, row.fts_prompt, row.fts_chosen, row.fts_rejected))
    db.executemany(
        "INSERT INTO pairs(id, collection_id, root_id, parent_id, language, source, split, prompt_chars,"
        " chosen_chars, rejected_chars, len_diff, prompt_hash, content_hash, created_by, created, pending, is_latest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        meta_rows,
    )
    db.executemany("INSERT INTO pair_texts(pair_id, prompt, chosen, rejected, meta) VALUES (?, ?, ?, ?, ?)", text_rows)
    db.executemany("INSERT INTO pairs_fts(rowid, coll, prompt, chosen, rejected) VALUES (?, ?, ?, ?, ?)", fts_rows)


def _has_words(texts: Sequence[str]) -> bool:
    """Whether a pair's word-index texts hold a word: those without get no FTS row (insert and delete agree)."""
    return any(map(has_word, texts))


def _delete_pairs(db: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Remove pairs with their texts, index rows, scores and labels (inside the caller's transaction).

    Newest first: an edited version always has a higher id than the pair it was made from."""
    for chunk in _chunks(sorted(ids, reverse=True), 500):
        marks = _marks(chunk)
        rows = db.execute(
            f"SELECT p.id, p.collection_id, t.prompt, t.chosen, t.rejected FROM pairs p"
            f" JOIN pair_texts t ON t.pair_id = p.id WHERE p.id IN ({marks})",
            chunk,
        ).fetchall()
        texts = _index_texts([("\n".join(m["content"] for m in json.loads(r[2])), r[3], r[4]) for r in rows])
        db.executemany(  # a contentless index forgets a row when given the very text it indexed
            "INSERT INTO pairs_fts(pairs_fts, rowid, coll, prompt, chosen, rejected) VALUES ('delete', ?, ?, ?, ?, ?)",
            [(r[0], f"c{r[1]}", *t) for r, t in zip(rows, texts, strict=True) if _has_words(t)],
        )
        for table, column in (("scores", "pair_id"), ("labels", "pair_id"), ("pair_texts", "pair_id"),
                              ("search_unindexed", "pair_id")):
            db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
        db.execute(f"DELETE FROM pairs WHERE id IN ({marks})", chunk)


def _prepared_ahead(pairs: Iterable[Pair], pool: ThreadPoolExecutor) -> Iterator[tuple[list[Pair], list[Prepared]]]:
    """Batches with their prepared rows, the next batch prepared in ``pool`` while the caller writes this one
    (SQLite releases the GIL while it works, so hashing and JSON run beside it)."""
    ahead: tuple[list[Pair], Future] | None = None
    for batch in _batches(pairs, BATCH):
        future = pool.submit(prepare_rows, batch)
        if ahead is not None:
            yield ahead[0], ahead[1].result()
        ahead = (batch, future)
    if ahead is not None:
        yield ahead[0], ahead[1].result()


def _texts_of(pairs: list[Pair]) -> list[str]:
    return [t for p in pairs for t in (p.prompt_text, p.chosen, p.rejected)]


def _pair_texts(prompt_json: str, chosen: str, rejected: str) -> tuple[str, str, str]:
    return "\n".join(m["content"] for m in json.loads(prompt_json)), chosen, rejected


def _add_unindexed(db: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Pairs the CJK index does not hold yet; past FOLD_AT of them, they are folded into a segment."""
    db.executemany("INSERT OR IGNORE INTO search_unindexed(pair_id) VALUES (?)", [(i,) for i in ids])
    if db.execute("SELECT count(*) FROM search_unindexed").fetchone()[0] >= FOLD_AT:
        _fold_unindexed(db)


def _fold_unindexed(db: sqlite3.Connection) -> None:
    rows = db.execute(
        "SELECT p.id, p.collection_id, t.prompt, t.chosen, t.rejected FROM search_unindexed u"
        " JOIN pairs p ON p.id = u.pair_id JOIN pair_texts t ON t.pair_id = p.id ORDER BY p.id"
    ).fetchall()
    collections = {r[1] for r in rows}
    owner = next(iter(collections)) if len(collections) == 1 else None
    cjk_index.index_pairs(db, ((r[0], _pair_texts(*r[2:])) for r in rows), owner)
    db.execute("DELETE FROM search_unindexed")


def _reindex(db: sqlite3.Connection) -> None:
    """Both search indexes rebuilt from the stored texts (a store of an older schema), one collection at a time."""
    cjk_index.delete_segments(db, "1", ())
    db.execute("DELETE FROM search_unindexed")
    for (cid,) in db.execute("SELECT id FROM collections").fetchall():
        rows = db.execute(
            "SELECT p.id, t.prompt, t.chosen, t.rejected FROM pairs p JOIN pair_texts t ON t.pair_id = p.id"
            " WHERE p.collection_id = ? ORDER BY p.id",
            (cid,),
        )
        builder = cjk_index.SegmentBuilder()
        while chunk := rows.fetchmany(BATCH):
            texts = [_pair_texts(*r[1:]) for r in chunk]
            words = _index_texts(texts)
            db.executemany(
                "INSERT INTO pairs_fts(rowid, coll, prompt, chosen, rejected) VALUES (?, ?, ?, ?, ?)",
                [(r[0], f"c{cid}", *w) for r, w in zip(chunk, words, strict=True) if _has_words(w)],
            )
            builder.add([r[0] for r in chunk], [t for triple in texts for t in triple])
        for segment in cjk_index.segments_for(builder):
            cjk_index.write_segment(db, segment, cid)


def _contains_sql(prompt_json: str, chosen: str, rejected: str, needle: str) -> int:
    return int(text_contains(prompt_json, chosen, rejected, needle))


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 (the first weeks of development) → 2: hidden rows of unfinished imports, scores per collection,
    paging indexes that cover their filters."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(pairs)")}
    if "pending" not in columns:
        db.execute("ALTER TABLE pairs ADD COLUMN pending TEXT")
    if "collection_id" not in {row[1] for row in db.execute("PRAGMA table_info(scores)")}:
        db.execute("DROP TABLE scores")  # scores are recomputed from runs
    for index in ("pairs_by_id", "pairs_by_language", "pairs_by_len_diff", "scores_by_margin"):
        db.execute(f"DROP INDEX IF EXISTS {index}")


def _process_alive(pid: int) -> bool:
    return pid == os.getpid() or pid_exists(pid)


def _next_id(db: sqlite3.Connection) -> int:
    """The next pair id (inside a write transaction); ids are never reused, as with AUTOINCREMENT."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'pairs'").fetchone()
    top = db.execute("SELECT max(id) FROM pairs").fetchone()[0]
    return max(row[0] if row else 0, top or 0) + 1


def _batches(items: Iterable[Pair], size: int) -> Iterator[list[Pair]]:
    batch: list[Pair] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _split_sql(script: str) -> list[str]:
    """The schema script's statements (none of them holds a semicolon inside)."""
    return [s.strip() for s in script.split(";") if s.strip()]


PairStore = Store  # the name other modules know it by
