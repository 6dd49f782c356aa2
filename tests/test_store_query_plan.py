"""Query planning without data: ``plan_query`` turns a PairQuery into SQL, and SQLite's EXPLAIN QUERY PLAN on an
empty store schema shows each page, page jump and count reads an index: no full scan of a table, and the sort
order (with its keyset cursor) comes from an index, never from a temporary B-tree."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctllm.errors import UserError
from ctllm.pairs.store import PairQuery, Plan, Store, plan_query, rated
from ctllm.pairs.store.schema import ensure_schema

CID = 1


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    ensure_schema(connection, Path(":memory:"))
    yield connection
    connection.close()


def explain(db: sqlite3.Connection, statement: tuple[str, list]) -> list[str]:
    sql, params = statement
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def assert_indexed(steps: list[str]) -> None:
    """No table read whole and no sort done apart from an index. Virtual tables (the FTS index, json_each) are
    searched by their own means, and "SCAN (subquery-1)" reads the rows a subquery yields."""
    scans = [s for s in steps if s.startswith("SCAN ") and "VIRTUAL TABLE" not in s and not s.startswith("SCAN (")]
    assert not scans, steps
    assert not [s for s in steps if "TEMP B-TREE FOR ORDER BY" in s], steps


CASES = [
    # (query, sort, score name, the index the page is read from)
    (PairQuery(), "id", None, "pairs_by_id"),
    (PairQuery(language="zh"), "id", None, "pairs_by_language"),
    (PairQuery(source="hub", split="test"), "id", None, "pairs_by_id"),
    (PairQuery(label_state="unlabelled"), "id", None, "pairs_by_id"),
    (PairQuery(label_state="not_mine", annotator="ann"), "id", None, "pairs_by_id"),
    (PairQuery(label_state="disagreement"), "id", None, "pairs_by_id"),
    (PairQuery(text="?!"), "id", None, "pairs_by_id"),  # no letter or digit: a LIKE check per pair of the page
    (PairQuery(), "length_diff", None, "pairs_by_len_diff"),
    (PairQuery(language="en"), "-length_diff", None, "pairs_by_len_diff"),
    (PairQuery(text="hello wor"), "length_diff", None, "pairs_by_len_diff"),
    (PairQuery(), "score", "run-1", "scores_by_margin"),
    (PairQuery(language="en", label_state="labelled"), "score", "run-1", "scores_by_margin"),
]


@pytest.mark.parametrize(("query", "sort", "score_name", "index"), CASES)
def test_pages_and_page_jumps_read_their_index(
    db: sqlite3.Connection, query: PairQuery, sort: str, score_name: str | None, index: str
) -> None:
    plan = plan_query(CID, query, sort, score_name)
    for statement in (plan.page_sql(None, 20), plan.jump_sql(10_000)):
        steps = explain(db, statement)
        assert_indexed(steps)
        assert f"INDEX {index} " in steps[0], steps  # the outer loop walks the index in the sort's order


@pytest.mark.parametrize("query", [case[0] for case in CASES])
def test_counts_read_an_index(db: sqlite3.Connection, query: PairQuery) -> None:
    assert_indexed(explain(db, plan_query(CID, query, "id").count_sql(None)))
    assert_indexed(explain(db, plan_query(CID, query, "id").count_sql(10_000)))


@pytest.mark.parametrize(
    ("query", "sort"),
    [(PairQuery(), "id"), (PairQuery(source="hub", label_state="mine", annotator="a"), "id"),
     (PairQuery(language="zh"), "length_diff"), (PairQuery(language="en", label_state="labelled"), "-length_diff")],
)
def test_a_deep_page_jump_without_text_reads_no_table_row(db: sqlite3.Connection, query: PairQuery, sort: str) -> None:
    steps = explain(db, plan_query(CID, query, sort).jump_sql(100_000))
    assert "USING COVERING INDEX" in steps[0], steps


@pytest.mark.parametrize(
    ("sort", "score_name", "after", "constraint"),
    [
        ("id", None, (7,), "id>?"),
        ("length_diff", None, (3, 7), "len_diff>?"),
        ("-length_diff", None, (3, 7), "len_diff<?"),
        ("score", "run-1", (0.5, 7), "(margin,pair_id)>(?,?)"),
    ],
)
def test_the_keyset_cursor_is_a_bound_on_the_index(
    db: sqlite3.Connection, sort: str, score_name: str | None, after: tuple, constraint: str
) -> None:
    steps = explain(db, plan_query(CID, PairQuery(), sort, score_name).page_sql(after, 20))
    assert_indexed(steps)
    assert constraint in steps[0], steps


def test_a_word_search_in_id_order_is_driven_by_the_word_index(db: sqlite3.Connection) -> None:
    plan = plan_query(CID, PairQuery(text="hello wor", language="en"), "id")
    steps = explain(db, plan.page_sql((7,), 20))
    assert_indexed(steps)
    assert steps[0].startswith("SCAN f VIRTUAL TABLE"), steps  # matches come in rowid order: no sort
    assert "USING INTEGER PRIMARY KEY" in steps[1], steps


def test_a_cjk_search_sorted_by_length_checks_its_listed_candidates(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:  # empty; the CJK filter needs the store's SQL functions
        cid = store.create_collection("c").id
        plan = plan_query(cid, PairQuery(text="安全"), "length_diff", None,
                          lambda text: store._cjk_filter(cid, text, "token"))
        steps = explain(store.db, plan.page_sql(None, 20))
    assert_indexed(steps)
    assert "INDEX pairs_by_len_diff " in steps[0], steps
    assert any(s.startswith("SCAN json_each VIRTUAL TABLE") for s in steps), steps


def test_planning_needs_no_database_but_a_cjk_query_needs_its_filter() -> None:
    plan = plan_query(CID, PairQuery(language="zh", label_state="mine", annotator="a"), "-length_diff")
    assert isinstance(plan, Plan) and plan.descending and plan.keys == ("p.len_diff", "p.id")
    assert plan.params == [CID, "zh", CID, "a"]
    with pytest.raises(ValueError, match="cjk_filter"):
        plan_query(CID, PairQuery(text="安全"))
    with pytest.raises(UserError, match="sort must be one of"):
        plan_query(CID, PairQuery(), "newest")
    with pytest.raises(UserError, match="needs a score name"):
        plan_query(CID, PairQuery(), "score")


@pytest.mark.parametrize(("sql", "params", "index"), [
    (rated.LIST_SQL, [CID, 0, 100], "rated_by_id"),
    (rated.COUNT_SQL, [CID], "rated_by_"),
    (rated.COUNT_LABEL_SQL, [CID, 1], "rated_by_label"),
])
def test_rated_answers_are_paged_and_counted_from_an_index(db: sqlite3.Connection, sql: str, params: list,
                                                           index: str) -> None:
    steps = explain(db, (sql, params))
    assert_indexed(steps)
    assert any(index in step for step in steps), steps
