"""The store's tables and indexes (see the package docstring for what each holds), and bringing a file of an
older schema up to date."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ctllm.errors import UserError
from ctllm.pairs import cjk_index
from ctllm.pairs.store.ingest import BATCH, has_words, index_texts, pair_texts

SCHEMA_VERSION = 6
FTS_HASH_BYTES = 64 << 20

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS rated_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    prompt TEXT NOT NULL,  -- JSON messages, as pair_texts.prompt
    completion TEXT NOT NULL,
    desirable INTEGER NOT NULL CHECK (desirable IN (0, 1)),
    language TEXT NOT NULL,
    source TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    content_hash TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rated_dedup ON rated_answers(collection_id, content_hash);
-- Listing by id reads rated_by_id (the rowid follows collection_id in the index), counts read rated_by_label.
CREATE INDEX IF NOT EXISTS rated_by_id ON rated_answers(collection_id);
CREATE INDEX IF NOT EXISTS rated_by_label ON rated_answers(collection_id, desirable);
""" + cjk_index.SCHEMA


def ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, or migrate and reindex one of an older schema (inside a write
    transaction); a file of a newer schema is refused."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UserError(f"{path}: store schema {version} is newer than this program ({SCHEMA_VERSION})")
    if version == 1:
        _migrate_from_1(db)
    if version in (1, 2, 3, 4):  # 2: every CJK character a token; 3: no skip terms; 4: word-less rows
        db.execute("DROP TABLE IF EXISTS pairs_fts")
    # 5 → 6 (unpaired rated answers, KTO) adds a table and its indexes: the CREATE statements below do it.
    for statement in _split_sql(SCHEMA):
        db.execute(statement)
    # A 64 MB in-memory buffer before the index writes a segment: fewer merges on a big import.
    db.execute("INSERT INTO pairs_fts(pairs_fts, rank) VALUES ('hashsize', ?)", (FTS_HASH_BYTES,))
    if version in (1, 2, 3, 4):
        _reindex(db)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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
            texts = [pair_texts(*r[1:]) for r in chunk]
            words = index_texts(texts)
            db.executemany(
                "INSERT INTO pairs_fts(rowid, coll, prompt, chosen, rejected) VALUES (?, ?, ?, ?, ?)",
                [(r[0], f"c{cid}", *w) for r, w in zip(chunk, words, strict=True) if has_words(w)],
            )
            builder.add([r[0] for r in chunk], [t for triple in texts for t in triple])
        for segment in cjk_index.segments_for(builder):
            cjk_index.write_segment(db, segment, cid)


def _split_sql(script: str) -> list[str]:
    """The schema script's statements (none of them holds a semicolon inside)."""
    return [s.strip() for s in script.split(";") if s.strip()]
