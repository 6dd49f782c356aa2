"""Pairs tab handlers, called directly with a real store in a temporary data dir."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest

from ctllm.pairs.schema import Pair, user_prompt
from ctllm.settings import Settings
from ctllm.ui.context import SAMPLE_PAIRS, SAMPLES_COLLECTION, AppContext
from ctllm.ui.pairs_tab import (
    PAGE_SIZE,
    PairFilters,
    PairsHandlers,
    new_view,
    open_collection_event,
    shown_first,
    standalone,
)

SHOWN = ("view", "info", "context", "prompt", "first", "second", "table", "page", "page_info", "progress", "message")
FILTERS = ("collection", "language", "source", "label_state", "sort", "score_name", "search")
NAMED = (*SHOWN, *FILTERS, "signature", "reason")


def shown(h: PairsHandlers, result: dict) -> dict:
    """A handler's {component: value} answer keyed by the components' names in ``PairsUI``."""
    return {name: result[getattr(h.ui, name)] for name in NAMED if getattr(h.ui, name) in result}


def make_pairs(n: int) -> list[Pair]:
    pairs = []
    for i in range(n):
        if i % 3 == 0:
            prompt = user_prompt(f"第{i}个问题：怎样安全地使用菜刀？")
            chosen, rejected = f"回答{i}：握紧刀柄，刀刃朝外。", f"随便用{i}。"
        else:
            prompt = user_prompt(f"Question {i}: how do I boil an egg?", system="Be brief." if i % 5 == 0 else "")
            chosen, rejected = f"Answer {i}: simmer it for nine minutes.", f"Answer {i}: no idea."
        pairs.append(Pair(prompt=prompt, chosen=chosen, rejected=rejected, source="unit"))
    return pairs


@pytest.fixture
def ctx(settings: Settings) -> AppContext:
    context = AppContext(settings)
    context.store.create_collection("demo")
    context.store.add_pairs("demo", make_pairs(45))
    yield context
    context.close()


@pytest.fixture(name="h")
def handlers(ctx: AppContext) -> PairsHandlers:
    return standalone(ctx)


def browse(
    h: PairsHandlers,
    collection: str = "demo",
    label_state: str = "all",
    text: str = "",
    page: int = 1,
    sort: str = "id",
    request: gr.Request | None = None,
) -> dict:
    filters = PairFilters(collection, label_state=label_state, sort=sort, text=text)
    result = h.browse(filters, page, new_view(), request)
    return shown(h, result)


def test_side_order_is_stable_per_annotator_and_pair_and_mixed() -> None:
    orders = [shown_first("alice", root) for root in range(200)]
    assert orders == [shown_first("alice", root) for root in range(200)]  # a reload shows the same order
    assert 60 < orders.count("chosen") < 140  # both orders occur
    assert orders != [shown_first("bob", root) for root in range(200)]  # and they differ between annotators


def test_page_shows_first_pair_with_sides_in_annotator_order(ctx: AppContext, h: PairsHandlers) -> None:
    out = browse(h)
    view = out["view"]
    assert len(view.page_ids) == PAGE_SIZE and view.more
    stored = ctx.store.get_pair(view.pair_id)
    expected_first = stored.pair.chosen if view.shown_first == "chosen" else stored.pair.rejected
    assert out["first"] == expected_first
    assert view.shown_first == shown_first("local", stored.root_id)
    assert len(out["table"]["data"]) == PAGE_SIZE and out["table"]["data"][0][0] == "▶"
    assert "Mine: 0 / 45" in out["progress"]


def test_paging_jumps_and_moves_across_page_boundaries(ctx: AppContext, h: PairsHandlers) -> None:
    last = browse(h, page=3)
    assert len(last["view"].page_ids) == 45 - 2 * PAGE_SIZE and not last["view"].more
    back = shown(h, h.move(-1, last["view"]))  # ← from the first pair of page 3 goes to the end of page 2
    assert back["view"].page == 2 and back["view"].pair_id == back["view"].page_ids[-1]
    forward = shown(h, h.move(1, back["view"]))
    assert forward["view"].page == 3 and forward["view"].pair_id == last["view"].page_ids[0]
    assert "last page" in shown(h, h.turn_page(1, last["view"]))["message"]
    past = browse(h, page=999)  # past the end: the last page, and how many pages there are
    assert past["view"].page == 3 and past["view"].page_ids == last["view"].page_ids
    assert "only 3 page(s)" in past["message"] and past["page"] == 3
    assert last["page_info"] == "Page 3 of 3 · 45 pairs match"


def test_vote_records_label_with_shown_first_and_opens_next_unlabelled(ctx: AppContext, h: PairsHandlers) -> None:
    out = browse(h, label_state="not_mine")
    first_id = out["view"].pair_id
    result = h.vote("first", out["view"], " clearer ", None)
    after = shown(h, result)
    label = ctx.store.label_of(first_id, "local")
    root = ctx.store.get_pair(first_id).root_id
    assert label.verdict == "first" and label.shown_first == shown_first("local", root) and label.reason == "clearer"
    assert label.choice == label.shown_first  # "first better" prefers the side that was shown first
    assert after["view"].pair_id != first_id and first_id not in after["view"].page_ids
    assert "Mine: 1 / 45" in after["progress"]
    assert result[h.ui.reason] == ""  # the reason box is cleared
    # Three more in a row, as with the keyboard: each opens a pair not yet labelled.
    view = after["view"]
    for verdict in ("second", "tie", "both_bad"):
        view = shown(h, h.vote(verdict, view, "", None))["view"]
    assert ctx.store.progress("demo", "local").mine == 4


def test_vote_in_unfiltered_list_skips_pairs_already_labelled(ctx: AppContext, h: PairsHandlers) -> None:
    out = browse(h, label_state="all")
    ids = out["view"].page_ids
    ctx.store.add_label(ids[1], "local", "tie", "chosen")
    after = shown(h, h.vote("first", out["view"], "", None))
    assert after["view"].pair_id == ids[2]


def test_undo_removes_my_last_label_and_reopens_the_pair(ctx: AppContext, h: PairsHandlers) -> None:
    out = browse(h, label_state="not_mine")
    pair_id = out["view"].pair_id
    voted = shown(h, h.vote("second", out["view"], "too long", None))
    undone = h.undo(voted["view"])
    assert ctx.store.label_of(pair_id, "local") is None
    assert shown(h, undone)["view"].pair_id == pair_id
    assert undone[h.ui.reason] == "too long"  # the reason comes back with it
    assert "Nothing to undo" in shown(h, h.undo(shown(h, undone)["view"]))["message"]


def test_search_finds_chinese_and_english_substrings(ctx: AppContext, h: PairsHandlers) -> None:
    zh = browse(h, text="菜刀")
    assert zh["view"].page_ids and all("菜刀" in ctx.store.get_pair(i).pair.last_user for i in zh["view"].page_ids)
    en = browse(h, text="boil")
    assert en["view"].page_ids and all("boil" in ctx.store.get_pair(i).pair.last_user for i in en["view"].page_ids)
    assert "No pairs match" in browse(h, text="nonexistentword")["page_info"]


def test_system_prompt_goes_to_the_collapsible_context(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    with_system = next(i for i in view.page_ids if ctx.store.get_pair(i).pair.system)
    out = shown(h, h.show(replace(view, pair_id=with_system), h_user()))
    assert "Be brief." in out["context"] and "Be brief." not in out["prompt"]


def h_user():
    from ctllm.ui.auth import LOCAL_USER, Role, User

    return User(LOCAL_USER, Role.ADMIN)


def test_edit_saves_a_new_version_and_keeps_the_original(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    original = ctx.store.get_pair(view.pair_id)
    assert h.load_edit(view, "first") == (
        original.pair.chosen if view.shown_first == "chosen" else original.pair.rejected
    )
    out = shown(h, h.save_edit(view, "first", "An edited, better first answer."))
    new = ctx.store.get_pair(out["view"].pair_id)
    assert new.parent_id == original.id and out["first"] == "An edited, better first answer."
    assert ctx.store.get_pair(original.id).pair == original.pair and not ctx.store.get_pair(original.id).is_latest
    side = "chosen" if view.shown_first == "chosen" else "rejected"
    assert getattr(new.pair, side) == "An edited, better first answer."


def test_add_pair_by_hand_creates_the_collection(ctx: AppContext, h: PairsHandlers) -> None:
    added = h.add_pair("", "", "Is the sky blue?", "Yes, on a clear day.", "No.")
    assert "Added pair" in added[h.ui.add_message] and "hand-written" in added[h.ui.collection]["choices"]
    pairs = list(ctx.store.iter_pairs("hand-written"))
    assert len(pairs) == 1 and pairs[0].pair.chosen == "Yes, on a clear day."
    with pytest.raises(gr.Error, match="identical"):
        h.add_pair("", "", "Is it?", "Same.", "Same.")
    with pytest.raises(gr.Error):
        h.add_pair("", "", "Is the sky blue?", "Yes, on a clear day.", "No.")  # a duplicate


def test_untrusted_html_is_inert_in_every_panel(ctx: AppContext, h: PairsHandlers) -> None:
    hostile = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [click](javascript:alert(3))'
    ctx.store.create_collection("hostile")
    ctx.store.add_pairs("hostile", [Pair(user_prompt(hostile, system=hostile), hostile + " a", hostile + " b")])
    out = browse(h, collection="hostile")
    for key in ("context", "prompt", "first", "second"):
        assert "<script" not in out[key] and "<img" not in out[key]
        assert "&lt;script&gt;" in out[key]
        assert re.search(r"(?<!\\)\[click\]", out[key]) is None  # the link bracket is escaped: no link forms


def test_roles_are_checked_server_side(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", auth=("ann:pw", "viv:pw"), annotators=("ann",)).ensure_dirs()
    context = AppContext(settings)
    context.store.create_collection("demo")
    context.store.add_pairs("demo", make_pairs(3))
    h = standalone(context)
    viewer, annotator = gr.Request(username="viv"), gr.Request(username="ann")
    view = browse(h, request=viewer)["view"]  # viewers may read
    with pytest.raises(gr.Error, match="annotator"):
        h.vote("first", view, "", viewer)
    assert context.store.progress("demo").labels == 0
    h.vote("first", view, "", annotator)
    assert context.store.progress("demo", "ann").mine == 1
    with pytest.raises(gr.Error, match="admin"):
        h.import_file(None, str(SAMPLE_PAIRS), "auto", "", "x", False, annotator)
    with pytest.raises(gr.Error, match="admin"):
        h.export(view, "trl", annotator)
    with pytest.raises(gr.Error, match="viewer"):  # anonymous on a server with logins: read only
        browse(h, request=gr.Request())
        h.vote("first", view, "", gr.Request())
    context.close()


def test_import_reports_bad_rows_and_refuses_paths_outside_the_roots(
    ctx: AppContext, h: PairsHandlers, tmp_path: Path
) -> None:
    good = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "chosen": "Hello!", "rejected": "Hello!"})]
    inside = ctx.settings.data_dir / "upload.jsonl"
    inside.write_text("\n".join(lines) + "\n", encoding="utf-8")
    imported = h.import_file(None, str(inside), "auto", "", "mine", False)
    report = imported[h.ui.import_report]
    assert "1 pairs added" in report and "2 bad rows" in report and "upload.jsonl:2" in report
    assert imported[h.ui.collection]["value"] == "mine" and ctx.store.progress("mine").total == 1
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(json.dumps(good) + "\n", encoding="utf-8")
    with pytest.raises(gr.Error, match="outside the allowed folders"):
        h.import_file(None, str(outside), "auto", "", "x", False)
    with pytest.raises(gr.Error, match="outside the allowed folders"):
        h.import_file(None, "../../../etc/passwd", "auto", "", "x", False)
    report = h.import_file(None, str(inside), "auto", "", "strict", True)[h.ui.import_report]  # abort: nothing
    assert "Nothing was imported" in report and ctx.store.find_collection("strict") is None


def test_first_start_imports_the_sample_pairs(settings: Settings) -> None:
    context = AppContext(settings)
    context.prepare()
    assert context.store.progress(SAMPLES_COLLECTION).total == sum(1 for _ in SAMPLE_PAIRS.open(encoding="utf-8"))
    h = standalone(context)
    loaded = shown(h, h.load())
    assert loaded["collection"]["value"] == SAMPLES_COLLECTION
    assert loaded["view"].pair_id is not None
    context.prepare()  # a second start imports nothing more
    assert [c.name for c in context.store.list_collections()] == [SAMPLES_COLLECTION]
    context.close()


def test_statistics_show_progress_agreement_length_bias_and_duplicates(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    for pid in view.page_ids[:6]:
        ctx.store.add_label(pid, "ann", "first", "chosen")
        ctx.store.add_label(pid, "bob", "first" if pid % 2 else "second", "chosen")
    text = h.statistics(view)
    assert "Cohen's κ" in text and "2 annotator(s)" in text
    assert "length bias: chosen is the longer response in 100% of pairs" in text
    assert "duplicates: 0 prompts" in text and "Mine: 0 / 45" in text


def test_export_writes_a_file_with_labels_resolved(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    ctx.store.add_label(view.page_ids[0], "local", "tie", "chosen")
    exported = h.export(view, "trl")
    report, path = exported[h.ui.export_report], exported[h.ui.export_file]
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 44 and "wrote 44 pairs" in report and "1 tie" in report
    assert Path(path).parent == ctx.settings.exports_dir


def test_sort_by_a_runs_score_puts_the_lowest_margin_first(ctx: AppContext, h: PairsHandlers) -> None:
    ids = [stored.id for stored in ctx.store.iter_pairs("demo")]
    ctx.store.save_scores("run-a", [(pid, float((pid * 7) % 11) - 5) for pid in ids])
    source, score = h.collection_filters("demo")
    assert score["choices"] == ["run-a"] and ("unit", "unit") in source["choices"]
    by_score = PairFilters("demo", label_state="all", sort="score", score_name="run-a")
    result = shown(h, h.browse(by_score, 1, new_view(), None))
    margins = [ctx.store.scores_for(pid)["run-a"] for pid in result["view"].page_ids]
    assert margins == sorted(margins) and margins[0] == -5
    assert "run-a margin" in result["info"]
    with pytest.raises(gr.Error, match="run's scores"):
        h.browse(replace(by_score, score_name=""), 1, new_view(), None)


def test_an_import_opens_the_new_collection_everywhere(ctx: AppContext, h: PairsHandlers) -> None:
    before = browse(h, label_state="not_mine")
    inside = ctx.settings.data_dir / "fresh.jsonl"
    rows = [{"prompt": f"Fresh question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(3)]
    inside.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    out = shown(h, h.import_file(None, str(inside), "auto", "", "fresh", False, before["view"]))
    fresh_ids = {stored.id for stored in ctx.store.iter_pairs("fresh")}
    assert out["collection"]["value"] == "fresh" and "fresh" in out["collection"]["choices"]
    assert out["view"].collection == "fresh" and set(out["view"].page_ids) == fresh_ids
    assert out["view"].pair_id in fresh_ids and "Fresh question" in out["prompt"]
    assert {row[1] for row in out["table"]["data"]} == fresh_ids
    assert "Mine: 0 / 3" in out["progress"] and "Page 1 of 1 · 3 pairs match" == out["page_info"]
    assert out["label_state"] == "not_mine" and out["source"]["value"] == "all"  # filters kept, source reset
    # The dropdown's own change event then finds the view already there and sends nothing.
    assert h.collection_changed(out["view"].filters, out["view"]) == {}


def test_a_collection_change_by_code_or_user_opens_it(ctx: AppContext, h: PairsHandlers) -> None:
    ctx.store.create_collection("other")
    ctx.store.add_pairs("other", make_pairs(2))
    view = browse(h, label_state="mine")["view"]
    out = shown(h, h.collection_changed(PairFilters("other", source="unit", label_state="mine"), view))
    assert out["view"].collection == "other" and out["label_state"] == "mine" and out["view"].page_ids == ()
    assert "No pairs match" in out["page_info"] and "Mine: 0 / 2" in out["progress"]


def test_open_collection_lists_every_pair_for_another_tab(ctx: AppContext, h: PairsHandlers) -> None:
    first = browse(h, label_state="not_mine")["view"].pair_id
    ctx.store.add_label(first, "local", "first", "chosen")
    out = shown(h, h.open_collection("demo"))
    assert out["label_state"] == "all" and out["search"] == "" and out["view"].matches == 45
    assert first in out["view"].page_ids and out["collection"]["value"] == "demo"
    assert set(h.ui.opened) >= set(h.show(out["view"], h_user()))  # the event's outputs cover every answer
    fn, inputs, outputs = open_collection_event({"handlers": h}, "demo")  # what the Chat tab wires
    assert inputs == [] and outputs == h.ui.opened and shown(h, fn())["view"].collection == "demo"


def test_the_poll_sends_only_what_changed(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    first = shown(h, h.poll("demo", None, view))
    assert first["collection"]["choices"] == ["demo"] and "Mine: 0 / 45" in first["progress"]
    assert h.poll("demo", first["signature"], view) == {}  # nothing new: nothing sent
    ctx.store.create_collection("chat votes")  # another tab, the CLI or another user
    added = shown(h, h.poll("demo", first["signature"], view))
    assert added["collection"]["choices"] == ["demo", "chat votes"] and added["collection"]["value"] == "demo"
    assert "progress" not in added
    ctx.store.add_label(view.pair_id, "someone-else", "first", "chosen")
    labelled = shown(h, h.poll("demo", added["signature"], view))
    assert set(labelled) == {"signature", "progress"} and "1 pairs judged" in labelled["progress"]


def test_back_on_the_tab_the_page_is_read_again(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h)["view"]
    ctx.store.add_label(view.page_ids[1], "local", "tie", "chosen")  # e.g. from the Chat tab
    out = shown(h, h.tab_selected("demo", view))
    assert out["view"].pair_id == view.pair_id and out["table"]["data"][1][5] == "tie"
    assert "Mine: 1 / 45" in out["progress"]


def test_search_counts_matches_and_highlights_them_inertly(ctx: AppContext, h: PairsHandlers) -> None:
    out = browse(h, text="boil")
    assert out["page_info"] == "Page 1 of 2 · 30 pairs match “boil”"
    assert "<mark>boil</mark>" in out["prompt"]
    zh = browse(h, text="菜刀")
    assert "<mark>菜刀</mark>" in zh["prompt"] and "15 pairs match “菜刀”" in zh["page_info"]
    hostile = "<img src=x onerror=alert(1)> boil"
    ctx.store.create_collection("hostile")
    ctx.store.add_pairs("hostile", [Pair(user_prompt(hostile), hostile + " a", "b")])
    found = browse(h, collection="hostile", text="<img src")
    assert "<img" not in found["prompt"] and "&lt;<mark>img</mark> <mark>src</mark>=x" in found["prompt"]
    assert "<img" not in found["page_info"] and "1 pairs match" in found["page_info"]


def test_a_skip_is_not_a_judgement(ctx: AppContext, h: PairsHandlers) -> None:
    view = browse(h, label_state="not_mine")["view"]
    view = shown(h, h.vote("skip", view, "", None))["view"]
    after = shown(h, h.vote("first", view, "", None))
    assert "Mine: 1 / 45" in after["progress"] and "1 skipped" in after["progress"]
    assert "everyone: 1 pairs judged, 1 judgements by 1 annotator(s)" in after["progress"]
    assert "judged: 1 · only skipped: 1" in h.statistics(after["view"])
    assert ctx.store.progress("demo", "local").mine == 2  # the store still counts both as labels


def test_label_progress_counts_skips_apart(tmp_path) -> None:
    from ctllm.pairs.store import Store

    store = Store(tmp_path / "s.sqlite")
    store.create_collection("c")
    ids = [store.add_pair("c", Pair(prompt=[{"role": "user", "content": f"q{i}"}], chosen="a", rejected="b")).id
           for i in range(10)]
    for pair_id, annotator, verdict in [(ids[0], "me", "skip"), (ids[1], "me", "first"), (ids[1], "you", "skip"),
                                        (ids[2], "you", "tie"), (ids[3], "ghost", "skip")]:
        store.add_label(pair_id, annotator, verdict, "chosen")
    p = store.label_progress("c", "me")
    assert (p.total, p.judged, p.skipped, p.anyone, p.judgements, p.annotators) == (10, 1, 1, 2, 2, 2)
