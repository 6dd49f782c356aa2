"""Scoring a collection with a finished run as a background job: the real ``python -m ctllm score`` process, started
through the JobManager, keeps a status.json with its phase, and its scores become sortable in the Pairs tab
(``Store.score_names`` lists them under the run's name)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctllm.errors import UserError
from ctllm.jobs import JobManager
from ctllm.jobs.score_job import SCORES_NAME, plan_score, start_score_job
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store
from ctllm.runs import read_status
from ctllm.settings import Settings
from ctllm.ui.context import AppContext
from ctllm.ui.train_tab import TrainHandlers
from tests.test_jobs import wait_for
from tests.tiny_models import build_tiny_model

PAIRS = [
    Pair(user_prompt("What is 2 + 2?"), "4.", "5."),
    Pair(user_prompt("Name a colour."), "Blue.", "I refuse."),
    Pair(user_prompt("Say hi."), "Hi!", "No."),
]


@pytest.fixture
def finished_run(settings: Settings, embedded_model_dir: Path) -> str:
    """A run folder as a finished full fine-tuning run leaves it: config.yaml (model, β) and final/ (the model)."""
    reference = build_tiny_model(settings.models_dir / "tiny-ref", embedded_model_dir, seed=0)
    run_dir = settings.runs_dir / "tinyrun"
    build_tiny_model(run_dir / "final", embedded_model_dir, seed=5)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": str(reference), "ref_model": "", "beta": 0.5}))
    with Store(settings.db_path) as store:
        store.create_collection("demo")
        store.add_pairs("demo", PAIRS)
    return "tinyrun"


def test_the_plan_comes_from_the_run(settings: Settings, finished_run: str) -> None:
    plan = plan_score(settings, finished_run, "demo")
    assert (plan.model, plan.beta, plan.score_name) == ("run:tinyrun", 0.5, "tinyrun")
    assert plan.ref == str(settings.models_dir / "tiny-ref")  # no ref_model: the run's SFT model
    with pytest.raises(UserError, match="no collection"):
        plan_score(settings, finished_run, "nope")
    with pytest.raises(UserError, match="no trained model"):
        plan_score(settings, "other-run", "demo")
    with pytest.raises(UserError, match="not a run name"):
        plan_score(settings, "../etc", "demo")


def test_a_score_job_saves_scores_the_pairs_tab_can_sort_by(settings: Settings, finished_run: str) -> None:
    jobs = JobManager(settings, grace_s=5.0)
    job = start_score_job(jobs, settings, finished_run, "demo")
    assert job.kind == "score" and "--run-dir" in job.argv
    done = wait_for(lambda: jobs.get(job.id).final and jobs.get(job.id), timeout=300, what="the score job")
    assert done.state == "finished", jobs.watch(job.id).log_tail
    status = read_status(done.run_dir)
    assert status["state"] == "finished" and status["phase"] == "scoring"
    assert status["phase_done"] == status["phase_total"] == 2 * len(PAIRS)  # both models' passes
    assert len((done.run_dir / SCORES_NAME).read_text().splitlines()) == len(PAIRS)
    with Store(settings.db_path) as store:
        assert store.score_names("demo") == [("tinyrun", len(PAIRS))]

    # The Train tab shows the job's progress line and where the scores went.
    h = TrainHandlers(AppContext(settings))
    shown = h.poll(None, {}, {}, None, job.id)["score_status"]
    assert "finished" in shown and "Run for score sort" in shown
    assert h.load()["score_job"] == job.id  # a page opened later shows the newest scoring job
