"""Labels, run scores and the inputs of the statistics: per-annotator verdicts on a pair's version chain, a
run's margins, counts, lengths, duplicates and label rows."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.resolve import SHOWN_FIRST, VERDICTS, choice_of
from ctllm.pairs.store.connection import Connections
from ctllm.pairs.store.query import PairQuery
from ctllm.pairs.store.records import LABEL_COLUMNS, Collection, Label, LabelProgress, StoredPair


class LabelsMixin(Connections):
    """Labels, scores and statistics inputs; part of ``Store`` (uses its ``get_collection``, ``list_collections``,
    ``page`` and ``count``)."""

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
                f"SELECT {LABEL_COLUMNS} FROM labels WHERE {where} ORDER BY id DESC LIMIT 1", params
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM labels WHERE id = ?", (row[0],))
        return Label(*row)

    def labels_for(self, pair_id: int) -> list[Label]:
        """Labels on a pair's version chain, oldest first."""
        rows = self.db.execute(
            f"SELECT {LABEL_COLUMNS} FROM labels WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?)"
            " ORDER BY id",
            (pair_id,),
        )
        return [Label(*row) for row in rows]

    def label_of(self, pair_id: int, annotator: str) -> Label | None:
        row = self.db.execute(
            f"SELECT {LABEL_COLUMNS} FROM labels WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?)"
            " AND annotator = ?",
            (pair_id, annotator),
        ).fetchone()
        return Label(*row) if row else None

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

    def label_progress(self, collection: str | int | Collection, annotator: str | None = None) -> LabelProgress:
        """Progress as an annotator reads it: skips are counted apart and are nobody's judgement."""
        cid = self.get_collection(collection).id
        db = self.db
        total = db.execute("SELECT count(*) FROM pairs WHERE collection_id = ? AND is_latest = 1", (cid,)).fetchone()[0]
        judged, skipped, anyone, judgements, annotators, labels = db.execute(
            "SELECT coalesce(sum(annotator = ?1 AND choice != 'skip'), 0),"
            " coalesce(sum(annotator = ?1 AND choice = 'skip'), 0),"
            " count(DISTINCT CASE WHEN choice != 'skip' THEN root_id END), coalesce(sum(choice != 'skip'), 0),"
            " count(DISTINCT CASE WHEN choice != 'skip' THEN annotator END), count(*)"
            " FROM labels WHERE collection_id = ?2",
            (annotator, cid),
        ).fetchone()
        return LabelProgress(total, judged, skipped, anyone, judgements, annotators, labels)

    progress = label_progress

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
