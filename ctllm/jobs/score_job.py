"""Scoring a collection with a finished training run, as a background job: ``python -m ctllm score --model run:NAME
--ref REF --pairs COLLECTION --beta B --name NAME ...``, started, watched and cancelled through the JobManager like
a training run.

The run's own config gives the reference and β, so the margins are the run's implicit rewards. The scores are
saved in the store under the run's name: ``Store.score_names(collection)`` then lists it, and the Pairs tab offers
it for sorting. Job folders live in ``<data_dir>/score-jobs/`` (``runs/`` holds training runs only); the process
writes status.json there (phase "loading", then "scoring" with pairs done / total).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.jobs.commands import ctllm_command
from ctllm.jobs.devices import CPU, parse_devices
from ctllm.pairs.store import Store
from ctllm.runs import read_config
from ctllm.settings import Settings

KIND = "score"
JOBS_DIRNAME = "score-jobs"
SCORES_NAME = "scores.jsonl"
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ScorePlan:
    run: str
    collection: str
    model: str  # run:NAME
    ref: str
    beta: float

    @property
    def score_name(self) -> str:
        """The name the scores are saved under, and shown under in the Pairs tab: the run's name."""
        return self.run


def plan_score(settings: Settings, run: str, collection: str) -> ScorePlan:
    """What scoring ``collection`` with ``run`` means: the run's final model against the run's reference, with its
    β. Raises UserError for an unknown or unfinished run, or an unknown collection."""
    run = (run or "").strip()
    if not run:
        raise UserError("Pick a run first: click its row in the job history.")
    if not _RUN_NAME.fullmatch(run) or ".." in run:
        raise UserError(f"not a run name: {run!r}")
    run_dir = settings.runs_dir / run
    if not (run_dir / "final").is_dir():
        raise UserError(f"run {run!r} has no trained model yet (its final/ folder is written when it finishes)")
    config = read_config(run_dir)
    beta = config.get("beta")
    model = str(config.get("model") or "").strip()
    if not isinstance(beta, (int, float)) or beta <= 0 or not model:
        raise UserError(f"run {run!r}: its config.yaml names no model or no β > 0")
    collection = (collection or "").strip()
    if not collection:
        raise UserError("Pick a collection to score.")

    with Store(settings.db_path) as store:
        if store.find_collection(collection) is None:
            raise UserError(f"no collection named {collection!r}")
    ref = str(config.get("ref_model") or "").strip() or model
    return ScorePlan(run, collection, f"run:{run}", ref, float(beta))


def new_job_dir(settings: Settings, plan: ScorePlan, now: datetime | None = None) -> Path:
    """A fresh folder: ``score-<run>-<collection>-<timestamp>`` (names made file-name safe)."""
    slug = "-".join(_UNSAFE.sub("-", part).strip("-")[:30] or "x" for part in (plan.run, plan.collection))
    base = f"score-{slug}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    root = settings.data_dir / JOBS_DIRNAME
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return root / name


def score_argv(plan: ScorePlan, job_dir: Path, settings: Settings, devices: str = CPU) -> list[str]:
    args = ["--model", plan.model, "--ref", plan.ref, "--pairs", plan.collection, "--beta", f"{plan.beta:g}"]
    args += ["--name", plan.score_name, "--out", str(job_dir / SCORES_NAME), "--run-dir", str(job_dir)]
    args += ["--data-dir", str(settings.data_dir)]
    if parse_devices(devices) == CPU:
        args += ["--device", CPU]
    return ctllm_command("score", args)


def start_score_job(
    jobs: Any, settings: Settings, run: str, collection: str, *, devices: str = CPU, owner: str = ""
) -> Any:
    """Check, then start (or queue, while another job holds ``devices``) a scoring job through ``jobs``."""
    plan = plan_score(settings, run, collection)
    job_dir = new_job_dir(settings, plan)
    argv = score_argv(plan, job_dir, settings, devices)
    return jobs.start(
        argv, job_dir, devices=devices, kind=KIND, name=f"score {plan.collection} with {plan.run}", owner=owner
    )
