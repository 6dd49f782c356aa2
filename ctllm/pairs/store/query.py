"""Query planning and paging: filters, label states, sorts, text search, keyset cursors and page-number jumps.

``plan_query`` turns a ``PairQuery`` on one collection into a ``Plan`` (FROM/WHERE, sort keys, ORDER BY) without
touching a database, and the plan's ``*_sql`` methods give the statements run; each branch keeps its ORDER BY on
an index. Text search works as "Search" in the package docstring says.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctllm.errors import UserError
from ctllm.pairs import cjk_index
from ctllm.pairs.search import fts_query, has_cjk, like_pattern, substring_needle
from ctllm.pairs.store.connection import Connections
from ctllm.pairs.store.records import Collection, StoredPair
from ctllm.pairs.store.sql import dumps, marks

LABEL_STATES = ("unlabelled", "labelled", "mine", "not_mine", "disagreement")
SORTS = ("id", "length_diff", "-length_diff", "score")
PAGE_SIZE = 20
LISTED_CANDIDATES = 50_000  # up to this many, a CJK query sorted otherwise than by id reads its candidates only

# A query with no ASCII letter or digit and nothing JSON escapes: found in a prompt's JSON exactly when it is in one
# of its messages (it cannot begin or end inside an escape such as \n or \u00e9), and no case to fold.
_INSTR_SAFE = re.compile(r'[^A-Za-z0-9"\\/\x00-\x1f]+')

Condition = tuple[str, list[Any]]  # an SQL condition with its parameters
CjkFilter = tuple[Condition, np.ndarray]  # a CJK text query's condition and its candidate ids in id order


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
class Plan:
    source: str  # "FROM ..."
    where: list[Condition]  # joined by AND
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

    def keyset(self, after: tuple | None) -> Condition:
        if after is None:
            return "", []
        if len(after) != len(self.keys):
            raise UserError("this cursor belongs to another sort order; start from the first page")
        op = "<" if self.descending else ">"
        if len(self.keys) == 1:
            return f" AND {self.keys[0]} {op} ?", list(after)
        return f" AND ({self.key_sql}) {op} ({marks(after)})", list(after)

    def page_sql(self, after: tuple | None, size: int) -> tuple[str, list[Any]]:
        """Ids and sort keys of up to ``size`` + 1 matches after the cursor ``after`` (one more says "more follow")."""
        keyset, key_params = self.keyset(after)
        sql = f"SELECT {self.id_sql}, {self.key_sql} {self.from_where}{keyset} ORDER BY {self.order} LIMIT ?"
        return sql, [*self.params, *key_params, size + 1]

    def jump_sql(self, offset: int) -> tuple[str, list[Any]]:
        """The sort key of the match at ``offset`` (0-based): the cursor a page-number jump starts after."""
        return f"SELECT {self.key_sql} {self.from_where} ORDER BY {self.order} LIMIT 1 OFFSET ?", [*self.params, offset]

    def count_sql(self, limit: int | None) -> tuple[str, list[Any]]:
        inner = f"SELECT 1 {self.from_where}" + (" LIMIT ?" if limit is not None else "")
        return f"SELECT count(*) FROM ({inner})", [*self.params, *([limit] if limit is not None else [])]


def plan_query(
    cid: int,
    query: PairQuery,
    sort: str = "id",
    score_name: str | None = None,
    cjk_filter: Callable[[str], CjkFilter] | None = None,
) -> Plan:
    """The plan for ``query`` on collection ``cid``. A text holding CJK characters needs ``cjk_filter`` (text →
    its condition and candidates, see ``QueryMixin._cjk_filter``); every other query is planned from its
    arguments alone."""
    if sort not in SORTS:
        raise UserError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    filters: list[Condition] = []  # conditions on p beyond "in this collection, latest version"
    for column in ("language", "source", "split"):
        value = getattr(query, column)
        if value:
            filters.append((f"p.{column} = ?", [value]))
    if query.label_state:
        filters.append(label_clause(cid, query.label_state, query.annotator))
    text = (query.text or "").strip()
    candidates = None
    if text and has_cjk(text):
        if cjk_filter is None:
            raise ValueError("a query text with CJK characters needs a cjk_filter")
        condition, candidates = cjk_filter(text)
        if sort != "id" and len(candidates) <= LISTED_CANDIDATES:  # the id sort walks them instead
            filters.append(("p.id IN (SELECT value FROM json_each(?))", [dumps(candidates.tolist())]))
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
    in_collection: list[Condition] = [("p.collection_id = ?", [cid]), ("p.is_latest = 1", [])]

    if sort == "score":
        if not score_name:
            raise UserError("sorting by score needs a score name (a run's scores)")
        where: list[Condition] = [("s.collection_id = ?", [cid]), ("s.name = ?", [score_name])]
        source = "FROM scores s"
        if filters or matched:  # scores exist for latest versions only, so the join is for filters alone
            source += " JOIN pairs p ON p.id = s.pair_id"
            where += in_collection + filters
        if matched:
            where.append(("s.pair_id IN (SELECT rowid FROM pairs_fts WHERE pairs_fts MATCH ?)", [matched]))
        return Plan(source, where, "s.pair_id", ("s.margin", "s.pair_id"), "s.margin, s.pair_id", False)
    if matched and sort == "id":  # drive from the index, which yields matches in rowid order
        where = [("f.pairs_fts MATCH ?", [matched])] + in_collection + filters
        source = "FROM pairs_fts f CROSS JOIN pairs p ON p.id = f.rowid"
        return Plan(source, where, "f.rowid", ("f.rowid",), "f.rowid", False)
    where = in_collection + filters
    if matched:
        where.append(("p.id IN (SELECT rowid FROM pairs_fts WHERE pairs_fts MATCH ?)", [matched]))
    if sort == "length_diff":
        return Plan("FROM pairs p", where, "p.id", ("p.len_diff", "p.id"), "p.len_diff, p.id", False)
    if sort == "-length_diff":
        return Plan("FROM pairs p", where, "p.id", ("p.len_diff", "p.id"), "p.len_diff DESC, p.id DESC", True)
    return Plan("FROM pairs p", where, "p.id", ("p.id",), "p.id", False, candidates)


def label_clause(cid: int, state: str, annotator: str | None) -> Condition:
    """The condition on ``p.root_id`` for a label state in collection ``cid``."""
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


class QueryMixin(Connections):
    """Paging, counting and search; part of ``Store`` (uses its ``get_collection`` and ``_pairs_by_id``)."""

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

    def _page(self, plan: Plan, after: tuple | None, page: int | None, size: int) -> Page:
        if page is not None:
            after = None
            if page > 1:
                row = self.db.execute(*plan.jump_sql((page - 1) * size - 1)).fetchone()
                if row is None:
                    return Page([], None, page)
                after = tuple(row)
        rows = self.db.execute(*plan.page_sql(after, size)).fetchall()
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
            return self.db.execute(*plan.count_sql(limit)).fetchone()[0]

    def search(
        self, collection: str | int | Collection, text: str, *, after: tuple | None = None, size: int = PAGE_SIZE
    ) -> Page:
        """Full-text search (Chinese substrings of any length; English words, the last one as a prefix)."""
        return self.page(collection, PairQuery(text=text), after=after, size=size)

    @contextmanager
    def _planned(
        self, collection: str | int | Collection, query: PairQuery, sort: str, score_name: str | None
    ) -> Iterator[Plan]:
        """A query's plan; a CJK text query's candidates are registered for ``ctllm_hit`` while it runs."""
        token = uuid.uuid4().hex
        try:
            cid = self.get_collection(collection).id
            yield plan_query(cid, query, sort, score_name, lambda text: self._cjk_filter(cid, text, token))
        finally:
            self._hits.pop(token, None)

    def _cjk_filter(self, cid: int, text: str, token: str) -> CjkFilter:
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
        self, plan: Plan, after: tuple | None, skip: int, size: int | None, count_only: bool = False
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
                f"SELECT p.id {plan.from_where} AND p.id IN ({marks(part)}) ORDER BY p.id LIMIT ?",
                [*plan.params, *part, limit],
            ).fetchall()
            for (pid,) in rows:
                if seen >= skip:
                    found.append(pid)
                seen += 1
        more = size is not None and not count_only and len(found) > size
        return (found[:size] if size is not None else found), more
