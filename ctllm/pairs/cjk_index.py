"""The store's index for Chinese (and other CJK) substrings: which pairs hold each pair of adjacent characters.

Why not FTS5: indexing every CJK character as a token with its positions cost about 85 CPU seconds for the seed's
229k pairs (60 % of an import); SQLite's trigram tokenizer was slower still. This index is built with numpy in
bulk (a sort of the batch's keys), several times faster, and stores no positions.

Terms. Characters get dense ids 1..K (K < 65536, ``CJK_RANGES``). Each CJK character ``a`` in a text yields the
term ``a << 16 | b`` where ``b`` is the id of the next character when that is CJK too (a bigram), else 0 ("a run
ends here"); and where one other character (punctuation, a space) stands between ``a`` and a CJK ``b``, a skip
term ``a << 16 | SKIP_BASE + b % SKIP_SLOTS``. So
  - a 2-character query is exactly one term (texts are never joined: a bigram never spans two texts);
  - a 1-character query ``a`` is exactly the union of the terms in ``[a << 16, a << 16 | K]``;
  - a longer query's pairs are among those holding all its bigrams and skip terms; the store verifies them on the
    real text.

Storage (tables ``search_segments`` and ``search_blocks``). A segment indexes pairs whose ids share ``id >> 16``
(documents are stored as 16-bit offsets from the segment's ``base``). Its sorted terms are cut into blocks of
at most ``TERMS_PER_BLOCK`` terms and about ``DOCS_PER_BLOCK`` documents; one row per block holds the terms
(uint32), each term's end in the block's documents (uint32), and the documents (uint16). A lookup reads one
small row and, through incremental blob I/O, only the documents it needs.

Entries are never updated: a pair's texts never change (an edit is a new pair), and entries of deleted pairs
are harmless (the store joins candidates with ``pairs``) and go when their segment goes.

Weak spot (no positions): a rare query whose terms are all common has many candidates to check, e.g. one CJK
character among Latin text ("的AI": every pair holding 的). Skip terms fixed the commonest case, runs split by
punctuation: "那个？一" went from 3.5 s to 16 ms at 229k pairs. The keys are packed through numpy views of uint64
as 16/32-bit lanes, which assumes a little-endian machine (x86, ARM).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

CJK_RANGES = ((0x3040, 0x3100), (0x3400, 0x4DC0), (0x4E00, 0xA000), (0xAC00, 0xD7B0), (0xF900, 0xFB00))
IS_CJK = np.zeros(0x10001, dtype=bool)  # by code point; the last slot stands for everything above 0xFFFF
for _lo, _hi in CJK_RANGES:
    IS_CJK[_lo:_hi] = True
DENSE = np.zeros(0x10001, dtype=np.uint64)  # code point -> 1..K for CJK, 0 for anything else
DENSE[IS_CJK] = np.arange(1, int(IS_CJK.sum()) + 1, dtype=np.uint64)
_DENSE16 = DENSE.astype(np.uint16)  # K < 65536
K = int(IS_CJK.sum())
SKIP_BASE = K + 1  # second ids above K: "b after one other character", b folded into the free slots
SKIP_SLOTS = 0x10000 - SKIP_BASE
TERMS_PER_BLOCK = 1024
DOCS_PER_BLOCK = 16384
SEGMENT_BITS = 16

SCHEMA = """
CREATE TABLE IF NOT EXISTS search_segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    base INTEGER NOT NULL,             -- pair id of document offset 0 (a multiple of 65536)
    collection_id INTEGER,             -- the one collection whose pairs it indexes, NULL when mixed
    pairs INTEGER NOT NULL,
    postings INTEGER NOT NULL,
    pending TEXT                       -- an unfinished import's token (see pairs.pending)
);
CREATE TABLE IF NOT EXISTS search_blocks (
    id INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL REFERENCES search_segments(id),
    last_term INTEGER NOT NULL,
    terms BLOB NOT NULL,
    ends BLOB NOT NULL,
    docs BLOB NOT NULL                 -- last: a lookup reads it through blob I/O, a slice at a time
);
CREATE INDEX IF NOT EXISTS search_blocks_by_term ON search_blocks(segment, last_term);
"""


@contextmanager
def small_pages() -> Iterator[None]:
    """numpy asks the kernel for huge pages for big arrays; where the kernel compacts memory to find them
    (``transparent_hugepage/defrag = madvise``, as here) that cost an import 15 s of system time for 60 s of
    work. Turned off while building (the setting is process-wide; it is put back after)."""
    setter = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:
        yield
        return
    previous = setter(False)
    try:
        yield
    finally:
        setter(previous)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return code <= 0xFFFF and bool(IS_CJK[code])


def _codes(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return DENSE[np.minimum(codes, 0x10000)]


def occurrence_keys(ids: Sequence[int], texts: Sequence[str]) -> np.ndarray:
    """``term << 32 | pair id`` for every CJK character of the pairs' texts (``len(texts) // len(ids)`` texts a
    pair), duplicates included, as uint64 (assembled from 16-bit lanes: half the time of shifts and ors)."""
    if not ids:
        return np.zeros(0, dtype=np.uint64)
    per = len(texts) // len(ids)
    joined = "\x00".join(texts) + "\x00"  # a non-CJK separator: no term spans two texts
    if joined.isascii():
        return np.zeros(0, dtype=np.uint64)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    dense = _DENSE16[np.minimum(codes, 0x10000)]
    pos = np.flatnonzero(dense[:-1])
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1
    pair_of_char = np.repeat(np.repeat(np.asarray(ids, dtype=np.uint32), per), lengths)
    following = dense[pos + 1]
    ends = pos[following == 0]  # the last character of a run: is it followed by one other, then a CJK one?
    ends = ends[ends + 2 < len(dense)]
    skips = ends[(dense[ends + 2] != 0) & (codes[ends + 1] != 0)]
    lanes = np.empty((len(pos) + len(skips), 4), dtype=np.uint16)  # little-endian uint64: pair id, next, this
    pair_lane = lanes.view(np.uint32)[:, 0]
    n = len(pos)
    pair_lane[:n] = pair_of_char[pos]
    lanes[:n, 2] = following
    lanes[:n, 3] = dense[pos]
    pair_lane[n:] = pair_of_char[skips]
    lanes[n:, 2] = SKIP_BASE + dense[skips + 2] % SKIP_SLOTS
    lanes[n:, 3] = dense[skips]
    return lanes.view(np.uint64).ravel()


@dataclass
class Segment:
    base: int
    terms: np.ndarray  # uint32, sorted, distinct
    ends: np.ndarray  # uint32: term i's documents are docs[ends[i-1]:ends[i]]
    docs: np.ndarray  # uint16 offsets from base, sorted within a term
    pairs: int


def build_segment(base: int, keys: np.ndarray, pairs: int) -> Segment:
    """A segment from ``term << 32 | offset`` keys (uint64, any order, duplicates allowed; sorted in place).

    Few temporaries: at the seed's scale a segment's keys take 300 MB, and each fresh array of that size costs
    the kernel page faults (measured: 13 s of system time when built with shifts and masks)."""
    if not len(keys):
        return Segment(base, np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint16), pairs)
    keys.sort()
    distinct = np.empty(len(keys), dtype=bool)
    distinct[0] = True
    np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
    term_of = keys.view(np.uint32)[1::2][distinct]  # little-endian halves: the term is the high one
    docs = keys.view(np.uint16)[0::4][distinct]
    del keys, distinct
    first = np.empty(len(term_of), dtype=bool)
    first[0] = True
    np.not_equal(term_of[1:], term_of[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(term_of)).astype(np.uint32)
    return Segment(base, term_of[starts], ends, docs, pairs)


@dataclass
class SegmentBuilder:
    """Collects the occurrence keys of pairs as they are written; ``segments()`` sorts them into segments."""

    parts: dict[int, list[np.ndarray]] = field(default_factory=dict)  # id >> 16 -> arrays of term << 32 | offset
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        if not ids:
            return
        keys = occurrence_keys(ids, texts)
        blocks = np.asarray(ids, dtype=np.int64) >> SEGMENT_BITS
        for block in sorted(set(blocks.tolist())):
            self.counts[block] = self.counts.get(block, 0) + int((blocks == block).sum())
        if not len(keys):
            return
        low = keys.view(np.uint32)[0::2]  # the pair id half
        key_blocks = low >> SEGMENT_BITS
        keys &= np.uint64(0xFFFFFFFF00000000 | ((1 << SEGMENT_BITS) - 1))  # pair id -> offset in its block
        first, last = int(key_blocks.min()), int(key_blocks.max())
        if first == last:
            self.parts.setdefault(first, []).append(keys)
            return
        for block in range(first, last + 1):
            part = keys[key_blocks == block]
            if len(part):
                self.parts.setdefault(block, []).append(part)

    def blocks(self) -> list[int]:
        return sorted(self.counts)

    def take(self, block: int) -> Segment:
        """The segment of one id block (its keys are dropped from the builder)."""
        parts = self.parts.pop(block, [])
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        return build_segment(block << SEGMENT_BITS, keys, self.counts.pop(block))


class BackgroundBuilder:
    """A SegmentBuilder fed from the importing thread and run in a second one: numpy's sorts and array work release
    the GIL, so the index is built on the other core while the importing thread writes rows to SQLite.

    ``add`` takes a batch (texts computed in the second thread); ``ready`` hands back the segments of id blocks
    that are complete (a later id was added) and built; ``finish`` the rest."""

    def __init__(self) -> None:
        self._builder = SegmentBuilder()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cjk-index")  # one thread: the builder is not shared
        self._queued: list[Future] = []
        self._building: dict[int, Future] = {}
        self._newest = -1

    def add(self, ids: list[int], texts: Callable[[], list[str]], complete_blocks: bool = True) -> None:
        self._queued.append(self._pool.submit(lambda: self._builder.add(ids, texts())))
        if ids:
            block = ids[-1] >> SEGMENT_BITS
            if complete_blocks:  # the blocks below this batch's last id are complete
                for done in range(self._newest if self._newest >= 0 else ids[0] >> SEGMENT_BITS, block):
                    self._build(done)
            self._newest = max(self._newest, block)

    def _build(self, block: int) -> None:
        if block not in self._building:
            self._building[block] = self._pool.submit(lambda: self._builder.take(block) if block in
                                                      self._builder.counts else None)

    def ready(self) -> list[Segment]:
        done = [block for block, future in self._building.items() if future.done()]
        return [s for s in (self._building.pop(block).result() for block in sorted(done)) if s is not None]

    def finish(self) -> list[Segment]:
        for future in self._queued:
            future.result()  # raises what the builder raised
        for block in self._builder.blocks():
            self._build(block)
        segments = [self._building.pop(block).result() for block in sorted(self._building)]
        return [s for s in segments if s is not None]

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def _block_cuts(segment: Segment) -> list[tuple[int, int]]:
    n = len(segment.terms)
    if not n:
        return []
    starts = np.concatenate(([0], segment.ends[:-1])).astype(np.int64)
    by_docs = np.searchsorted(starts, np.arange(DOCS_PER_BLOCK, int(segment.ends[-1]), DOCS_PER_BLOCK))
    cuts = np.unique(np.concatenate((np.arange(0, n, TERMS_PER_BLOCK), by_docs, [n])))
    cuts = cuts[(cuts > 0) | (np.arange(len(cuts)) == 0)]
    if cuts[0] != 0:
        cuts = np.concatenate(([0], cuts))
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))


def write_segment(
    db: sqlite3.Connection, segment: Segment, collection_id: int | None, pending: str | None = None
) -> int:
    """Store a segment (inside the caller's transaction); returns its id."""
    cursor = db.execute(
        "INSERT INTO search_segments(base, collection_id, pairs, postings, pending) VALUES (?, ?, ?, ?, ?)",
        (segment.base, collection_id, segment.pairs, len(segment.docs), pending),
    )
    sid = int(cursor.lastrowid)
    rows = []
    for a, b in _block_cuts(segment):
        first = int(segment.ends[a - 1]) if a else 0
        ends = segment.ends[a:b] - np.uint32(first)
        rows.append((sid, int(segment.terms[b - 1]), segment.terms[a:b].tobytes(), ends.tobytes(),
                     segment.docs[first : int(segment.ends[b - 1])].tobytes()))
    db.executemany(
        "INSERT INTO search_blocks(segment, last_term, terms, ends, docs) VALUES (?, ?, ?, ?, ?)", rows
    )
    return sid


def delete_segments(db: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    ids = [r[0] for r in db.execute(f"SELECT id FROM search_segments WHERE {where}", params)]
    for sid in ids:
        db.execute("DELETE FROM search_blocks WHERE segment = ?", (sid,))
        db.execute("DELETE FROM search_segments WHERE id = ?", (sid,))
    return len(ids)


# -- queries ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """What the index says about a query: pair ids (sorted, int64) that may hold it, and whether every one of
    them does (no verification needed)."""

    ids: np.ndarray
    exact: bool


def query_terms(needle: str) -> tuple[list[tuple[int, int]], bool]:
    """(term ranges to AND, exact) for a query holding at least one CJK character.

    Bigrams and skip terms are single terms; when there is none, each CJK character stands for its range of
    terms. Exact when the query is one or two CJK characters and nothing else."""
    dense = _codes(needle).tolist()
    terms = {a << 16 | b for a, b in zip(dense, dense[1:], strict=False) if a and b}
    terms |= {a << 16 | SKIP_BASE + b % SKIP_SLOTS for a, gap, b, mid in zip(dense, dense[1:], dense[2:], needle[1:],
                                                                          strict=False) if a and b and not gap
              and mid != "\x00"}
    exact = 0 < len(needle) <= 2 and all(dense)
    if terms:
        return sorted((t, t) for t in terms), exact
    return sorted({(a << 16, a << 16 | K) for a in dense if a}), exact


def lookup(db: sqlite3.Connection, needle: str, collection_id: int | None = None) -> Lookup:
    ranges, exact = query_terms(needle)
    segments = db.execute(
        "SELECT id, base FROM search_segments WHERE pending IS NULL AND (collection_id IS NULL OR ? IS NULL"
        " OR collection_id = ?) ORDER BY base, id",
        (collection_id, collection_id),
    ).fetchall()
    found = []
    for sid, base in segments:
        hits: np.ndarray | None = None
        for lo, hi in sorted(ranges, key=lambda r: r[1] - r[0]):  # single terms first
            docs = _docs_in_range(db, sid, lo, hi)
            if not len(docs):
                hits = None
                break
            mask = np.zeros(1 << SEGMENT_BITS, dtype=bool)
            mask[docs] = True
            hits = mask if hits is None else hits & mask
            if not hits.any():
                hits = None
                break
        if hits is not None:
            found.append(np.flatnonzero(hits).astype(np.int64) + base)
    return Lookup(_sorted_distinct(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64), exact)


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique without its hash table (numpy 2.4: 40x slower than a sort on 200k integers)."""
    values = np.sort(values)
    if len(values) > 1:
        values = values[np.concatenate(([True], values[1:] != values[:-1]))]
    return values


def _docs_in_range(db: sqlite3.Connection, segment: int, lo: int, hi: int) -> np.ndarray:
    """Documents (uint16 offsets) of the segment's terms in [lo, hi], possibly repeated."""
    out = []
    rows = db.execute(
        "SELECT id, terms, ends FROM search_blocks WHERE segment = ? AND last_term >= ? ORDER BY last_term",
        (segment, lo),
    )
    for rowid, terms_blob, ends_blob in rows:
        terms = np.frombuffer(terms_blob, dtype=np.uint32)
        ends = np.frombuffer(ends_blob, dtype=np.uint32)
        a, b = int(np.searchsorted(terms, lo, "left")), int(np.searchsorted(terms, hi, "right"))
        if a < b:
            start, stop = (int(ends[a - 1]) if a else 0), int(ends[b - 1])
            with db.blobopen("search_blocks", "docs", rowid, readonly=True) as blob:
                blob.seek(2 * start)
                out.append(np.frombuffer(blob.read(2 * (stop - start)), dtype=np.uint16))
        if int(terms[-1]) >= hi:
            break
    if not out:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate(out).astype(np.intp)


def segments_for(builder: SegmentBuilder) -> Iterator[Segment]:
    for block in builder.blocks():
        yield builder.take(block)


def index_pairs(db: sqlite3.Connection, rows: Iterable[tuple[int, Sequence[str]]], collection_id: int | None,
                pending: str | None = None) -> int:
    """Index (pair id, texts) rows as new segments (inside the caller's transaction); returns segments written."""
    builder = SegmentBuilder()
    batch_ids: list[int] = []
    batch_texts: list[str] = []
    for pid, texts in rows:
        batch_ids.append(pid)
        batch_texts.extend(texts)
        if len(batch_ids) >= 2000:
            builder.add(batch_ids, batch_texts)
            batch_ids, batch_texts = [], []
    builder.add(batch_ids, batch_texts)
    written = 0
    for segment in segments_for(builder):
        write_segment(db, segment, collection_id, pending)
        written += 1
    return written
