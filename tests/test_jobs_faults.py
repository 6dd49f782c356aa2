"""Training jobs under faults, seen the way a user sees them: through the running app and the Train tab's own
polling handler (the one its ``gr.Timer`` calls every 2 s), with gradio_client.

- A job killed -9 is shown failed with its log tail, the app keeps serving, and a new job starts and finishes.
- The app killed and started again during a job re-attaches to it: shown running, its curves keep growing, and it
  finishes.

Times are printed (run with ``-s``), never asserted: states are awaited with generous timeouts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client

from ctllm.dpo.presets import load_preset
from ctllm.ui.train_tab import FORM_NAMES
from tests.e2e.conftest import RunningApp, stop_app
from tests.hosted_app import AUTH_ENV, USERS, start_hosted_app

POLL_API = "/train_poll"  # TrainHandlers.poll, the Train tab's timer handler
FINAL = ("finished", "failed", "cancelled")
WAIT_S = 420  # a loaded 2-core machine takes minutes to import torch and start a run; states are awaited, not timed
_STATE = re.compile(r"\*\*Job (\d+)\*\* · run .*? · \*\*(\w+)\*\*")
_STEP = re.compile(r"step (\d+) / (\d+)")


@dataclass(frozen=True)
class Poll:
    """What one call of the Train tab's timer handler showed."""

    job: int | None
    state: str | None
    step: int
    status: str
    log: str
    points: int | None  # points on the loss curve when the figure was redrawn, None when it was left as it was

    @classmethod
    def parse(cls, outputs: tuple) -> Poll:
        status, loss_figure, log = str(outputs[0]), outputs[1], str(outputs[5] or "")
        match = _STATE.search(status)
        step = _STEP.search(status)
        return cls(
            job=int(match.group(1)) if match else None,
            state=match.group(2) if match else None,
            step=int(step.group(1)) if step else 0,
            status=status,
            log=log,
            points=_curve_points(loss_figure),
        )


def _curve_points(figure: object) -> int | None:
    if not isinstance(figure, dict) or "plot" not in figure:
        return None  # gr.skip(): no new metric line since the last poll
    traces = json.loads(figure["plot"]).get("data") or []
    # "DPO" when the run adds an NLL term (the loss plot then draws DPO and NLL apart), else "train"
    return sum(len(trace.get("x") or []) for trace in traces if trace.get("name") in ("train", "DPO"))


def poll(client: Client) -> Poll:
    return Poll.parse(client.predict(api_name=POLL_API))


def wait_for(client: Client, what: str, done: Callable[[Poll], bool], interval: float = 0.25) -> tuple[Poll, float]:
    """Poll until ``done``; (the poll that satisfied it, seconds waited)."""
    started = time.monotonic()
    while True:
        shown = poll(client)
        if done(shown):
            return shown, time.monotonic() - started
        if time.monotonic() - started > WAIT_S:
            pytest.fail(f"not {what} after {WAIT_S} s; last shown:\n{shown.status}\n--- log ---\n{shown.log[-3000:]}")
        time.sleep(interval)


def write_pairs(path: Path, count: int = 24) -> Path:
    rows = [
        {"prompt": f"Question {i}: how do I stay safe online?", "chosen": f"Strong passwords ({i}).", "rejected": "No."}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def train_form(model_dir: Path, data: Path, run_name: str, max_steps: int) -> dict[str, object]:
    """The Train form's inputs (``/train_start`` takes them by name), from the cpu-demo preset sized down to the
    tiny model: a few pairs, short sequences, no precomputed reference, no end-of-run evaluation."""
    config = load_preset("cpu-demo")
    values: dict[str, object] = {name: getattr(config, name, None) for name in FORM_NAMES}
    values.update(
        preset="cpu-demo",
        model=str(model_dir),
        ref_model="",
        data=str(data),
        eval_data="",
        run_name=run_name,
        devices="cpu",
        num_processes=1,
        max_steps=max_steps,
        batch_size=2,
        max_length=48,
        logging_every=1,
        eval_every=0,
        save_every=0,
        precompute_ref=False,
        final_eval=False,
    )
    return {name: values[name] for name in FORM_NAMES}


def start_job(client: Client, form: dict[str, object]) -> None:
    _command, message, *_ = client.predict(api_name="/train_start", **form)  # the job id goes to a gr.State
    assert "Started job" in str(message), message


def job_group(data_dir: Path, job_id: int) -> int:
    with sqlite3.connect(f"file:{data_dir / 'studio.sqlite'}?mode=ro", uri=True) as db:
        pgid = db.execute("SELECT pgid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert pgid, job_id
    return int(pgid)


def kill_group_quietly(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def studio_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A data dir holding the tiny model (typed paths must stay inside it) and a small pairs file."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    shutil.copytree(tiny_model_dir, data_dir / "models" / "tiny")
    write_pairs(data_dir / "pairs.jsonl")
    return data_dir


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups of jobs a test started: whatever happens, none outlives the test."""
    started: list[int] = []
    yield started
    for pgid in started:
        kill_group_quietly(pgid)


def admin(app: RunningApp) -> Client:
    return Client(app.url, auth=("admin1", USERS["admin1"]), verbose=False)


def test_a_job_killed_9_is_shown_failed_and_the_app_goes_on(
    tmp_path: Path, studio_dir: Path, groups: list[int]
) -> None:
    app = start_hosted_app(tmp_path, AUTH_ENV, data_dir=studio_dir)
    try:
        client = admin(app)
        model, data = studio_dir / "models" / "tiny", studio_dir / "pairs.jsonl"
        start_job(client, train_form(model, data, "doomed", max_steps=100_000))
        training, _ = wait_for(client, "training", lambda p: p.state == "running" and p.step >= 1)
        pgid = job_group(studio_dir, training.job)
        groups.append(pgid)

        os.killpg(pgid, signal.SIGKILL)
        failed, seconds = wait_for(client, "shown failed", lambda p: p.state in FINAL)
        print(f"\nkill -9 of job {training.job} at step {training.step}: shown failed {seconds:.2f} s later")
        assert failed.state == "failed", failed.status
        assert "killed (SIGKILL)" in failed.status, failed.status
        assert f"step {training.step}/" in failed.log and "failed" in failed.log.splitlines()[-1], failed.log[-2000:]

        # The app goes on: it answers, and a new job starts and finishes.
        assert "admin1" in str(client.predict(api_name="/whoami"))
        start_job(client, train_form(model, data, "after", max_steps=2))
        done, seconds = wait_for(client, "finished", lambda p: p.job != training.job and p.state in FINAL, 1.0)
        print(f"the next job: {done.state} after {seconds:.1f} s")
        assert done.state == "finished", done.status + "\n" + done.log[-2000:]
        assert done.step == 2
    finally:
        stop_app(app)


def test_an_app_restarted_during_a_job_reattaches_and_the_curves_go_on(
    tmp_path: Path, studio_dir: Path, groups: list[int]
) -> None:
    app = start_hosted_app(tmp_path, AUTH_ENV, data_dir=studio_dir)
    restarted: RunningApp | None = None
    try:
        client = admin(app)
        model, data = studio_dir / "models" / "tiny", studio_dir / "pairs.jsonl"
        # Enough steps that the tiny model (about 18 steps/s on a quiet 2-core machine) is still training when held:
        # with 6 steps it sometimes finished between the poll that saw step 1 and the SIGSTOP.
        steps = 200
        start_job(client, train_form(model, data, "survivor", max_steps=steps))
        training, _ = wait_for(client, "training", lambda p: p.state == "running" and p.step >= 1)
        pgid = job_group(studio_dir, training.job)
        groups.append(pgid)
        # Held mid-run while the app is down, so the run cannot end before the new app is up on a fast machine.
        os.killpg(pgid, signal.SIGSTOP)

        os.killpg(app.process.pid, signal.SIGKILL)  # the app only: the job runs in its own session
        app.process.wait()
        down = time.monotonic()
        restarted = start_hosted_app(tmp_path, AUTH_ENV, data_dir=studio_dir)
        client = admin(restarted)
        client.predict(api_name="/train_load")  # the Train tab's page load picks the running job
        first = poll(client)
        back = time.monotonic() - down
        print(f"\napp killed at step {training.step}, started again: job shown running {back:.1f} s later")
        assert (first.job, first.state) == (training.job, "running"), first.status
        assert first.step >= training.step and first.points == first.step, (first.status, first.points)
        assert first.step < steps, f"the job ended before it was held: {first.status}"

        os.killpg(pgid, signal.SIGCONT)
        later, _ = wait_for(client, "a new step", lambda p: p.step > first.step)
        assert later.points is not None and later.points > first.points  # the curves were redrawn, longer
        final, seconds = wait_for(client, "finished", lambda p: p.state in FINAL, 1.0)
        print(f"curve {first.points} -> {later.points} points; the job {final.state} {seconds:.1f} s later")
        assert final.state == "finished", final.status + "\n" + final.log[-2000:]
        assert final.step == steps
    finally:
        stop_app(restarted or app)
