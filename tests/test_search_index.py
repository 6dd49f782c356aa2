"""The CJK substring index and the store's search over it: results equal a brute-force substring scan (random
texts, queries of one character up to long ones), through bulk segments, pairs added one at a time, folds, edits
and deletes; and a store of schema 2 is migrated. Real SQLite files."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctllm.pairs import cjk_index
from ctllm.pairs import store as store_module
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.search import has_cjk, text_contains
from ctllm.pairs.store import PairQuery, Store, ingest

# A small alphabet so that random queries hit often: common and rare characters, kana, hangul, letters in both
# cases, digits, punctuation, spaces and characters JSON escapes.
CJK = "的一是了我不人在有中国们个好安全隐私钱あア한"
OTHER = "abcAB1 ，。？!\"\\\n"
ALPHABET = CJK * 3 + OTHER


def text_strategy(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(alphabet=ALPHABET, min_size=min_size, max_size=max_size)


pair_strategy = st.builds(
    lambda prompt, chosen, rejected: (prompt, chosen, rejected),
    text_strategy(), text_strategy(), text_strategy(),
).filter(lambda t: t[0].strip() and t[1].strip() and t[2].strip() and t[1].strip() != t[2].strip())


def make_pair(texts: tuple[str, str, str]) -> Pair:
    return Pair(user_prompt(texts[0]), texts[1], texts[2], source="t", language="zh")


def holds(pair: Pair, needle: str) -> bool:
    fold = needle.lower()
    return any(fold in text.lower() for text in (pair.prompt_text, pair.chosen, pair.rejected))


def all_hits(store: Store, collection: str, needle: str, size: int = 7) -> list[int]:
    """Every page of a search, walked with cursors."""
    found, cursor = [], None
    while True:
        page = store.search(collection, needle, after=cursor, size=size)
        found += [sp.id for sp in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def expected(store: Store, collection: str, needle: str) -> list[int]:
    return [sp.id for sp in store.iter_pairs(collection) if holds(sp.pair, needle)]


def queries_for(pairs: list[Pair], rng: random.Random, n: int) -> list[str]:
    """Substrings of the stored texts (1 character up to 12) holding a CJK character, and a few random strings."""
    out: list[str] = []
    while len(out) < n:
        if rng.random() < 0.2:
            query = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))
        else:
            pair = rng.choice(pairs)
            text = rng.choice((pair.prompt_text, pair.chosen, pair.rejected))
            length = rng.choice((1, 1, 2, 2, 3, 5, 12))
            start = rng.randrange(max(1, len(text) - length + 1))
            query = text[start : start + length]
        if query.strip() and has_cjk(query):
            out.append(query.strip())
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bulk=st.lists(pair_strategy, min_size=1, max_size=40),
    one_by_one=st.lists(pair_strategy, max_size=8),
    seed=st.integers(0, 10_000),
)
def test_search_equals_a_brute_force_scan(bulk: list, one_by_one: list, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        # Segments of 8 ids and a tiny bulk threshold: several segments, a fold, and pairs still waiting.
        patch.setattr(cjk_index, "SEGMENT_BITS", 3)
        patch.setattr(ingest, "BULK_INDEX_MIN", 1)
        patch.setattr(ingest, "FOLD_AT", 5)
        with Store(Path(folder) / "s.sqlite") as store:
            store.create_collection("c")
            store.create_collection("other")
            store.add_pairs("other", [make_pair(t) for t in bulk[:3]])  # the same texts elsewhere: left out
            store.add_pairs("c", [make_pair(t) for t in bulk])
            for texts in one_by_one:
                try:
                    store.add_pair("c", make_pair(texts))
                except store_module.DuplicatePair:
                    pass
            latest = [sp.pair for sp in store.iter_pairs("c")]
            if latest:  # an edit: the new text is found, the old version no longer shown
                first = store.page("c", size=1).items[0]
                store.edit_pair(first.id, chosen=first.pair.chosen + "新的编辑")
            pairs = [sp.pair for sp in store.iter_pairs("c")]
            for needle in queries_for(pairs, rng, 12) + ["新的编辑", "的", "编辑x"]:
                want = expected(store, "c", needle)
                assert all_hits(store, "c", needle) == want, needle
                assert store.count("c", PairQuery(text=needle)) == len(want), needle
                assert store.count("c", PairQuery(text=needle), limit=2) == min(2, len(want))
                by_length = store.page("c", PairQuery(text=needle), sort="length_diff", size=1000)
                assert sorted(sp.id for sp in by_length.items) == want, needle
                if len(want) > 3:
                    assert [sp.id for sp in store.page("c", PairQuery(text=needle), page=2, size=3).items] == \
                        want[3:6]


def test_lookup_is_exact_for_one_and_two_characters(tmp_path: Path) -> None:
    rng = random.Random(5)
    texts = {pid: ["".join(rng.choice(CJK + "ab，") for _ in range(rng.randint(0, 30))) for _ in range(3)]
             for pid in range(65_000, 66_000, 3)}  # across a segment boundary
    db = sqlite3.connect(tmp_path / "i.sqlite", isolation_level=None)
    db.executescript(cjk_index.SCHEMA)
    assert cjk_index.index_pairs(db, texts.items(), collection_id=1) == 2
    for needle in ["的", "你", "中国", "国中", "们个", "あア", "한", "的的", "安全隐", "a的", "的，"]:
        found = cjk_index.lookup(db, needle, 1)
        truth = sorted(pid for pid, t in texts.items() if any(needle in x for x in t))
        assert found.exact == (len(needle) <= 2 and all(map(cjk_index.is_cjk, needle)))
        if found.exact:
            assert found.ids.tolist() == truth, needle
        else:
            assert set(truth) <= set(found.ids.tolist()), needle
    assert cjk_index.lookup(db, "的", 2).ids.tolist() == []  # another collection's segments are skipped


def test_skip_terms_narrow_queries_split_by_punctuation(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "i.sqlite", isolation_level=None)
    db.executescript(cjk_index.SCHEMA)
    texts = {1: ["那个？一", "", ""], 2: ["那个。一", "", ""], 3: ["那个？二一", "", ""], 4: ["一那个", "a", "b"]}
    cjk_index.index_pairs(db, texts.items(), collection_id=1)
    assert cjk_index.lookup(db, "那个？一", 1).ids.tolist() == [1, 2]  # the middle character is not kept
    assert cjk_index.lookup(db, "那个", 1).ids.tolist() == [1, 2, 3, 4]
    assert cjk_index.lookup(db, "一", 1).ids.tolist() == [1, 2, 3, 4]  # skip terms are not in a character's range


def test_text_contains_reads_the_prompt_messages_not_their_json() -> None:
    prompt = '[{"role": "user", "content": "第一行\\n中文 \\"引号\\""}]'
    assert text_contains(prompt, "x", "y", "\n中文")
    assert not text_contains(prompt, "x", "y", "n中文")  # the JSON's escape is no letter n
    assert text_contains(prompt, "x", "y", '"引号"')
    assert not text_contains(prompt, "x", "y", "user")  # keys are not text
    assert text_contains(prompt, "Hello 世界", "y", "hello 世")


def test_index_follows_adds_folds_edits_and_deletes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "BULK_INDEX_MIN", 10)
    monkeypatch.setattr(ingest, "FOLD_AT", 4)
    with Store(tmp_path / "s.sqlite") as store:
        store.create_collection("c")
        store.add_pairs("c", [make_pair((f"问题{i}", f"回答{i}号", f"拒绝{i}")) for i in range(12)])  # bulk
        segments = store.db.execute("SELECT count(*) FROM search_segments").fetchone()[0]
        assert segments == 1 and ids_for(store, "回答3号") == [4]  # ids start at 1
        store.add_pairs("c", [make_pair(("小的", "一对", "数据"))])  # small: waits in search_unindexed
        assert store.db.execute("SELECT count(*) FROM search_unindexed").fetchone()[0] == 1
        assert ids_for(store, "一对") == [13]
        new = store.edit_pair(4, chosen="改过的回答")
        assert ids_for(store, "回答3号") == [] and ids_for(store, "改过的") == [new]
        for i in range(2):
            store.add_pair("c", make_pair((f"手写{i}", f"好的{i}", f"坏的{i}")))
        assert store.db.execute("SELECT count(*) FROM search_unindexed").fetchone()[0] == 0  # folded
        assert store.db.execute("SELECT count(*) FROM search_segments").fetchone()[0] == segments + 1
        assert ids_for(store, "一对") == [13] and ids_for(store, "改过的") == [new] and len(ids_for(store, "好的")) == 2
        store.create_collection("d")
        store.add_pairs("d", [make_pair((f"问题{i}", f"回答{i}号", f"拒绝{i}")) for i in range(12)])
        store.delete_collection("c")
        assert store.db.execute("SELECT count(*) FROM search_segments WHERE collection_id IS NOT NULL"
                                " AND collection_id NOT IN (SELECT id FROM collections)").fetchone()[0] == 0
        assert len(ids_for(store, "回答3号", "d")) == 1 and store.integrity_check() == "ok"


def ids_for(store: Store, needle: str, collection: str = "c") -> list[int]:
    return [sp.id for sp in store.search(collection, needle, size=100).items]


def test_an_aborted_import_leaves_no_index_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "BULK_INDEX_MIN", 10)
    monkeypatch.setattr(cjk_index, "SEGMENT_BITS", 4)  # a segment is written while the import still runs

    def pairs():
        yield from (make_pair((f"问题{i}", f"回答{i}号", f"拒绝{i}")) for i in range(store_module.BATCH + 50))
        raise RuntimeError("source broke")

    with Store(tmp_path / "s.sqlite") as store:
        store.create_collection("c")
        with pytest.raises(RuntimeError):
            store.add_pairs("c", pairs())
        assert store.db.execute("SELECT count(*) FROM search_segments").fetchone()[0] == 0
        assert store.db.execute("SELECT count(*) FROM search_blocks").fetchone()[0] == 0
        assert store.search("c", "回答").items == []


def test_a_schema_2_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.create_collection("c")
        store.add_pairs("c", [make_pair((f"问题{i} question", f"回答{i}号 answer", f"拒绝{i}")) for i in range(5)])
    db = sqlite3.connect(path)  # what schema 2 had: every CJK character a token of the FTS index, no CJK index
    db.executescript(
        "DROP TABLE pairs_fts; DROP TABLE search_blocks; DROP TABLE search_segments; DROP TABLE search_unindexed;"
        "CREATE VIRTUAL TABLE pairs_fts USING fts5(coll, prompt, chosen, rejected, content='',"
        " tokenize='unicode61 remove_diacritics 2');"
        "INSERT INTO pairs_fts(rowid, coll, prompt, chosen, rejected) VALUES (1, 'c1', '问 题', '回 答', '拒 绝');"
        "PRAGMA user_version = 2;"
    )
    db.close()
    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
        assert ids_for(store, "回答3号") == [4] and len(ids_for(store, "question")) == 5
        assert len(ids_for(store, "答")) == 5 and store.integrity_check() == "ok"


def test_word_index_rows_only_for_pairs_with_words_and_deletes_match(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.create_collection("c")
        mixed = [make_pair((f"问题{i}", f"回答 answer{i}", "拒绝")) for i in range(3)]
        chinese = [make_pair((f"问题{n}", f"回答{n}，好。", "拒绝！")) for n in "一二三四"]  # no digit: no word
        store.add_pairs("c", mixed + chinese)

        def fts_rows() -> int:
            return store.db.execute("SELECT count(*) FROM pairs_fts_docsize").fetchone()[0]

        assert fts_rows() == 3 and len(ids_for(store, "answer1")) == 1 and len(ids_for(store, "回答")) == 7
        store.delete_collection("c")
        assert fts_rows() == 0
        store.db.execute("INSERT INTO pairs_fts(pairs_fts) VALUES ('integrity-check')")
