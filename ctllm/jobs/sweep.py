"""A sweep: every combination of a grid of config values as its own queued training job on one device set.

``loss_type=sigmoid,ipo beta=0.1,0.5`` is a grid of 2 x 2 = 4 runs, named ``<sweep>-<i>-<k=v>...`` after the
fields that vary. Values are typed and checked by TrainConfig itself (errors name the field) before any job
starts. The sweep is recorded in ``<data_dir>/sweeps/<name>.json`` (its runs and their latest job ids), so that it
can be listed, cancelled and resumed from the CLI or the app, by any process.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.dpo.config import TrainConfig, convert_value
from ctllm.dpo.presets import resolve_config
from ctllm.errors import UserError
from ctllm.jobs.devices import parse_devices
from ctllm.jobs.manager import JobManager
from ctllm.jobs.table import CANCELLED, FAILED, QUEUED, Job
from ctllm.jobs.train_job import TrainJobPlan, start_train_job
from ctllm.runs import STATUS_NAME
from ctllm.settings import Settings

SWEEPS_DIR = "sweeps"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_RUNS = 64  # a typo such as lr=1,2,3,4,5,6,7,8 x 8 other fields should not queue thousands of jobs

Grid = dict[str, list[Any]]


def sweeps_dir(settings: Settings) -> Path:
    return settings.data_dir / SWEEPS_DIR


def parse_grid(items: Iterable[str]) -> Grid:
    """``["beta=0.1,0.5", "loss_type=ipo"]`` -> ``{"beta": [0.1, 0.5], "loss_type": ["ipo"]}``, each value typed
    as its field. UserError names the item or field at fault."""
    grid: Grid = {}
    hints = typing.get_type_hints(TrainConfig)
    for item in items:
        key, sep, text = str(item).partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name or not text.strip():
            raise UserError(f"grid item {item!r}: expected FIELD=VALUE[,VALUE...]")
        if name in grid:
            raise UserError(f"grid field '{name}' is given twice")
        if name in ("run_name", "output_dir"):
            raise UserError(f"grid field '{name}': a sweep names its runs itself")
        if typing.get_origin(hints.get(name)) is list:
            raise UserError(f"grid field '{name}' holds a list; a sweep varies single values only")
        values = [convert_value(name, part.strip(), origin="grid") for part in text.split(",") if part.strip()]
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"grid field '{name}' repeats a value: {text}")
        grid[name] = values
    if not grid:
        raise UserError("a sweep needs a grid: FIELD=VALUE[,VALUE...] ...")
    return grid


def expand(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last field varying fastest."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def _short(value: Any) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rsplit("/", 1)[-1])[:24] or "_"


def run_names(sweep: str, combos: Sequence[Mapping[str, Any]]) -> list[str]:
    """``<sweep>-<i>-<k=v>...`` with only the fields that vary; ``=`` is written ``_`` (a run name is a folder)."""
    varying = [name for name in (combos[0] if combos else {}) if len({repr(c[name]) for c in combos}) > 1]
    return [
        "-".join([sweep, str(i), *(f"{name}_{_short(combo[name])}" for name in varying)])
        for i, combo in enumerate(combos, start=1)
    ]


@dataclass
class SweepRun:
    name: str
    overrides: dict[str, Any]
    job_id: int | None = None


@dataclass
class Sweep:
    name: str
    preset: str
    grid: Grid
    devices: str
    runs: list[SweepRun] = field(default_factory=list)
    owner: str = ""
    created: float = 0.0
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset, "grid": self.grid, "devices": self.devices,
                "owner": self.owner, "created": self.created, "cancelled": self.cancelled,
                "runs": [vars(run) for run in self.runs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        runs = [SweepRun(str(r["name"]), dict(r.get("overrides") or {}), r.get("job_id")) for r in data["runs"]]
        return cls(str(data["name"]), str(data.get("preset") or ""), dict(data["grid"]), str(data["devices"]), runs,
                   str(data.get("owner") or ""), float(data.get("created") or 0.0), bool(data.get("cancelled")))


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise UserError(f"sweep name {name!r}: use letters, digits, '-' and '_' (starting with a letter or digit)")
    return name


def save(settings: Settings, sweep: Sweep) -> Path:
    path = sweeps_dir(settings) / f"{sweep.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sweep.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load(settings: Settings, name: str) -> Sweep:
    path = sweeps_dir(settings) / f"{check_name(name)}.json"
    try:
        return Sweep.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UserError(f"no sweep named {name!r} (see: python -m ctllm sweep --list)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a sweep record: {error}") from None


def list_sweeps(settings: Settings) -> list[Sweep]:
    """Newest first; a file that is not a sweep record is skipped."""
    sweeps = []
    for path in sweeps_dir(settings).glob("*.json"):
        try:
            sweeps.append(load(settings, path.stem))
        except UserError:
            continue
    return sorted(sweeps, key=lambda s: s.created, reverse=True)


def plan_sweep(name: str, preset: str, grid: Grid, devices: str = "cpu") -> tuple[Sweep, list[TrainJobPlan]]:
    """The sweep and one validated plan per combination; nothing starts. Each combination is validated whole
    (defaults < preset < grid values), so a value another one makes invalid is refused here, naming the field."""
    check_name(name)
    combos = expand(grid)
    if len(combos) > MAX_RUNS:
        raise UserError(f"the grid makes {len(combos)} runs; at most {MAX_RUNS} per sweep")
    devices = parse_devices(devices)
    sweep = Sweep(name, preset, {k: list(v) for k, v in grid.items()}, devices, created=time.time())
    sweep.runs = [SweepRun(run_name, dict(combo)) for run_name, combo in zip(run_names(name, combos), combos,
                                                                                strict=True)]
    return sweep, [run_plan(sweep, run) for run in sweep.runs]


def run_plan(sweep: Sweep, run: SweepRun) -> TrainJobPlan:
    """One run's validated plan: defaults < preset < its grid values."""
    overrides = {**run.overrides, "run_name": run.name}
    try:
        config = resolve_config(sweep.preset or None, None, overrides)
    except UserError as error:
        raise UserError(f"sweep run {run.name}: {error}") from None
    return TrainJobPlan(sweep.preset, config, overrides, sweep.devices, 1)


def start_sweep(jobs: JobManager, settings: Settings, sweep: Sweep, plans: Sequence[TrainJobPlan]) -> Sweep:
    """Queue every run (they start one after another as the device set frees). Refused whole when the sweep's name
    or a run's folder is taken."""
    if (sweeps_dir(settings) / f"{sweep.name}.json").exists():
        raise UserError(f"sweep name {sweep.name!r} is taken: pick another, or --resume it")
    for run in sweep.runs:
        if (settings.runs_dir / run.name / STATUS_NAME).exists():
            raise UserError(f"run {run.name!r} exists already: pick another sweep name")
    save(settings, sweep)  # first, so a sweep cut short half-way is still listed and can be cancelled
    for run, plan in zip(sweep.runs, plans, strict=True):
        job, _ = start_train_job(jobs, plan, settings, owner=sweep.owner)
        run.job_id = job.id
        save(settings, sweep)
    return sweep


def sweep_jobs(jobs: JobManager, sweep: Sweep) -> list[Job | None]:
    """Each run's latest job (None for a run not queued yet)."""
    return [jobs.get(run.job_id) if run.job_id is not None else None for run in sweep.runs]


def cancel_sweep(jobs: JobManager, settings: Settings, name: str) -> Sweep:
    """Drop the queued runs and stop the running ones (SIGTERM: they save a checkpoint)."""
    sweep = load(settings, name)
    sweep.cancelled = True
    save(settings, sweep)  # first: nothing that polls meanwhile should take the sweep for a live one
    live = [job for job in sweep_jobs(jobs, sweep) if job is not None and not job.final]
    # The queued ones first: a running run that stops at once would otherwise free the devices for the next
    # queued run, which the manager would start before its turn to be cancelled came.
    for job in sorted(live, key=lambda job: job.state != QUEUED):
        try:
            jobs.cancel(job.id)
        except UserError:
            pass  # it ended meanwhile
    return sweep


def resume_sweep(jobs: JobManager, settings: Settings, name: str) -> Sweep:
    """Queue again every run that failed or was cancelled: from its last checkpoint when it had started, afresh
    when it was cancelled while still queued. Finished and live runs are left alone."""
    sweep = load(settings, name)
    for run, job in zip(sweep.runs, sweep_jobs(jobs, sweep), strict=True):
        if job is None:  # the sweep was cut short before this run was queued
            again, _ = start_train_job(jobs, run_plan(sweep, run), settings, owner=sweep.owner)
        elif job.state not in (FAILED, CANCELLED):
            continue
        elif job.started is None:
            again = jobs.start(job.argv, job.run_dir, devices=job.devices, kind=job.kind, name=job.name,
                               owner=job.owner, env=job.env, cwd=job.cwd, resumed_from=job.id)
        else:
            again = jobs.resume(job.id)
        run.job_id = again.id
    sweep.cancelled = False
    save(settings, sweep)
    return sweep
