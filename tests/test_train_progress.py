"""The Train tab's Gradio-free parts: phases in status.json and how they read, the log without bar fragments, the
loss plot with an NLL term, user errors as one log line, and the training job's form logic."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import gradio as gr
import pytest

from ctllm.errors import UserError
from ctllm.jobs.log_text import readable_log
from ctllm.jobs.table import Job
from ctllm.jobs.train_job import job_devices, new_run_name, plan_train_job
from ctllm.runs import RunDir, read_status
from ctllm.ui import plots
from ctllm.ui.handlers import bind, keyed
from ctllm.ui.job_progress import phase_text, progress_text


def job(state: str = "running", started: float = 100.0, finished: float | None = None) -> Job:
    return Job(1, "train", "demo", (), "", "", "cpu", Path("/x"), state, 0.0, started=started, finished=finished)


def test_set_phase_writes_the_contract_keys(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.set_phase("tokenizing", 5, 20)
    status = read_status(tmp_path)
    assert (status["phase"], status["phase_done"], status["phase_total"]) == ("tokenizing", 5, 20)
    run.set_phase("training")
    assert read_status(tmp_path)["phase_done"] is None
    with pytest.raises(ValueError):
        run.set_phase("napping")


def test_phase_progress_writes_at_most_once_per_interval_and_always_the_end(tmp_path: Path) -> None:
    now = [0.0]
    progress = RunDir(tmp_path).phase_progress("reference", interval_s=1.0, clock=lambda: now[0])
    writes = []
    for done in range(1, 11):  # ten batches within 0.9 s, then the last one
        now[0] = done * 0.1 - 0.1
        progress(done, 11)
        writes.append(read_status(tmp_path).get("phase_done"))
    assert writes == [1] * 10  # only the first batch was written
    progress(11, 11)
    assert read_status(tmp_path)["phase_done"] == 11


def test_preparation_shows_its_step_and_percentage() -> None:
    status = {"phase": "reference", "phase_done": 84, "phase_total": 200}
    assert phase_text(status) == "preparing: step 4 of 4, reference pass 42% (84 / 200)"
    text = progress_text(job(), status, None, now=235.0)
    assert "preparing: step 4 of 4, reference pass 42% (84 / 200)" in text and "elapsed 2:15" in text
    assert "preparing: step 2 of 4, loading models" in progress_text(job(), {"phase": "loading"}, None, 101.0)
    assert "preparing…" in progress_text(job(), {}, None, 101.0)  # an older run that writes no phase
    training = {"phase": "training", "step": 3, "total_steps": 10}
    assert "step 3 / 10 (30%)" in progress_text(job(), training, {"step": 3}, 130.0)
    evaluating = {"phase": "evaluating", "phase_done": 1, "phase_total": 4, "step": 10, "total_steps": 10}
    assert "evaluating 25% (1 / 4)" in progress_text(job(), evaluating, None, 130.0)
    done = progress_text(job("finished", finished=160.0), {**evaluating, "state": "finished"}, None, 999.0)
    assert "evaluating" not in done and "elapsed 1:00" in done
    assert phase_text({"phase": "scoring", "phase_done": 3, "phase_total": 6}, numbered=False) == (
        "scoring pairs 50% (3 / 6)"
    )


def test_bar_fragments_glued_to_log_lines_are_cut() -> None:
    tail = (
        "2024-05-01 12:00:00 INFO plan: 20 steps\n"
        "DPO:  10%|█         | 2/20 [00:01<00:09,  2.00step/s, loss=0.6931]2024-05-01 12:00:01 INFO step 2/20 loss\n"
        "DPO:  15%|█▌        | 3/20 [00:02<00:09,  2.00step/s, loss=0.6900]"
    )
    assert readable_log(tail).split("\n") == [
        "2024-05-01 12:00:00 INFO plan: 20 steps",
        "2024-05-01 12:00:01 INFO step 2/20 loss",
        "DPO:  15%|█▌        | 3/20 [00:02<00:09,  2.00step/s, loss=0.6900]",  # the bar's latest state stays
    ]


def test_with_an_nll_term_the_loss_plot_shows_dpo_and_nll_apart() -> None:
    rows = [
        {"step": 1, "loss": 0.6931 + 0.5 * 7.6, "nll_loss": 7.6},
        {"step": 2, "loss": 0.6 + 0.5 * 7.0, "nll_loss": 7.0},
    ]
    derived = plots.with_dpo_loss(rows, 0.5)
    assert [round(r["dpo_loss"], 4) for r in derived] == [0.6931, 0.6]
    loss = plots.metric_figures(derived)[0]
    assert [trace.name for trace in loss.data] == ["DPO", "NLL"]
    assert loss.data[1].yaxis == "y2" and "NLL" in loss.layout.title.text
    plain = plots.metric_figures([{"step": 1, "loss": 0.69}])[0]
    assert [trace.name for trace in plain.data] == ["train"]


def test_user_errors_reach_the_log_as_one_line(caplog: pytest.LogCaptureFixture) -> None:
    def handler(text: str) -> str:
        if not text:
            raise UserError("The prompt is empty")
        if text == "gr":
            raise gr.Error("Type a message first.")
        return text

    wrapped = bind(handler)
    with caplog.at_level(logging.INFO, logger="ctllm.ui"), pytest.raises(gr.Error) as raised:
        wrapped("")
    assert raised.value.message == "The prompt is empty" and raised.value.print_exception is False
    with pytest.raises(gr.Error) as raised:
        wrapped("gr")
    assert raised.value.print_exception is False
    assert [r.getMessage() for r in caplog.records] == ["handler: The prompt is empty"]


def test_keyed_handlers_return_values_by_component() -> None:
    components = {"status": object(), "log": object()}
    wrapped = keyed(bind(lambda: {"status": "ok"}), components)
    assert wrapped() == {components["status"]: "ok"}
    with pytest.raises(KeyError):
        keyed(bind(lambda: {"nope": 1}), components)()


def test_form_logic_lives_outside_the_tab(tmp_path: Path) -> None:
    plan = plan_train_job({"preset": "cpu-demo", "beta": 0.25, "devices": "cpu", "num_processes": 1, "data": "x"})
    assert plan.overrides["beta"] == 0.25 and plan.overrides["data"] == "collection:x"
    with pytest.raises(UserError, match="'lr' needs a value"):
        plan_train_job({"preset": "cpu-demo", "lr": None})
    with pytest.raises(UserError, match="num_processes"):
        job_devices("cpu", 1.5)
    moment = datetime(2024, 5, 1, 12, 0, 0)
    (tmp_path / "dpo-20240501-120000").mkdir()
    assert new_run_name(tmp_path, moment) == "dpo-20240501-120000-2"
    assert json.dumps(plan.config.to_dict())  # a whole, validated config
