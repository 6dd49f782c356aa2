"""Adding and editing pairs: big imports in hidden batches prepared ahead, single pairs, edits as new versions,
and the row-level writes (insert, delete, the search indexes' rows) the rest of the store shares.

An import's rows carry a ``pending`` token and stay hidden until its last batch is in; a failed import's rows
are removed at once, those of a process that died when a store next opens the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import partial
from typing import NamedTuple

from ctllm.errors import UserError
from ctllm.pairs import cjk_index
from ctllm.pairs.schema import Pair
from ctllm.pairs.search import has_word, word_texts
from ctllm.pairs.store.connection import Connections
from ctllm.pairs.store.records import Collection, DuplicatePair, StoredPair
from ctllm.pairs.store.sql import chunks, dumps, marks
from ctllm.pids import pid_exists

BATCH = 2000
BULK_INDEX_MIN = 1000  # an add_pairs of this many pairs or more gets CJK index segments of its own
FOLD_AT = 4000  # pairs waiting in search_unindexed that are folded into a segment


class IngestMixin(Connections):
    """Writing pairs; part of ``Store`` (uses its ``get_collection``, ``get_pair`` and ``latest_version``)."""

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
                delete_pairs(db, ids)
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
                db.execute(f"UPDATE pairs SET split = ? WHERE id IN ({marks(chunk)})", (split, *chunk)).rowcount
                for chunk in chunks(ids, 500)
            )


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
        prompt_json = dumps([dict(m) for m in p.prompt])
        out.append(Prepared(
            p.content_hash(), prompt_json, _prompt_hash(prompt_json), sum(len(m["content"]) for m in p.prompt),
            str(p.meta.get("split") or "train"), dumps(p.meta), words[3 * i], words[3 * i + 1], words[3 * i + 2],
        ))
    return out


def _prompt_hash(prompt_json: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_json.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


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
        if has_words((row.fts_prompt, row.fts_chosen, row.fts_rejected)):
            fts_rows.append((pid, tag, row.fts_prompt, row.fts_chosen, row.fts_rejected))
    db.executemany(
        "INSERT INTO pairs(id, collection_id, root_id, parent_id, language, source, split, prompt_chars,"
        " chosen_chars, rejected_chars, len_diff, prompt_hash, content_hash, created_by, created, pending, is_latest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        meta_rows,
    )
    db.executemany("INSERT INTO pair_texts(pair_id, prompt, chosen, rejected, meta) VALUES (?, ?, ?, ?, ?)", text_rows)
    db.executemany("INSERT INTO pairs_fts(rowid, coll, prompt, chosen, rejected) VALUES (?, ?, ?, ?, ?)", fts_rows)


def index_texts(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) as the word index holds them, for (prompt text, chosen, rejected) triples."""
    words = word_texts([t for triple in triples for t in triple])
    return [(words[i], words[i + 1], words[i + 2]) for i in range(0, len(words), 3)]


def has_words(texts: Sequence[str]) -> bool:
    """Whether a pair's word-index texts hold a word: those without get no FTS row (insert and delete agree)."""
    return any(map(has_word, texts))


def pair_texts(prompt_json: str, chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt text, chosen, rejected) of a stored pair, as the search indexes are given them."""
    return "\n".join(m["content"] for m in json.loads(prompt_json)), chosen, rejected


def delete_pairs(db: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Remove pairs with their texts, index rows, scores and labels (inside the caller's transaction).

    Newest first: an edited version always has a higher id than the pair it was made from."""
    for chunk in chunks(sorted(ids, reverse=True), 500):
        placeholders = marks(chunk)
        rows = db.execute(
            f"SELECT p.id, p.collection_id, t.prompt, t.chosen, t.rejected FROM pairs p"
            f" JOIN pair_texts t ON t.pair_id = p.id WHERE p.id IN ({placeholders})",
            chunk,
        ).fetchall()
        texts = index_texts([pair_texts(*r[2:]) for r in rows])
        db.executemany(  # a contentless index forgets a row when given the very text it indexed
            "INSERT INTO pairs_fts(pairs_fts, rowid, coll, prompt, chosen, rejected) VALUES ('delete', ?, ?, ?, ?, ?)",
            [(r[0], f"c{r[1]}", *t) for r, t in zip(rows, texts, strict=True) if has_words(t)],
        )
        for table, column in (("scores", "pair_id"), ("labels", "pair_id"), ("pair_texts", "pair_id"),
                              ("search_unindexed", "pair_id")):
            db.execute(f"DELETE FROM {table} WHERE {column} IN ({placeholders})", chunk)
        db.execute(f"DELETE FROM pairs WHERE id IN ({placeholders})", chunk)


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


def _batches(items: Iterable[Pair], size: int) -> Iterator[list[Pair]]:
    batch: list[Pair] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _texts_of(pairs: list[Pair]) -> list[str]:
    return [t for p in pairs for t in (p.prompt_text, p.chosen, p.rejected)]


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
    cjk_index.index_pairs(db, ((r[0], pair_texts(*r[2:])) for r in rows), owner)
    db.execute("DELETE FROM search_unindexed")


def _next_id(db: sqlite3.Connection) -> int:
    """The next pair id (inside a write transaction); ids are never reused, as with AUTOINCREMENT."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'pairs'").fetchone()
    top = db.execute("SELECT max(id) FROM pairs").fetchone()[0]
    return max(row[0] if row else 0, top or 0) + 1


def _process_alive(pid: int) -> bool:
    return pid == os.getpid() or pid_exists(pid)
