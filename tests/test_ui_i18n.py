"""The Chinese interface: every string in both languages, and after the switch no English word left on any
component (label, info, placeholder, button or Markdown text, choice labels, table headers), nor in what the Pairs,
Train and synthesis handlers write for a session that chose 中文 (pair info, table, progress, messages, run status,
phases, job history, synthesis status), with a real store, real job processes and real run folders."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.dpo.config import LOSS_TYPES
from ctllm.jobs.table import Job
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.runs import read_status
from ctllm.settings import Settings
from ctllm.ui import loss_picker
from ctllm.ui.app import build_app
from ctllm.ui.context import AppContext
from ctllm.ui.i18n import STRINGS, remember_language, speaking
from ctllm.ui.pairs_tab import PairFilters, new_view, standalone
from ctllm.ui.synth_panel import SynthHandlers, progress_markdown
from ctllm.ui.train_tab import TrainHandlers
from tests.test_ui_train import form_values

# Names that stay as they are in Chinese text: models, methods, formats, units, code identifiers.
WHITELIST = {
    "ct",
    "llm",
    "dpo",
    "sft",
    "lora",
    "rpo",
    "nll",
    "ipo",
    "cdpo",
    "adamw",
    "hub",
    "id",
    "json",
    "jsonl",
    "csv",
    "tsv",
    "parquet",
    "txt",
    "alpaca",
    "sharegpt",
    "cpu",
    "cuda",
    "gpu",
    "top",
    "p",
    "chosen",
    "rejected",
    "ln",
    "smollm",
    "instruct",
    "m",
    "a",
    "map",
    "auto",
    "sigmoid",
    "hinge",
    "robust",
    "python",
    "ctllm",
    "score",
    "test",
    "synth",
    "accelerate",
    "studio",
    "mb",
    "localhost",
    "token",
    "k",
    "α",
    "β",
    "ε",
    "s",
    "u",
    "x",
    "eta",
    "cohen",
    "fleiss",
    # the preference-optimization losses (ctllm.dpo.loss_fields.PAPERS) and their parts
    "simpo",
    "cpo",
    "orpo",
    "alphapo",
    "discopop",
    "aot",
    "exo",
    "nca",
    "bco",
    "sppo",
    "slic",
    "rso",
    "mpo",
    "kto",
    "kl",
}
# Keys whose Chinese is rightly the English text (a symbol or a name).
SAME_IN_BOTH = {"synth-top-p.label", "chat-top-p.label", "train-beta.label"}
WORD = re.compile(r"[A-Za-z]+")


def english_words(text: str, allow: Iterable[str] = ()) -> set[str]:
    """Words of Latin letters in ``text`` outside code spans, the whitelist and the words of ``allow`` (data shown as
    it is: collection, run, source and file names)."""
    allowed = WHITELIST | {w.lower() for name in allow for w in WORD.findall(name)}
    text = re.sub(r"`[^`]*`|\{[^}]*\}|\b\w*[_/.]\w[\w./-]*|\d+e-\d+|chat votes", " ", text)
    words = {w.lower().strip("'-") for w in WORD.findall(text)}
    return {w for w in words if len(w) > 1 and w not in allowed}


def strings_in(value: Any) -> Iterable[str]:
    """The strings inside a handler's value: a string, or rows, lists and dicts of them."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # a gr.update too: its "__type__" is no text
        for key, item in value.items():
            if key != "__type__":
                yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def assert_chinese(texts: dict[str, Any], allow: Iterable[str] = ()) -> None:
    """No English word left in any of ``texts`` (named by where they are shown); ``allow``: data names."""
    allow = list(allow)
    left = {}
    for where, value in texts.items():
        words = set().union(set(), *(english_words(text, allow) for text in strings_in(value)))
        if words:
            left[where] = words
    assert not left, left


def chinese_session() -> gr.Request:
    """A request from a session that chose 中文 (as the language radio's handler records it)."""
    request = gr.Request(session_hash=f"zh-{time.monotonic_ns()}")
    remember_language(request, "zh")
    return request


def test_every_string_has_both_languages_with_the_same_placeholders() -> None:
    field = re.compile(r"\{(\w*)\}")
    for key, (en, zh) in STRINGS.items():
        assert en.strip() and zh.strip(), key
        assert sorted(field.findall(en)) == sorted(field.findall(zh)), key
        assert en != zh or key in SAME_IN_BOTH, f"{key}: the Chinese is the English text"


def test_after_the_switch_every_component_speaks_chinese(tmp_path: Path) -> None:
    demo = build_app(Settings(data_dir=tmp_path))
    translator = demo.ctllm_translator
    left: dict[str, set[str]] = {}
    for block, update in zip(translator.components, translator.updates("zh"), strict=True):
        texts = [v for k, v in update.items() if k in ("label", "info", "placeholder", "value")]
        texts += [label for label, _ in update.get("choices", ())] + list(update.get("headers", ()))
        words = set().union(*(english_words(str(text)) for text in texts))
        if words:
            left[block.elem_id] = words
    assert not left, left
    shown = {block.elem_id for block in translator.components}
    assert {"pairs-tab", "vote-second", "train-beta", "chat-send", "help-text", "pairs-language"} <= shown


def test_what_the_pairs_handlers_write_speaks_chinese(settings: Settings) -> None:
    ctx = AppContext(settings)
    try:
        store = ctx.store
        store.create_collection("demo")
        pairs = [
            Pair(user_prompt(f"Question {i}: how do I boil an egg?"), f"Simmer {i} minutes.", "No idea.", source="unit")
            for i in range(3)
        ] + [Pair(user_prompt("怎样安全地使用菜刀？"), "握紧刀柄。", "随便用。", source="unit")]
        store.add_pairs("demo", pairs)
        ids = [stored.id for stored in store.iter_pairs("demo")]
        store.save_scores("run-a", [(pid, 0.25) for pid in ids])
        h, zh = standalone(ctx), chinese_session()
        ui = h.ui
        data = ("demo", "unit", "run-a", "train")  # collection, source, run and split names are data

        def shown(out: dict) -> dict[str, Any]:
            """What a Pairs view shows besides the pair texts (data): info, table but its prompt column, page
            information, progress and message."""
            table = out[ui.table]
            rows = [row[:3] + row[4:] for row in table["data"]]
            return {"info": out[ui.info], "context": out[ui.context], "headers": table["headers"], "rows": rows,
                    "page_info": out[ui.page_info], "progress": out[ui.progress], "message": out[ui.message]}

        out = h.browse(PairFilters("demo", label_state="all"), 1, new_view(), zh)
        assert "偏好对" in out[ui.info] and "run-a 奖励差 +0.250" in out[ui.info], out[ui.info]
        assert_chinese(shown(out), allow=data)
        view = out[ui.view]
        voted = h.vote("first", view, "", zh)  # the table's "mine" column now holds a verdict
        assert any(row[5] for row in voted[ui.table]["data"]) and "回答 1 更好" in voted[ui.message]
        assert_chinese(shown(voted), allow=data)
        edited = h.save_edit(voted[ui.view], "first", "An edited answer.", zh)  # an edited version's info line
        assert "编辑版本" in edited[ui.info]
        assert_chinese(shown(edited), allow=data)
        assert_chinese(shown(h.undo(edited[ui.view], zh)), allow=data)
        assert_chinese(shown(h.turn_page(1, edited[ui.view], zh)), allow=data)  # "this is the last page"
        assert_chinese(shown(h.browse(PairFilters("demo", text="nothing-like-this"), 1, new_view(), zh)), allow=data)
        empty = h.browse(PairFilters(""), 1, new_view(), zh)  # no collection: the empty panel
        assert_chinese(shown(empty), allow=data)
        assert_chinese({"statistics": h.statistics(view, zh)}, allow=data)
        opened = h.open_collection("demo", zh)
        assert_chinese({"source choices": [label for label, _ in opened[ui.source]["choices"]]}, allow=data)
        # After a switch of language the Pairs view is written again: English first, then the same view in 中文.
        english = h.language_changed("demo", view, None)
        assert "Pair" in english[ui.info] and english[ui.source]["value"] == "all"
        assert_chinese(shown(h.language_changed("demo", view, zh)), allow=data)
    finally:
        ctx.close()


# A stand-in training run, a real process: it writes what a run writes (phase, metrics, summary), and in the phase
# "reference" waits for the file named by its second argument.
RUN_SCRIPT = """
import os, sys, time
from ctllm.runs import RunDir
run = RunDir(sys.argv[1])
run.update_status(total_steps=4, step=0, reference="tiny-ref")
run.set_phase("reference", 3, 10)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
run.set_phase("training")
run.append_metrics({"step": 4, "loss": 0.6, "pairs_per_second": 2.5})
summary = {"preference_accuracy": 0.7, "sft_preference_accuracy": 0.5, "refusal_rate_harmful": 0.4,
           "sft_refusal_rate_harmful": 0.1, "eval_rewards/accuracies": 0.75}
run.update_status(step=4, summary=summary)
"""


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_what_the_train_handlers_write_speaks_chinese(settings: Settings) -> None:
    ctx = AppContext(settings)
    run_dir, go = settings.runs_dir / "zh-run", settings.data_dir / "go"
    h, zh = TrainHandlers(ctx), chinese_session()
    nothing = h.poll(None, {}, {}, None, None, zh)
    assert nothing["status"] == "还没有任务。"
    # The empty plots' message (their titles are the plots module's).
    assert nothing["plot_loss"].layout.annotations[0].text == "开始一次运行后，这里会显示它的曲线。"
    job = ctx.jobs.start([sys.executable, "-c", RUN_SCRIPT, str(run_dir), str(go)], run_dir, name="zh-run")
    try:
        data = ("zh-run", "tiny-ref", str(run_dir))
        wait_for(lambda: read_status(run_dir).get("phase") == "reference", "the reference pass")
        running = h.poll(job.id, {}, {}, None, None, zh)
        assert "参考模型前向计算 30% (3 / 10)" in running["status"] and "运行中" in running["status"], running["status"]
        assert_chinese({k: running[k] for k in ("status", "history", "watch")}, allow=data)

        go.touch()
        assert ctx.jobs.wait(job.id, timeout=120).state == "finished"
        done = h.poll(job.id, {}, {}, None, job.id, zh)  # the same job shown as the scoring line, too
        assert "已完成" in done["status"] and "SFT → DPO: 偏好准确率 50% → 70%" in done["status"], done["status"]
        assert "已完成" in done["history"]["data"][0][2]
        assert_chinese({k: done[k] for k in ("status", "history", "watch", "score_status")}, allow=data)
        assert_chinese({"no evaluation": h.show_eval("zh-run", zh)["eval_summary"]}, allow=data)
        command = h.show_command(form_values(), zh)["command"]
        assert "<启动时确定>" in command and "<chosen at start>" not in command
        # After a switch of language the tab is written again; English for an English session.
        again = h.language_changed(job.id, done["cache"], job.id, "zh-run", "zh-run", request=zh)
        rewritten = ("status", "history", "watch", "score_status", "score_target")
        assert_chinese({k: again[k] for k in rewritten}, allow=data)
        assert "finished" in h.language_changed(job.id, done["cache"], None, "", "", request=None)["status"]
    finally:
        if not ctx.jobs.get(job.id).final:
            go.touch()
            ctx.jobs.wait(job.id, timeout=120)
        ctx.close()


def test_the_loss_pickers_paper_lines_speak_chinese() -> None:
    zh = chinese_session()
    lines = {name: loss_picker.method_view(name, "reverse_kl", zh)["loss_paper"] for name in LOSS_TYPES}
    assert lines["simpo"].startswith("**simpo** — SimPO：免参考")
    assert "(https://arxiv.org/abs/2405.14734)" in lines["simpo"]
    assert_chinese(lines, allow=["arXiv https"])  # the link to each paper


def test_the_synthesis_status_speaks_chinese(settings: Settings) -> None:
    ctx = AppContext(settings)
    try:
        zh = chinese_session()
        assert_chinese({"no job": SynthHandlers(ctx).poll(None, None, zh)[0]})
        now = time.time()
        argv = ("python", "-m", "ctllm", "synth", "--collection", "synth-x")

        def synth_job(job_id: int, state: str, finished: float | None = None) -> Job:
            return Job(job_id, "synth", "synth-x", argv, "", "", "cpu", Path("/tmp/x"), state, now - 100,
                       started=now - 95, finished=finished)

        running = synth_job(1, "running")
        written = datetime.fromtimestamp(int(now), timezone.utc).isoformat()
        status = {"collection": "synth-x", "step": 2, "total_steps": 8, "eta_s": 90.0, "updated": written,
                  "phase": "generating", "pairs_per_minute": 4.0, "added": 1, "duplicates": 0,
                  "filtered": {"empty": 0, "cut_off": 1, "wrong_language": 0, "near_identical": 0, "too_long": 0}}
        summary = {"added": 6, "duplicates": 1, "filtered": {"empty": 1}, "prompts": 8, "rows": 9, "bad_rows": 1,
                   "repeated_rows": 0, "already_done": 0, "processed": 8, "remaining": 0, "seed": 5}
        finished, cancelled = synth_job(2, "finished", now), synth_job(3, "cancelled", now)
        with speaking("zh"):
            texts = {
                "running": progress_markdown(running, status, now),
                "loading": progress_markdown(running, {"phase": "loading models"}, now),
                "finished": progress_markdown(finished, {"summary": summary}, now),
                "cancelled": progress_markdown(cancelled, {}, now),
            }
        assert "提示 2 / 8（25%）" in texts["running"] and "被截断 1" in texts["running"], texts
        assert_chinese(texts, allow=("synth-x",))
    finally:
        ctx.close()
