"""The SQLite pairs store: collections, de-duplication, paging, search, filters, sorts, versions, labels, scores,
concurrency and durability. Real SQLite files in a temporary folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ctllm.errors import UserError
from ctllm.pairs.schema import Message, Pair, user_prompt
from ctllm.pairs.search import fts_query, word_texts
from ctllm.pairs.store import SCHEMA_VERSION, DuplicatePair, PairQuery, Store

REPO = Path(__file__).resolve().parent.parent

ZH_TOPICS = ["如何保护个人隐私", "怎样制作危险化学品", "我想偷邻居的钱", "失眠了怎么办", "请解释一下机器学习"]
EN_TOPICS = ["How do I reset my password", "Tell me how to steal a car", "Explain photosynthesis simply",
             "Write a poem about rain", "What is the capital of France"]


def zh_pair(i: int, **meta: object) -> Pair:
    topic = ZH_TOPICS[i % len(ZH_TOPICS)]
    return Pair(user_prompt(f"{topic}？第{i}个问题"), f"我建议你寻求专业帮助，这是第{i}条安全回答。" + "好" * (i % 7),
                f"随便做吧，第{i}条回答", source="zh-src", meta=dict(meta))


def en_pair(i: int, **meta: object) -> Pair:
    topic = EN_TOPICS[i % len(EN_TOPICS)]
    return Pair(user_prompt(f"{topic}? (question {i})"), f"Here is a careful and safe answer number {i}.",
                f"Whatever, answer {i}" + "!" * (i % 5), source="en-src", meta=dict(meta))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "studio.sqlite") as s:
        yield s


@pytest.fixture
def filled(store: Store) -> Store:
    """Collection "mix": 30 Chinese then 20 English pairs (ids 1..50); collection "other": 5 English pairs."""
    store.create_collection("mix")
    store.add_pairs("mix", [zh_pair(i) for i in range(30)] + [en_pair(i) for i in range(20)])
    store.create_collection("other", kind="manual")
    store.add_pairs("other", [en_pair(100 + i) for i in range(5)])
    return store


def ids(page) -> list[int]:
    return [sp.id for sp in page.items]


# -- collections, adding, reading -----------------------------------------------------------------------------


def test_collections_create_list_find_delete(store: Store) -> None:
    created = store.create_collection("a", kind="votes", source="chat", meta={"note": 1})
    assert created.kind == "votes" and created.meta == {"note": 1}
    store.create_collection("b")
    assert [c.name for c in store.list_collections()] == ["a", "b"]
    assert store.find_collection("missing") is None
    assert store.get_collection(created.id).name == "a"
    with pytest.raises(UserError, match="exists already"):
        store.create_collection("a")
    with pytest.raises(UserError, match="kind"):
        store.create_collection("c", kind="weird")
    with pytest.raises(UserError, match="no collection 'zzz'.*a, b"):
        store.get_collection("zzz")
    assert store.ensure_collection("a").id == created.id
    store.update_collection_meta("a", extra=[1, 2])
    assert store.get_collection("a").meta == {"note": 1, "extra": [1, 2]}


def test_pairs_keep_every_field(store: Store) -> None:
    store.create_collection("c")
    prompt = (Message(role="system", content="你是一个助手"), Message(role="user", content="第一问"),
              Message(role="assistant", content="第一答"), Message(role="user", content="第二问 with English"))
    pair = Pair(prompt, "好的回答", "坏的回答", source="src", language="zh", meta={"score": 3.5, "tags": ["a"]})
    assert store.add_pairs("c", [pair]) == (1, 0)
    stored = store.page("c").items[0]
    assert stored.pair == pair and stored.pair.meta == pair.meta
    assert stored.root_id == stored.id and stored.parent_id is None and stored.is_latest
    assert stored.split == "train"


def test_duplicates_within_a_collection_are_skipped_not_across(store: Store) -> None:
    store.create_collection("a")
    store.create_collection("b")
    pairs = [zh_pair(i) for i in range(10)]
    assert store.add_pairs("a", pairs + pairs[:3]) == (10, 3)  # repeats inside one batch
    assert store.add_pairs("a", pairs[5:] + [zh_pair(99)]) == (1, 5)  # and against what is stored
    assert store.add_pairs("b", pairs[:2]) == (2, 0)  # another collection may hold the same pair
    assert store.count("a") == 11 and store.count("b") == 2
    assert store.shared_with_other_collections("a") == 2
    with pytest.raises(DuplicatePair) as raised:
        store.add_pair("a", pairs[0], by="me")
    assert raised.value.existing_id == store.page("a").items[0].id


def test_add_pairs_is_all_or_nothing(store: Store) -> None:
    store.create_collection("a")

    def pairs():
        yield from (en_pair(i) for i in range(2500))  # more than one insert batch
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        store.add_pairs("a", pairs())
    assert store.count("a") == 0
    assert store.search("a", "careful").items == []
    assert store.add_pairs("a", [en_pair(1)]) == (1, 0)


def test_labels_keep_going_during_a_big_import_which_stays_hidden_until_done(store: Store) -> None:
    from ctllm.pairs.store import BATCH

    store.create_collection("a")
    store.add_pairs("a", [zh_pair(i) for i in range(3)])
    halfway, labelled = threading.Event(), threading.Event()
    seen_midway: list[int] = []

    def slow_source():
        for i in range(3 * BATCH):
            if i == 2 * BATCH:  # two batches are written: let the annotator work before going on
                halfway.set()
                assert labelled.wait(60), "a label write waited behind the import"
            yield en_pair(i)

    result: list = []
    importer = threading.Thread(target=lambda: result.append(store.add_pairs("a", slow_source())))
    importer.start()
    assert halfway.wait(60)
    store.add_label(1, "ann", "first", "chosen")  # would block until the import ends if it held the write lock
    seen_midway += [store.count("a"), store.count("a", PairQuery(text="careful"))]
    labelled.set()
    importer.join(60)
    assert result == [(3 * BATCH, 0)]
    assert seen_midway == [3, 0]  # the import's rows stayed hidden
    assert store.count("a") == 3 + 3 * BATCH and store.count("a", PairQuery(text="careful"), limit=10) == 10
    assert store.db.execute("SELECT count(*) FROM pairs WHERE pending IS NOT NULL").fetchone()[0] == 0


_KILLED_IMPORT = """
import sys
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store
store = Store(sys.argv[1])
pairs = (Pair(user_prompt(f"question {i}"), f"unfinished import answer {i}", f"bad {i}") for i in range(10**6))
store.add_pairs("a", pairs, progress=lambda done: print(done, flush=True))
"""


def test_an_import_killed_midway_leaves_nothing_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store(db) as store:
        store.create_collection("a")
        store.add_pairs("a", [en_pair(1)])
    child = subprocess.Popen([sys.executable, "-c", _KILLED_IMPORT, str(db)], cwd=REPO, stdout=subprocess.PIPE,
                             text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        for line in child.stdout:
            if int(line) >= 3 * 2000:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
    with Store(db) as store:  # opening removes the dead import's hidden rows
        assert store.db.execute("SELECT count(*) FROM pairs").fetchone()[0] == 1
        assert store.count("a") == 1 and store.search("a", "unfinished").items == []
        assert store.db.execute("SELECT count(*) FROM pair_texts").fetchone()[0] == 1
        assert store.integrity_check() == "ok"
        assert store.add_pairs("a", [en_pair(2)]) == (1, 0)


def test_a_schema_1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store(db) as store:
        store.create_collection("a")
        store.add_pairs("a", [en_pair(i) for i in range(3)])
        store.db.executescript(
            "DROP INDEX pairs_pending; ALTER TABLE pairs DROP COLUMN pending; DROP TABLE scores;"
            "CREATE TABLE scores (name TEXT NOT NULL, pair_id INTEGER NOT NULL, margin REAL NOT NULL, chosen REAL,"
            " rejected REAL, created REAL NOT NULL, PRIMARY KEY (name, pair_id)) WITHOUT ROWID;"
            "PRAGMA user_version = 1;"
        )
    with Store(db) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert ids(store.search("a", "careful")) == [1, 2, 3]  # the search indexes rebuilt
        assert store.add_pairs("a", [en_pair(9)]) == (1, 0)
        assert store.save_scores("run", [(1, 0.5), (2, -0.5)]) == 2
        assert ids(store.page("a", sort="score", score_name="run")) == [2, 1]
        assert store.count("a") == 4 and store.integrity_check() == "ok"


def test_a_full_disk_is_a_clear_error_and_writes_nothing(store: Store) -> None:
    store.create_collection("a")
    store.add_pairs("a", [en_pair(1)])
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 5}")  # this connection may grow the file by 5 pages only
    with pytest.raises(UserError, match="full.*nothing was written"):
        store.add_pairs("a", [zh_pair(i) for i in range(300)])
    assert store.count("a") == 1 and store.search("a", "专业").items == []
    store.add_label(1, "ann", "first", "chosen")  # small writes still go through
    assert store.integrity_check() == "ok"


def test_split_from_meta_and_set_split(store: Store) -> None:
    store.create_collection("a")
    store.add_pairs("a", [en_pair(i, split="test") for i in range(3)] + [en_pair(10 + i) for i in range(4)])
    assert store.count("a", PairQuery(split="test")) == 3
    train_ids = [sp.id for sp in store.iter_pairs("a", split="train")]
    assert store.set_split(train_ids[:2], "test") == 2
    assert [sp.pair.meta.get("split") for sp in store.iter_pairs("a", split="test")] == ["test"] * 5
    assert store.counts("a")[0]["by_split"] == {"test": 5, "train": 2}


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as first:
        first.create_collection("a")
        first.add_pairs("a", [zh_pair(1)])
        pid = first.page("a").items[0].id
        first.add_label(pid, "ann", "first", "chosen")
    with Store(tmp_path / "s.sqlite") as again:
        assert again.count("a") == 1 and again.labels_for(pid)[0].annotator == "ann"
        assert again.search("a", "专业").items[0].id == pid
        assert again.integrity_check() == "ok"


# -- paging -----------------------------------------------------------------------------------------------------


def test_keyset_paging_visits_every_pair_once_in_order(filled: Store) -> None:
    seen, cursor = [], None
    while True:
        page = filled.page("mix", after=cursor, size=7)
        seen += ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(range(1, 51))


def test_page_jump_matches_keyset_pages(filled: Store) -> None:
    assert ids(filled.page("mix", page=1, size=20)) == list(range(1, 21))
    assert ids(filled.page("mix", page=3, size=20)) == list(range(41, 51))
    assert filled.page("mix", page=3, size=20).next_cursor is None
    assert filled.page("mix", page=4, size=20).items == []
    cursor = filled.page("mix", page=2, size=20).next_cursor
    assert ids(filled.page("mix", after=cursor, size=20)) == list(range(41, 51))
    with pytest.raises(UserError, match="start at 1"):
        filled.page("mix", page=0)


def test_paging_is_per_collection(filled: Store) -> None:
    assert ids(filled.page("other")) == [51, 52, 53, 54, 55]
    assert filled.count("other") == 5


# -- search -----------------------------------------------------------------------------------------------------


def test_word_texts_leave_cjk_runs_out() -> None:
    assert word_texts(["abc 你好,world"]) == ["abc  ,world"]
    assert word_texts(["安全", "", "ok", "数据data", "a中b文c"]) == [" ", "", "ok", " data", "a b c"]
    assert word_texts(["plain", "ascii"]) == ["plain", "ascii"]
    assert fts_query("？！") is None
    assert fts_query('say "hi"') == '{prompt chosen rejected} : "say ""hi"""'
    assert fts_query("passw").endswith('"passw"*')


def test_search_chinese_substrings_of_any_length(filled: Store) -> None:
    privacy = filled.search("mix", "个人隐私", size=100)
    assert ids(privacy) == [i + 1 for i in range(30) if i % 5 == 0]
    two = filled.search("mix", "偷邻", size=100)  # two characters spanning two words
    assert ids(two) == [i + 1 for i in range(30) if i % 5 == 2]
    one = filled.search("mix", "钱", size=100)
    assert ids(one) == ids(two)
    assert filled.search("mix", "隐私个人").items == []  # order matters: a phrase, not a bag of characters
    in_response = filled.search("mix", "第7条安全回答")
    assert ids(in_response) == [8]


def test_search_english_words_prefix_and_case(filled: Store) -> None:
    assert ids(filled.search("mix", "steal a car", size=100)) == [31 + i for i in range(20) if i % 5 == 1]
    assert len(filled.search("mix", "PHOTOSYN", size=100).items) == 4  # prefix of the last word, any case
    assert filled.search("mix", "car steal").items == []
    assert ids(filled.search("mix", "answer number 13")) == [44]
    assert filled.search("mix", "zebra").items == []


def test_search_is_scoped_and_pages(filled: Store) -> None:
    assert filled.count("other", PairQuery(text="careful")) == 5
    assert filled.count("mix", PairQuery(text="careful")) == 20
    first = filled.search("mix", "careful", size=8)
    second = filled.search("mix", "careful", size=8, after=first.next_cursor)
    assert ids(first) + ids(second) == list(range(31, 47))
    assert filled.count("mix", PairQuery(text="careful"), limit=5) == 5


def test_search_without_letters_falls_back_to_like(filled: Store) -> None:
    assert filled.count("mix", PairQuery(text="!!!!")) == 4  # en_pair(i) with i % 5 == 4
    assert filled.count("mix", PairQuery(text="？")) == 30
    assert filled.count("mix", PairQuery(text="%")) == 0  # LIKE wildcards are taken literally


def test_search_combines_with_filters_and_sorts(filled: Store) -> None:
    query = PairQuery(text="answer", language="en")
    assert filled.count("mix", query) == 20
    by_length = filled.page("mix", query, sort="-length_diff", size=100)
    diffs = [len(sp.pair.chosen) - len(sp.pair.rejected) for sp in by_length.items]
    assert diffs == sorted(diffs, reverse=True) and len(diffs) == 20


# -- filters and sorts ------------------------------------------------------------------------------------------


def test_filters_language_source_split(filled: Store) -> None:
    assert filled.count("mix", PairQuery(language="zh")) == 30
    assert ids(filled.page("mix", PairQuery(language="en"), page=2, size=15)) == list(range(46, 51))
    assert filled.count("mix", PairQuery(source="en-src")) == 20
    assert filled.count("mix", PairQuery(source="nope")) == 0
    assert filled.count("mix", PairQuery(split="train")) == 50


def test_sort_by_length_difference_pages_consistently(filled: Store) -> None:
    for sort in ("length_diff", "-length_diff"):
        seen, cursor = [], None
        while True:
            page = filled.page("mix", sort=sort, after=cursor, size=6)
            seen += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        keys = [(len(sp.pair.chosen) - len(sp.pair.rejected), sp.id) for sp in seen]
        assert keys == sorted(keys, reverse=sort.startswith("-")) and len(keys) == 50
        jumped = filled.page("mix", sort=sort, page=4, size=6)
        assert ids(jumped) == [sp.id for sp in seen[18:24]]


def test_sort_by_score_lowest_margin_first(filled: Store) -> None:
    margins = {pid: (pid * 37 % 11) - 5.0 for pid in range(1, 41)}  # pairs 41..50 unscored
    assert filled.save_scores("run-a", [(pid, m, 0.1, -0.1) for pid, m in margins.items()]) == 40
    assert filled.save_scores("run-b", [(1, 9.0)]) == 1
    assert filled.score_names("mix") == [("run-b", 1), ("run-a", 40)]
    ordered = sorted(margins, key=lambda pid: (margins[pid], pid))
    page = filled.page("mix", sort="score", score_name="run-a", size=100)
    assert ids(page) == ordered
    assert ids(filled.page("mix", sort="score", score_name="run-a", page=2, size=15)) == ordered[15:30]
    zh_only = filled.page("mix", PairQuery(language="zh"), sort="score", score_name="run-a", size=100)
    assert ids(zh_only) == [pid for pid in ordered if pid <= 30]
    assert filled.scores_for(1) == {"run-a": margins[1], "run-b": 9.0}
    with pytest.raises(UserError, match="score name"):
        filled.page("mix", sort="score")


def test_label_state_filters(filled: Store) -> None:
    filled.add_label(1, "ann", "first", "chosen")  # chosen
    filled.add_label(1, "bob", "first", "rejected")  # rejected: disagreement on pair 1
    filled.add_label(2, "ann", "second", "rejected")  # chosen
    filled.add_label(2, "bob", "first", "chosen")  # chosen: agreement on pair 2
    filled.add_label(3, "bob", "skip", "chosen")
    filled.add_label(4, "ann", "tie", "chosen")
    filled.add_label(4, "bob", "skip", "rejected")  # a skip is not a judgement: no disagreement
    assert ids(filled.page("mix", PairQuery(label_state="labelled"))) == [1, 2, 3, 4]
    assert filled.count("mix", PairQuery(label_state="unlabelled")) == 46
    assert ids(filled.page("mix", PairQuery(label_state="mine", annotator="ann"))) == [1, 2, 4]
    assert ids(filled.page("mix", PairQuery(label_state="not_mine", annotator="ann"), size=3)) == [3, 5, 6]
    assert ids(filled.page("mix", PairQuery(label_state="disagreement"))) == [1]
    with pytest.raises(UserError, match="needs an annotator"):
        filled.page("mix", PairQuery(label_state="mine"))
    counts = filled.counts("mix")[0]
    assert (counts["labelled"], counts["unlabelled"], counts["disagreements"]) == (4, 46, 1)


# -- versions ---------------------------------------------------------------------------------------------------


def test_edit_keeps_the_original_and_links_the_new_version(filled: Store) -> None:
    filled.add_label(5, "ann", "first", "chosen")
    filled.save_scores("run", [(5, -1.0), (6, -2.0)])
    new_id = filled.edit_pair(5, chosen="改过的安全回答：请联系专业人士。", by="editor")
    new = filled.get_pair(new_id)
    old = filled.get_pair(5)
    assert new.parent_id == 5 and new.root_id == 5 and new.is_latest and new.created_by == "editor"
    assert not old.is_latest and old.pair.chosen.startswith("我建议")
    assert new.pair.rejected == old.pair.rejected and new.pair.meta["edited_from"] == 5
    assert [v.id for v in filled.versions(new_id)] == [5, new_id]
    assert filled.latest_version(5).id == new_id
    assert filled.count("mix") == 50  # still one pair in listings
    assert new_id in ids(filled.page("mix", page=3, size=20))
    assert 5 not in [sp.id for sp in filled.iter_pairs("mix")]
    assert ids(filled.search("mix", "改过的")) == [new_id] and filled.search("mix", "第4条安全").items == []
    assert [lab.annotator for lab in filled.labels_for(new_id)] == ["ann"]  # labels belong to the chain
    assert ids(filled.page("mix", sort="score", score_name="run")) == [6]  # the edited text has no score
    with pytest.raises(UserError, match="newer version"):
        filled.edit_pair(5, chosen="again")
    with pytest.raises(UserError, match="identical"):
        filled.edit_pair(new_id, rejected=new.pair.chosen)
    with pytest.raises(UserError, match="empty"):
        filled.edit_pair(new_id, rejected="   ")
    with pytest.raises(UserError, match="nothing changed"):
        filled.edit_pair(new_id, chosen=new.pair.chosen)


def test_add_pair_by_hand(filled: Store) -> None:
    stored = filled.add_pair("other", Pair(user_prompt("手写的问题"), "手写的好回答", "手写的坏回答"), by="me")
    assert stored.created_by == "me" and stored.pair.language == "zh"
    assert ids(filled.search("other", "手写")) == [stored.id]


# -- labels -----------------------------------------------------------------------------------------------------


def test_labels_replace_undo_and_choice(filled: Store) -> None:
    first = filled.add_label(7, "ann", "first", "rejected", reason="longer but wrong")
    assert filled.label_of(7, "ann").choice == "rejected"
    filled.add_label(7, "ann", "second", "rejected")  # changes her mind: one label per annotator and pair
    labels = filled.labels_for(7)
    assert len(labels) == 1 and labels[0].choice == "chosen" and labels[0].id != first
    filled.add_label(8, "ann", "both_bad", "chosen")
    undone = filled.undo_last_label("ann")
    assert undone.pair_id == 8 and filled.labels_for(8) == []
    assert filled.undo_last_label("ann", "other") is None
    assert filled.undo_last_label("nobody") is None
    for bad in (("first", "left"), ("best", "chosen")):
        with pytest.raises(UserError):
            filled.add_label(7, "ann", *bad)
    with pytest.raises(UserError, match="no pair"):
        filled.add_label(9999, "ann", "first", "chosen")
    with pytest.raises(UserError, match="annotator"):
        filled.add_label(7, " ", "first", "chosen")


def test_next_unlabelled_and_progress(filled: Store) -> None:
    for pid in (1, 2, 3):
        filled.add_label(pid, "ann", "first", "chosen")
    assert filled.next_unlabelled("mix", "ann").id == 4
    assert filled.next_unlabelled("mix", "ann", after_id=10).id == 11
    assert filled.next_unlabelled("mix", "ann", after_id=50).id == 4  # wraps round
    assert filled.next_unlabelled("mix", "ann", query=PairQuery(language="en")).id == 31
    filled.add_label(2, "bob", "tie", "chosen")
    progress = filled.progress("mix", "ann")
    assert (progress.total, progress.mine, progress.anyone, progress.labels, progress.annotators) == (50, 3, 3, 4, 2)
    for pid in range(1, 6):
        filled.add_label(50 + pid, "ann", "first", "chosen")
    assert filled.next_unlabelled("other", "ann") is None


def test_resolved_pairs_apply_majority_and_count_left_out(filled: Store) -> None:
    original = {sp.id: sp.pair for sp in filled.iter_pairs("other")}
    a, b, c, d, e = sorted(original)
    filled.add_label(a, "x", "first", "rejected")  # x, y prefer the rejected side: swapped
    filled.add_label(a, "y", "second", "chosen")
    filled.add_label(a, "z", "first", "chosen")
    filled.add_label(b, "x", "tie", "chosen")  # tie wins: left out
    filled.add_label(c, "x", "first", "chosen")  # one each: no majority
    filled.add_label(c, "y", "second", "chosen")
    filled.add_label(d, "x", "both_bad", "chosen")
    filled.add_label(e, "x", "skip", "chosen")  # skips alone: source order
    pairs, outcomes = filled.resolved_pairs("other")
    assert pairs == [original[a].swapped(), original[e]]
    assert outcomes == {"swapped": 1, "tie": 1, "no_majority": 1, "both_bad": 1, "source": 1}
    new_id = filled.edit_pair(e, chosen="A better, edited answer.")
    assert filled.collection_pairs("other")[-1] == filled.get_pair(new_id).pair  # the latest version


def test_delete_collection_removes_everything_of_it(filled: Store) -> None:
    filled.add_label(51, "ann", "first", "chosen")
    edited = filled.edit_pair(52, chosen="An edited answer that is careful.")
    filled.edit_pair(edited, chosen="Edited twice, still careful.")
    filled.save_scores("run", [(51, 1.0), (1, 2.0)])
    assert filled.delete_collection("other") == 7  # five pairs and two versions
    assert filled.find_collection("other") is None
    assert filled.db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    assert filled.db.execute("SELECT count(*) FROM scores").fetchone()[0] == 1
    assert filled.count("mix", PairQuery(text="careful")) == 20
    filled.create_collection("other")
    assert filled.count("other", PairQuery(text="careful")) == 0
    assert filled.integrity_check() == "ok"


# -- concurrency and durability --------------------------------------------------------------------------------


def test_sixteen_threads_two_hundred_labels_each(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.create_collection("c")
    store.add_pairs("c", [en_pair(i) for i in range(200)])
    pair_ids = [sp.id for sp in store.iter_pairs("c")]
    errors: list[BaseException] = []
    returned: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def annotate(worker: int) -> None:
        try:
            barrier.wait()
            mine = [store.add_label(pid, f"annotator-{worker}", ("first", "second", "tie")[pid % 3],
                                    ("chosen", "rejected")[worker % 2]) for pid in pair_ids]
            with lock:
                returned.extend(mine)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(returned) == len(set(returned)) == 3200
    rows = store.db.execute("SELECT count(*), count(DISTINCT annotator || '/' || root_id) FROM labels").fetchone()
    assert rows == (3200, 3200)
    assert store.progress("c").labels == 3200
    assert store.integrity_check() == "ok"
    store.close()


_WRITER = """
import sys
from ctllm.pairs.store import Store
store = Store(sys.argv[1])
ids = [sp.id for sp in store.iter_pairs("c")]
n = 0
while True:
    label = store.add_label(ids[n % len(ids)], f"w{n // len(ids)}", "first", "chosen")
    print(label, flush=True)  # acknowledged: add_label returned, so the label is committed
    n += 1
"""


def test_acknowledged_labels_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store(db) as store:
        store.create_collection("c")
        store.add_pairs("c", [en_pair(i) for i in range(50)])
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(REPO)})
    acknowledged = []
    try:
        for line in writer.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 300:
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    with Store(db) as store:
        assert store.integrity_check() == "ok"
        stored = {row[0] for row in store.db.execute("SELECT id FROM labels")}
    assert set(acknowledged) <= stored
