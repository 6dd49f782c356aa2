"""Sweeps: the grid typed and checked by TrainConfig, its product and run names, and real sweeps of a tiny model
through the job manager (queued on one device set, compared, cancelled and resumed)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from ctllm.cli import main
from ctllm.errors import UserError
from ctllm.evaluate.sweep_table import columns, comparison_rows, sort_rows
from ctllm.jobs import JobManager
from ctllm.jobs.sweep import (
    cancel_sweep,
    expand,
    list_sweeps,
    load,
    parse_grid,
    plan_sweep,
    resume_sweep,
    run_names,
    start_sweep,
    sweep_jobs,
)
from ctllm.settings import Settings
from ctllm.ui import plots
from ctllm.ui.context import AppContext
from ctllm.ui.handlers import bind
from ctllm.ui.sweep_panel import SweepHandlers, grid_items
from tests.conftest import MODEL_CACHE, REPO
from tests.test_jobs import wait_for

# ------------------------------------------------------------------------------------------------ pure parts


def test_grid_values_are_typed_as_their_fields():
    grid = parse_grid(["loss_type=sigmoid,ipo", "beta=0.1, 0.5", "lr=5e-6,1e-5", "max-steps=3", "lora=true,no"])
    assert grid == {"loss_type": ["sigmoid", "ipo"], "beta": [0.1, 0.5], "lr": [5e-6, 1e-5], "max_steps": [3],
                    "lora": [True, False]}
    assert isinstance(grid["max_steps"][0], int) and isinstance(grid["beta"][0], float)


@pytest.mark.parametrize(
    ("items", "names"),
    [
        (["nope=1"], "unknown config field 'nope'"),
        (["beta=0.1,abc"], "config field 'beta' (grid): cannot use 'abc'"),
        (["max_steps=2.5"], "config field 'max_steps'"),
        (["beta"], "grid item 'beta'"),
        (["beta=0.1", "beta=0.2"], "'beta' is given twice"),
        (["beta=0.1,0.1"], "'beta' repeats a value"),
        (["languages=en,zh"], "'languages' holds a list"),
        (["run_name=a,b"], "'run_name': a sweep names its runs"),
        ([], "needs a grid"),
    ],
)
def test_bad_grids_name_the_field(items: list[str], names: str):
    with pytest.raises(UserError) as error:
        parse_grid(items)
    assert names in str(error.value)


def test_a_value_the_config_refuses_is_refused_before_anything_starts():
    with pytest.raises(UserError, match=r"sweep run s-2-loss_type_bogus: config field 'loss_type' = 'bogus'"):
        plan_sweep("s", "cpu-demo", parse_grid(["loss_type=sigmoid,bogus"]))
    with pytest.raises(UserError, match="config field 'beta'"):
        plan_sweep("s", "cpu-demo", parse_grid(["beta=0.1,-1"]))
    with pytest.raises(UserError, match="sweep name 'a b'"):
        plan_sweep("a b", "cpu-demo", parse_grid(["beta=0.1"]))


def test_the_product_and_its_run_names():
    grid = parse_grid(["loss_type=sigmoid,ipo", "beta=0.1,0.5", "lr=5e-6,1e-5", "max_steps=3"])
    combos = expand(grid)
    assert len(combos) == 8 and len({json.dumps(c, sort_keys=True) for c in combos}) == 8
    assert combos[0] == {"loss_type": "sigmoid", "beta": 0.1, "lr": 5e-6, "max_steps": 3}
    assert combos[1]["lr"] == 1e-5 and combos[-1] == {"loss_type": "ipo", "beta": 0.5, "lr": 1e-5, "max_steps": 3}
    names = run_names("sw", combos)
    assert names[0] == "sw-1-loss_type_sigmoid-beta_0.1-lr_5e-06"  # max_steps is the same everywhere: not named
    assert names[7] == "sw-8-loss_type_ipo-beta_0.5-lr_1e-05" and len(set(names)) == 8
    sweep, plans = plan_sweep("sw", "cpu-demo", grid)
    assert [run.name for run in sweep.runs] == names
    assert plans[4].config.loss_type == "ipo" and plans[4].config.run_name == names[4]
    assert plans[4].config.max_steps == 3 and plans[4].config.rpo_alpha == 2.0  # the preset's value stays


def test_sort_rows_keeps_missing_numbers_last():
    rows = [{"run": "a", "x": 0.5}, {"run": "b", "x": None}, {"run": "c", "x": 0.9}, {"run": "d", "x": 0.1}]
    assert [r["run"] for r in sort_rows(rows, "x")] == ["d", "a", "c", "b"]
    assert [r["run"] for r in sort_rows(rows, "x", descending=True)] == ["c", "a", "d", "b"]
    assert [r["run"] for r in sort_rows(rows, "run", descending=True)] == ["d", "c", "b", "a"]


# ------------------------------------------------------------------------------------------------ real jobs


@pytest.fixture
def sweep_settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data",
                    allowed_roots=(tmp_path / "data", MODEL_CACHE, REPO / "assets")).ensure_dirs()


@pytest.fixture
def manager(sweep_settings: Settings):
    jobs = JobManager(sweep_settings, grace_s=60.0)
    yield jobs
    for job in jobs.poll():  # no job outlives its test
        try:
            jobs.cancel(job.id, force=True, wait=True)
        except UserError:
            pass


@pytest.mark.slow
def test_a_two_run_sweep_finishes_with_a_comparison_of_two_rows(
    sweep_settings: Settings, manager: JobManager, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = parse_grid([f"model={tiny_model_dir}", "beta=0.1,0.5", "max_steps=2", "batch_size=2", "max_length=64",
                       "precompute_ref=false", "final_eval_limit=1", "final_eval_max_new_tokens=8"])
    sweep, plans = plan_sweep("tiny", "cpu-demo", grid)
    start_sweep(manager, sweep_settings, sweep, plans)
    first, second = sweep_jobs(manager, load(sweep_settings, "tiny"))
    assert first.state == "running" and second.state == "queued"  # one device set: one after the other
    for job in (first, second):
        done = manager.wait(job.id, timeout=900)
        assert done.state == "finished", done.error
    assert manager.get(second.id).started >= manager.get(first.id).finished

    rows = comparison_rows(manager, sweep_settings, load(sweep_settings, "tiny"))
    assert [row["run"] for row in rows] == ["tiny-1-beta_0.1", "tiny-2-beta_0.5"]
    assert [row["beta"] for row in rows] == [0.1, 0.5] and {row["state"] for row in rows} == {"finished"}
    for row in rows:
        assert 0 <= row["pref_acc_dpo"] <= 1 and 0 <= row["best_eval_acc"] <= 1 and row["time_s"] > 0
    assert main(["sweep", "--data-dir", str(sweep_settings.data_dir), "--table", "tiny", "--sort", "beta",
                 "--desc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep tiny" and lines[1].split() == columns(load(sweep_settings, "tiny"))
    assert [line.split()[0] for line in lines[2:]] == ["tiny-2-beta_0.5", "tiny-1-beta_0.1"]
    assert main(["sweep", "--data-dir", str(sweep_settings.data_dir), "--list"]) == 0
    assert capsys.readouterr().out.startswith("tiny: 2 runs on cpu, preset cpu-demo")

    # The Train tab's Sweep panel: the same table, sorted by any column, and the runs' curves on one chart.
    ctx = AppContext(sweep_settings)
    try:
        shown = SweepHandlers(ctx).show("tiny", "best_eval_acc", True, "loss")
    finally:
        ctx.close()
    table = shown["table"]
    assert table["headers"] == columns(load(sweep_settings, "tiny")) and len(table["value"]) == 2
    accuracies = [row[table["headers"].index("best_eval_acc")] for row in table["value"]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert sorted(trace.name for trace in shown["plot"].data) == ["tiny-1-beta_0.1", "tiny-2-beta_0.5"]
    assert plots.point_count(shown["plot"]) == 4  # 2 steps of each run


@pytest.mark.slow
def test_cancel_stops_the_whole_sweep_and_resume_queues_the_unfinished_runs(
    sweep_settings: Settings, manager: JobManager, tiny_model_dir: Path
) -> None:
    grid = parse_grid([f"model={tiny_model_dir}", "lr=1e-5,2e-5", "epochs=50", "batch_size=1", "max_length=64",
                       "precompute_ref=false", "final_eval=false"])
    start_sweep(manager, sweep_settings, *plan_sweep("long", "cpu-demo", grid))
    first, second = sweep_jobs(manager, load(sweep_settings, "long"))
    run_dir = first.run_dir
    wait_for(lambda: (run_dir / "metrics.jsonl").exists(), timeout=600, what="the first run's first step")

    cancelled = cancel_sweep(manager, sweep_settings, "long")
    assert cancelled.cancelled and [s.cancelled for s in list_sweeps(sweep_settings)] == [True]
    ended = [manager.wait(job.id, timeout=120, until_group_gone=True) for job in (first, second)]
    assert [job.state for job in ended] == ["cancelled", "cancelled"]
    assert ended[1].started is None  # dropped from the queue, never started
    assert list((run_dir / "checkpoints").glob("step-*"))  # the running one saved on its way out

    resumed = resume_sweep(manager, sweep_settings, "long")
    assert not resumed.cancelled
    again = sweep_jobs(manager, resumed)
    assert [job.resumed_from for job in again] == [first.id, second.id]
    assert "--resume" in again[0].argv and "--resume" not in again[1].argv  # the queued one starts afresh
    assert again[0].state == "running" and again[1].state == "queued"
    assert resume_sweep(manager, sweep_settings, "long").runs[0].job_id == again[0].id  # live runs left alone


def test_only_an_admin_starts_cancels_or_resumes_a_sweep_from_the_panel(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth=("ann:1", "boss:2"), admins=("boss",)).ensure_dirs()
    ctx = AppContext(settings)
    try:
        h = SweepHandlers(ctx)
        annotator = gr.Request(username="ann")
        for call in (lambda: h.start("s", "cpu-demo", "beta=0.1,0.5", "cpu", annotator),
                     lambda: h.cancel("s", "run", False, "loss", annotator),
                     lambda: h.resume("s", "run", False, "loss", annotator)):
            with pytest.raises(gr.Error, match="admin"):
                call()
        assert list_sweeps(settings) == [] and ctx.jobs.list_jobs() == []
        with pytest.raises(gr.Error, match="config field 'beta'"):  # as the page gets it
            bind(h.start)("s", "cpu-demo", "beta=0.1,x", "cpu", gr.Request(username="boss"))
    finally:
        ctx.close()
    assert grid_items(" loss_type=sigmoid,ipo\nbeta=0.1,0.5  lr=1e-5 ") == ["loss_type=sigmoid,ipo", "beta=0.1,0.5",
                                                                           "lr=1e-5"]


@pytest.mark.slow
def test_a_sweep_cancelled_as_it_starts_never_starts_its_queued_runs(
    sweep_settings: Settings, manager: JobManager, tiny_model_dir: Path
) -> None:
    grid = parse_grid([f"model={tiny_model_dir}", "beta=0.1,0.2,0.3", "max_steps=2", "batch_size=2",
                       "max_length=64", "final_eval=false"])
    start_sweep(manager, sweep_settings, *plan_sweep("quick", "cpu-demo", grid))
    first, *queued = sweep_jobs(manager, load(sweep_settings, "quick"))
    assert first.state == "running" and [job.state for job in queued] == ["queued", "queued"]
    cancel_sweep(manager, sweep_settings, "quick")  # the first one is still loading: it stops at once
    ended = [manager.wait(job.id, timeout=120, until_group_gone=True) for job in (first, *queued)]
    assert ended[0].final and [(job.state, job.started) for job in ended[1:]] == [("cancelled", None)] * 2
