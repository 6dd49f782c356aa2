"""Train tab handlers: the form, validation next to the field, the command, a real background job on a tiny
model whose metrics reach the plots, cancel, history."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import gradio as gr
import pytest

from ctllm.dpo.config import LOSS_TYPES
from ctllm.dpo.loss_fields import LOSS_FIELDS
from ctllm.dpo.presets import load_preset
from ctllm.evaluate import headline
from ctllm.runs import read_config
from ctllm.settings import Settings
from ctllm.ui import loss_picker, plots
from ctllm.ui.context import AppContext
from ctllm.ui.i18n import STRINGS, remember_language, t
from ctllm.ui.train_tab import FIELDS, FORM_NAMES, HISTORY_HEADERS, TrainHandlers, data_spec, read_new_metrics
from tests.conftest import MODEL_CACHE, REPO

PLOTS = ("plot_loss", "plot_margin", "plot_accuracy", "plot_rewards")


def form_values(**changes) -> dict:
    """The form as the page first shows it (preset cpu-demo), with ``changes``."""
    config = load_preset("cpu-demo")
    form = {
        "preset": "cpu-demo",
        "model": config.model,
        "ref_model": "",
        "data": "samples",
        "eval_data": "",
        "eval_fraction": config.eval_fraction,
        "run_name": "",
        "devices": "cpu",
        "num_processes": 1,
    }
    form.update({f.name: getattr(config, f.name) for f in FIELDS} | loss_picker.form_values(config))
    form.update(changes)
    assert set(form) == set(FORM_NAMES)
    return form


@pytest.fixture
def ctx(tmp_path: Path, tiny_model_dir: Path) -> AppContext:
    settings = Settings(
        data_dir=tmp_path / "data", allowed_roots=(tmp_path / "data", MODEL_CACHE, REPO / "assets")
    ).ensure_dirs()
    context = AppContext(settings)
    context.prepare()  # the shipped samples, as on a first start
    yield context
    for job in context.jobs.list_jobs():  # no job outlives its test
        if not job.final:
            context.jobs.cancel(job.id, wait=True, force=True)
    context.close()


def infos(result: dict) -> dict[str, str | None]:
    return {name: result[name].get("info") for name in FORM_NAMES}


def test_show_command_names_the_preset_and_only_the_changed_fields(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = TrainHandlers(ctx)
    result = h.show_command(form_values(model=str(tiny_model_dir), beta=0.25, max_steps=5))
    command, message = result["command"], result["message"]
    assert "CTLLM_ALLOWED_ROOTS=" in command  # the job sees the same allowed folders as the app
    assert "python -m ctllm train --preset cpu-demo" in command
    assert f"--model {tiny_model_dir}" in command and "--beta 0.25" in command and "--max_steps 5" in command
    assert "--data collection:samples" in command and "--lr" not in command  # lr is the preset's
    assert f"--data-dir {ctx.settings.data_dir}" in command and message == ""


def test_several_processes_use_accelerate_launch(ctx: AppContext) -> None:
    command = TrainHandlers(ctx).show_command(form_values(num_processes=2, devices="0,1"))["command"]
    assert "CUDA_VISIBLE_DEVICES=0,1" in command
    assert "python -m accelerate.commands.launch --multi_gpu --num_processes 2 -m ctllm train" in command


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("beta", 0, "must be > 0"),
        ("batch_size", 0, "must be >= 1"),
        ("lr", None, "needs a value"),
        ("devices", "gpu-one", "neither 'cpu' nor a GPU id"),
        ("num_processes", 0, "whole number >= 1"),
        ("model", "/etc", "outside the allowed folders"),  # what the job would only find out inside
        ("ref_model", "no-such-model-folder", "no-such-model-folder"),
        ("model", "ct-llm-sft", "not in the local hub cache"),  # tests are offline (HF_HUB_OFFLINE=1)
    ],
)
def test_a_bad_value_is_explained_next_to_its_field_and_nothing_starts(
    ctx: AppContext, field: str, value: object, reason: str
) -> None:
    h = TrainHandlers(ctx)
    result = h.start(form_values(**{field: value}))
    assert reason in html.unescape(result["message"])  # Markdown with < > as entities
    assert "job_id" not in result
    shown = infos(result)
    assert reason in (shown[field] or "") and shown[field].startswith("⚠")
    assert all(not (info or "").startswith("⚠") for name, info in shown.items() if name != field)
    assert ctx.jobs.list_jobs() == []


def test_the_loss_picker_groups_the_losses_and_says_kto_is_not_there_yet() -> None:
    labels = [label for label, _ in loss_picker.loss_choices("en")]
    values = [value for _, value in loss_picker.loss_choices("en")]
    assert labels[:2] == ["Reference · sigmoid", "Reference · hinge"]
    assert labels[-4:] == ["Reference-free · simpo", "Reference-free · cpo", "Reference-free · orpo",
                           "Reference-free · alphapo"]
    assert sum(label.startswith("Reference · ") for label in labels) == 15
    assert set(values) == set(LOSS_TYPES) and not [v for v in values if "kto" in v]  # nothing that would fail
    assert "Unpaired (KTO): not available yet" in STRINGS["train-loss-type.info"][0]
    assert [label for label, _ in loss_picker.loss_choices("zh")][-1] == "免参考 · alphapo"


@pytest.mark.parametrize(
    ("loss_type", "divergence", "shown", "paper"),
    [
        ("simpo", "reverse_kl", {"beta", "simpo_gamma", "label_smoothing", "rpo_alpha"}, "arxiv.org/abs/2405.14734"),
        ("orpo", "reverse_kl", {"orpo_lambda"}, "arxiv.org/abs/2403.07691"),
        ("cpo", "reverse_kl", {"beta", "cpo_alpha", "label_smoothing"}, "arxiv.org/abs/2401.08417"),
        ("alphapo", "reverse_kl", {"beta", "simpo_gamma", "alphapo_alpha", "label_smoothing", "rpo_alpha"},
         "arxiv.org/abs/2501.03884"),
        ("discopop", "reverse_kl", {"beta", "discopop_tau", "rpo_alpha", "f_divergence_type"}, "2406.08414"),
        ("hinge", "alpha_divergence", {"beta", "rpo_alpha", "f_divergence_type", "f_alpha_divergence_coef"},
         "2309.06657"),
        ("hinge", "js_divergence", {"beta", "rpo_alpha", "f_divergence_type"}, "2309.06657"),
        ("sigmoid,sft", "reverse_kl", {"beta", "label_smoothing", "rpo_alpha", "loss_weights", "f_divergence_type"},
         "2404.19733"),
    ],
)
def test_the_picker_shows_only_the_fields_of_the_chosen_loss_and_its_paper(
    loss_type: str, divergence: str, shown: set[str], paper: str
) -> None:
    view = loss_picker.method_view(loss_type, divergence)
    assert {name for name, update in view.items() if name != "loss_paper" and update["visible"]} == shown
    assert set(view) - {"loss_paper"} == set(LOSS_FIELDS)
    assert paper in view["loss_paper"] and view["loss_paper"].startswith(f"**{loss_type.split(',')[0]}** — ")
    assert "<" not in view["loss_paper"]  # Markdown, no HTML


def test_a_preset_fills_the_picker(ctx: AppContext) -> None:
    values = TrainHandlers(ctx).preset_values("cpu-demo")
    assert values["loss_type"]["value"] == "sigmoid" and values["rpo_alpha"]["value"] == 2.0
    assert values["loss_weights"]["value"] == "" and values["simpo_gamma"]["value"] == 0.5


def test_show_command_prints_the_loss_flags_that_differ_and_drops_the_hidden_ones(ctx: AppContext) -> None:
    h = TrainHandlers(ctx)
    simpo = h.show_command(form_values(loss_type="simpo", simpo_gamma=0.8, orpo_lambda=0.5))["command"]
    assert "--loss_type simpo --simpo_gamma 0.8" in simpo and "--orpo_lambda" not in simpo  # orpo's λ: hidden
    assert "--rpo_alpha" not in simpo  # the preset's NLL weight applies to simpo as it is
    # orpo has its own NLL term: the preset's rpo_alpha gives way to 0, β (unused) is left alone.
    orpo = h.show_command(form_values(loss_type="orpo", orpo_lambda=0.25, beta=0.9))["command"]
    assert "--loss_type orpo" in orpo and "--orpo_lambda 0.25" in orpo and "--rpo_alpha 0.0" in orpo
    assert "--beta" not in orpo
    alpha = h.show_command(form_values(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3))["command"]
    assert "--f_divergence_type alpha_divergence --f_alpha_divergence_coef 0.3" in alpha
    mpo = h.show_command(form_values(loss_type="sigmoid,bco_pair,sft", loss_weights="0.8, 0.2, 1"))["command"]
    assert "--loss_type sigmoid,bco_pair,sft" in mpo and "--loss_weights 0.8,0.2,1.0" in mpo
    hinge = h.show_command(form_values(loss_type="hinge", label_smoothing=0.2))  # ε hidden: not counted
    assert hinge["message"] == "" and "--label_smoothing" not in hinge["command"]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"loss_type": "simpo", "simpo_gamma": -0.5}, "simpo_gamma", "must be >= 0"),
        ({"loss_type": "orpo", "orpo_lambda": 0}, "orpo_lambda", "must be > 0"),
        ({"loss_type": "cpo", "cpo_alpha": -1}, "cpo_alpha", "must be >= 0"),
        ({"loss_type": "alphapo", "alphapo_alpha": 0}, "alphapo_alpha", "must not be 0"),
        ({"loss_type": "discopop", "discopop_tau": 0}, "discopop_tau", "must be > 0"),
        ({"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0}, "f_alpha_divergence_coef",
         "must be > 0"),
        ({"loss_type": "sigmoid,sft", "loss_weights": "1"}, "loss_weights", "needs one weight per loss_type entry"),
        ({"loss_type": "sigmoid,simpo"}, "loss_type", "simpo trains on its own"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing", "must be in [0, 0.5)"),
    ],
)
def test_a_bad_loss_hyperparameter_is_explained_next_to_its_field(
    ctx: AppContext, changes: dict, field: str, reason: str
) -> None:
    result = TrainHandlers(ctx).start(form_values(**changes))
    shown = infos(result)
    assert "job_id" not in result and reason in html.unescape(result["message"]).replace("\\", "")  # Markdown-escaped
    assert shown[field].startswith("⚠") and reason in shown[field]
    assert all(not (info or "").startswith("⚠") for name, info in shown.items() if name != field)
    assert ctx.jobs.list_jobs() == []


def test_a_simpo_job_started_from_the_form_trains_without_a_reference(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = TrainHandlers(ctx)
    form = form_values(model=str(tiny_model_dir), loss_type="simpo", simpo_gamma=0.7, max_steps=1, batch_size=2,
                       max_length=64, final_eval=False, run_name="tiny-simpo")
    started = h.start(form)
    job = ctx.jobs.get(started["job_id"])
    argv = list(job.argv)
    assert argv[argv.index("--loss_type") + 1] == "simpo" and argv[argv.index("--simpo_gamma") + 1] == "0.7"
    assert "--loss_type simpo --simpo_gamma 0.7" in started["command"]
    assert ctx.jobs.wait(job.id, timeout=300).state == "finished", (job.run_dir / "train.log").read_text()[-3000:]
    config = read_config(job.run_dir)
    assert config["loss_type"] == "simpo" and config["simpo_gamma"] == 0.7
    assert "reference-free: simpo" in (job.run_dir / "train.log").read_text(encoding="utf-8")


def test_collection_names_become_collection_specs() -> None:
    assert data_spec("samples") == "collection:samples"
    assert data_spec("chat votes") == "collection:chat votes"
    assert data_spec("assets/pairs/sample_pairs.jsonl") == "assets/pairs/sample_pairs.jsonl"
    assert data_spec("collection:x") == "collection:x"


def poll_until(h: TrainHandlers, job_id: int, done, timeout: float = 240.0) -> tuple[dict, dict]:
    """Poll as the page's timer does (each answer holds only what changed) until ``done(shown, cache)``."""
    cache: dict = {}
    seen: dict = {}
    deadline = time.monotonic() + timeout
    latest: dict = {}
    while time.monotonic() < deadline:
        result = h.poll(job_id, cache, seen)
        cache = result.get("cache", cache)
        seen = result.get("seen", seen)
        latest.update(result)
        if done(latest, cache):
            return latest, cache
        time.sleep(0.5)
    raise AssertionError(f"timed out; last status: {latest.get('status')}\nlog:\n{latest.get('log')}")


def test_a_tiny_run_reaches_the_plots_and_the_history(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = TrainHandlers(ctx)
    form = form_values(
        model=str(tiny_model_dir),
        max_steps=3,
        batch_size=2,
        max_length=64,
        final_eval_limit=2,  # SFT vs DPO at the end, on 2 prompts of each English list
        precompute_ref=False,  # a pass over every pair first: slow on a busy 2-core machine
        run_name="tiny-ui",
    )
    started = h.start(form)
    job_id, command, message = started["job_id"], started["command"], started["message"]
    assert isinstance(job_id, int) and "Started job" in message and "--run_name tiny-ui" in command

    def finished(result: dict, cache: dict) -> bool:
        return "finished" in result["status"] or "failed" in result["status"]

    result, cache = poll_until(h, job_id, finished)
    assert "finished" in result["status"], result["log"]
    train_rows = [row for row in cache["rows"] if "loss" in row]
    eval_rows = [row for row in cache["rows"] if "eval_loss" in row]
    assert [row["step"] for row in train_rows] == [1, 2, 3] and len(eval_rows) == 1
    alpha = load_preset("cpu-demo").rpo_alpha
    assert alpha > 0 and cache["rpo_alpha"] == alpha  # the preset adds the chosen NLL: DPO and NLL drawn apart
    loss = plots.metric_figures(plots.with_dpo_loss(cache["rows"], alpha))[0]
    assert [trace.name for trace in loss.data] == ["DPO", "eval DPO", "NLL", "eval NLL"]
    assert plots.point_count(loss) == 8
    assert result["plot_loss"].data[0].name == "DPO"  # what the page was sent
    # Nothing new: the next poll leaves the figures alone.
    again = h.poll(job_id, cache, result["seen"])
    assert not set(PLOTS) & set(again)
    assert not {"watch", "history", "compare_runs", "eval_run"} & set(again)  # the lists did not change either
    # The page followed the run to its end: the picker and the history say "finished", without a Refresh.
    assert (f"{job_id} · tiny-ui · finished", job_id) in result["watch"]["choices"]
    assert result["history"]["data"][0][2] == "finished"
    row = h.history()[0]
    assert row[:4] == [job_id, "tiny-ui", "finished", "cpu-demo"] and row[4] != "–"
    assert 0 <= float(row[5]) <= 1  # best held-out reward accuracy
    refreshed = h.refresh(job_id)
    runs, evaluated = refreshed["compare_runs"], refreshed["eval_run"]
    assert "tiny-ui" in runs["choices"][0] or ("tiny-ui", "tiny-ui") in runs["choices"]
    overlay = h.compare(["tiny-ui"], "loss")
    assert plots.point_count(overlay) == 3

    # The run ended with SFT vs DPO: the history shows it, and clicking the row shows its table and charts.
    run_dir = ctx.settings.runs_dir / "tiny-ui"
    evaluation = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    numbers = headline(evaluation)
    columns = dict(zip(HISTORY_HEADERS, row, strict=True))
    expected = f"{numbers['preference_accuracy/sft']:.0%} → {numbers['preference_accuracy/dpo']:.0%}"
    assert columns["pref. acc. SFT → DPO"] == expected
    assert columns["refusals SFT → DPO"] == f"{numbers['refusal_rate/sft']:.0%} → {numbers['refusal_rate/dpo']:.0%}"
    assert columns["answers SFT → DPO"] == f"{numbers['answer_rate/sft']:.0%} → {numbers['answer_rate/dpo']:.0%}"
    assert [e["n"] for e in evaluation["prompts"]] == [2, 2]
    assert "SFT → DPO: pref. acc." in result["status"]  # the finished job's status line
    assert evaluated["choices"] in (["tiny-ui"], [("tiny-ui", "tiny-ui")])

    click = gr.SelectData(None, {"index": [0, 1], "value": "tiny-ui", "row_value": row})
    selected = h.history_select(click)
    assert selected["eval_run"]["value"] == "tiny-ui" and selected["selected_run"] == "tiny-ui"
    shown = h.show_eval("tiny-ui")
    summary, table, csv_path = shown["eval_summary"], shown["eval_table"], shown["eval_csv"]
    rows = table["data"]
    assert table["headers"] == ["section", "group", "metric", "SFT", "DPO", "n", "note"]
    charts = [shown[f"eval_{name}"] for name in ("preference", "reward", "behaviour")]
    assert "pref. acc." in summary and "refusals" in summary
    assert [r[:3] for r in rows][0] == ["pairs", "all", "preference accuracy"]
    assert rows[0][3] == round(evaluation["pairs"]["overall"]["ref_preference_accuracy"], 4)
    assert [fig.layout.title.text.split(" ")[0] for fig in charts] == ["Preference", "DPO", "Behaviour"]
    assert Path(csv_path).parent == ctx.settings.exports_dir
    assert Path(csv_path).read_text() == (run_dir / "eval.csv").read_text()
    # A switch to Chinese draws the run's curves and its evaluation again, in Chinese.
    zh = gr.Request(session_hash="zh-page")
    remember_language(zh, "zh")
    redrawn = h.language_changed(job_id, cache, None, "", "tiny-ui", ["tiny-ui"], "loss", zh)
    names = [trace.name for trace in redrawn["plot_loss"].data]
    assert names == ["DPO 损失", "评估 DPO 损失", "NLL 损失", "评估 NLL 损失"]
    assert plots.point_count(redrawn["plot_loss"]) == 8
    assert redrawn["plot_margin"].layout.title.text.startswith("奖励差")
    assert redrawn["eval_preference"].layout.title.text.startswith("留出") and redrawn["eval_preference"].data
    assert redrawn["eval_table"]["headers"][:3] == ["部分", "分组", "指标"]
    assert redrawn["eval_table"]["data"][0][:3] == ["偏好对", "全部", "偏好准确率"]
    assert plots.point_count(redrawn["compare_plot"]) == 3
    nothing = h.show_eval("no-such-run")
    assert "no evaluation yet" in nothing["eval_summary"] and nothing["eval_table"] == []
    assert nothing["eval_csv"] is None


def test_every_plot_is_drawn_again_in_the_language_switched_to(ctx: AppContext) -> None:
    run = ctx.settings.runs_dir / "evaluated"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}), encoding="utf-8")
    overall = {"n": 4, "model_preference_accuracy": 0.75, "ref_preference_accuracy": 0.5, "reward_accuracy": 0.75,
               "margin": 0.2, "chosen_reward": 0.1, "rejected_reward": -0.1}
    evaluation = {"beta": 0.1, "pairs": {"overall": overall, "by_category": {"self_harm": overall}}, "prompts": []}
    (run / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")
    h = TrainHandlers(ctx)
    zh = gr.Request(session_hash="zh-page")
    remember_language(zh, "zh")
    redrawn = h.language_changed(None, {}, None, "", "evaluated", [], "loss", zh)
    assert [redrawn[name].layout.title.text for name in PLOTS] == ["损失", "奖励差（chosen − rejected）", "奖励准确率",
                                                                    "奖励：chosen 与 rejected"]
    assert redrawn["plot_loss"].layout.annotations[0].text == t("train.no_curves", "zh")
    preference, reward, behaviour = (redrawn[f"eval_{name}"] for name in plots.EVAL_CHARTS)
    assert list(preference.data[0].x) == ["全部", "self harm"] and reward.layout.title.text.endswith("（β = 0.1）")
    assert not behaviour.data and behaviour.layout.annotations[0].text == t("train.eval_chart_missing", "zh")
    assert redrawn["compare_plot"].layout.title.text == "运行比较：loss"
    assert redrawn["eval_run"]["choices"] in (["evaluated"], [("evaluated", "evaluated")])  # the lists, as Refresh
    english = h.language_changed(None, {}, None, "", "", [], "loss", gr.Request(session_hash="en-page"))
    assert english["plot_loss"].layout.title.text == "Loss"
    assert english["eval_preference"].layout.annotations[0].text == t("train.eval_no_chart", "en")


def test_cancel_stops_a_running_job(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = TrainHandlers(ctx)
    form = form_values(
        model=str(tiny_model_dir), epochs=50, batch_size=1, max_length=64, final_eval=False, precompute_ref=False
    )
    job_id = h.start(form)["job_id"]
    result, _ = poll_until(h, job_id, lambda r, cache: len(cache.get("rows", [])) >= 2)
    assert result["cancel"]["interactive"] is True
    # A page opened later (another browser, or the app restarted) shows this job live.
    reopened = TrainHandlers(AppContext(ctx.settings)).load()
    assert reopened["job_id"] == job_id and reopened["watch"]["value"] == job_id
    # Cancel takes two clicks: the first only asks for confirmation.
    first = h.cancel(job_id, None)
    assert first["cancel"]["value"] == "Confirm cancel" and ctx.jobs.get(job_id).state == "running"
    second = h.cancel(job_id, first["armed"])
    assert "cancelling" in second["message"] and second["armed"] is None
    result, _ = poll_until(h, job_id, lambda r, cache: "cancelled" in r["status"] or "finished" in r["status"])
    assert "cancelled" in result["status"]
    assert (f"{job_id} · {ctx.jobs.get(job_id).name} · cancelled", job_id) in result["watch"]["choices"]
    assert result["resume"]["interactive"] is True and result["cancel"]["interactive"] is False


def test_job_control_needs_the_admin_role(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", auth=("ann:1",)).ensure_dirs()
    h = TrainHandlers(AppContext(settings))
    annotator = gr.Request(username="ann")
    for call in (
        lambda: h.start(form_values(), annotator),
        lambda: h.cancel(1, None, annotator),
        lambda: h.resume(1, annotator),
    ):
        with pytest.raises(gr.Error, match="admin"):
            call()


def test_metrics_are_read_incrementally_and_again_after_a_rewrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.6}\n')
    cache, changed = read_new_metrics(run, {})
    assert changed and [r["step"] for r in cache["rows"]] == [1, 2]
    assert read_new_metrics(run, cache) == (cache, False)
    with metrics.open("a") as handle:
        handle.write('{"step": 3, "loss": 0.5}\n{"step": 4, "lo')  # a line still being written
    cache, changed = read_new_metrics(run, cache)
    assert [r["step"] for r in cache["rows"]] == [1, 2, 3]
    metrics.write_text('{"step": 1, "loss": 0.69}\n')  # a resumed run rewrote the file shorter
    cache, changed = read_new_metrics(run, cache)
    assert [r["step"] for r in cache["rows"]] == [1]
