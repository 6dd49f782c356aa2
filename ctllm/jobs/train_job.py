"""A training run as a background job: a form's values become a validated TrainConfig, checked before anything
starts, then ``python -m ctllm train --preset P --FIELD value ...`` (the exact line "Show command" prints) started
through the JobManager in ``<runs_dir>/<run name>``.

No Gradio here: the Train tab and any other caller hand in plain values.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ctllm.dpo.config import COLLECTION_PREFIX, TrainConfig, convert_value
from ctllm.dpo.loss_fields import hidden_fields, settle_hidden
from ctllm.dpo.presets import load_preset, resolve_config
from ctllm.errors import UserError
from ctllm.jobs.commands import ctllm_command
from ctllm.jobs.devices import CPU, parse_devices
from ctllm.jobs.manager import settings_env
from ctllm.models.registry import resolve_spec
from ctllm.runs import STATUS_NAME
from ctllm.settings import Settings

KIND = "train"
RUN_NAME_PLACEHOLDER = "<chosen at start>"  # the run name in "Show command" before a run names itself
# Form values that may stay empty (the preset's or the run's own choice applies); every other TrainConfig field
# in a form needs a value.
OPTIONAL_TEXT = ("model", "ref_model", "data", "eval_data", "run_name")
OPTIONAL_LISTS = ("loss_weights",)  # empty: the field's default, []
JOB_KEYS = ("preset", "devices", "num_processes")  # in the form, but not config fields


def data_spec(value: str) -> str:
    """A collection name becomes ``collection:NAME``; a file path stays as it is."""
    value = (value or "").strip()
    if not value or value.startswith(COLLECTION_PREFIX) or any(ch in value for ch in "/\\."):
        return value
    return COLLECTION_PREFIX + value


def form_to_config(form: Mapping[str, Any]) -> tuple[str, TrainConfig, dict[str, Any]]:
    """(preset, validated config, overrides relative to the preset). Raises UserError naming the field.

    The loss's hyperparameters that the chosen loss does not use (the form hides them) keep the preset's value, or
    their default where the loss would refuse that (ctllm.dpo.loss_fields)."""
    preset = form.get("preset") or ""
    base = load_preset(preset) if preset else TrainConfig()
    hidden = hidden_fields(str(form.get("loss_type") or base.loss_type),
                           str(form.get("f_divergence_type") or base.f_divergence_type))
    values: dict[str, Any] = {}
    for name, value in form.items():
        if name in JOB_KEYS or name not in TrainConfig.__dataclass_fields__ or name in hidden:
            continue
        if name in OPTIONAL_TEXT:
            text = str(value or "").strip()
            values[name] = data_spec(text) if name in ("data", "eval_data") else text
        elif name == "eval_fraction":
            if value is not None:
                values[name] = value
        elif name in OPTIONAL_LISTS and (value is None or value == ""):
            values[name] = []
        elif value is None or value == "":
            raise UserError(f"config field '{name}' needs a value")
        else:
            values[name] = value
    overrides = {}
    for name, value in values.items():
        converted = convert_value(name, value, origin="form")
        if converted != getattr(base, name):
            overrides[name] = converted
    overrides = settle_hidden(base, overrides, hidden)
    config = resolve_config(preset or None, None, overrides)
    return preset, config, overrides


def job_devices(devices: Any, processes: Any) -> tuple[str, int]:
    """(canonical devices, process count) from the form; errors name the field ('devices', 'num_processes')."""
    text = str(devices or CPU).strip() or CPU
    try:
        parse_devices(text)
    except UserError as error:
        raise UserError(f"config field 'devices': {error}") from None
    if processes is None or processes == "":
        processes = 1
    try:
        count = float(processes)
    except (TypeError, ValueError):
        count = 0.0
    if count < 1 or not count.is_integer():
        raise UserError(f"config field 'num_processes' = {processes!r} must be a whole number >= 1")
    return text, int(count)


def check_models(config: TrainConfig, settings: Settings) -> None:
    """Refuse before start what the job would only find out inside: a missing or out-of-bounds model, a hub id
    while offline, a model whose own code the operator has not allowed."""
    for name in ("model", "ref_model"):
        spec = getattr(config, name)
        if spec:
            try:
                resolve_spec(spec, settings)
            except UserError as error:
                raise UserError(f"config field '{name}': {error}") from None


def flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def train_argv(preset: str, overrides: Mapping[str, Any], data_dir: Path, devices: str, processes: int) -> list[str]:
    """The job's command: ``python -m ctllm train`` (or accelerate launch ... -m ctllm train) with the overrides."""
    args: list[str] = ["--preset", preset] if preset else []
    for name, value in overrides.items():
        args += [f"--{name}", flag_value(value)]
    args += ["--data-dir", str(data_dir)]
    if devices.strip().lower() == CPU:
        args += ["--device", CPU]
    return ctllm_command("train", args, processes)


def shown_command(argv: list[str], devices: str, env: Mapping[str, str] | None = None) -> str:
    """The command line a user can paste: ``python`` for the interpreter, CUDA_VISIBLE_DEVICES when GPUs are named."""
    parts = ["python" if i == 0 and part == sys.executable else part for i, part in enumerate(argv)]
    line = shlex.join(parts)
    prefix = dict(env or {})
    if devices.strip().lower() != CPU:
        prefix["CUDA_VISIBLE_DEVICES"] = parse_devices(devices)
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in prefix.items())
    return f"{assignments} {line}" if assignments else line


def new_run_name(runs_dir: Path, now: datetime | None = None) -> str:
    """``dpo-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``, ... when that folder exists already."""
    base = (now or datetime.now()).strftime("dpo-%Y%m%d-%H%M%S")
    name, n = base, 1
    while (runs_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass(frozen=True)
class TrainJobPlan:
    """Everything about a training job known before it starts."""

    preset: str
    config: TrainConfig
    overrides: dict[str, Any]
    devices: str
    processes: int

    def argv(self, data_dir: Path) -> list[str]:
        return train_argv(self.preset, self.overrides, data_dir, self.devices, self.processes)

    def command(self, settings: Settings) -> str:
        """The line "Show command" prints (a run name not chosen yet is shown as a placeholder)."""
        overrides = self.overrides if self.config.run_name else {**self.overrides, "run_name": RUN_NAME_PLACEHOLDER}
        argv = train_argv(self.preset, overrides, settings.data_dir, self.devices, self.processes)
        return shown_command(argv, self.devices, settings_env(settings))


def plan_train_job(form: Mapping[str, Any]) -> TrainJobPlan:
    """Validate a form (config fields plus preset, devices, num_processes); UserError names the field at fault."""
    preset, config, overrides = form_to_config(form)
    devices, processes = job_devices(form.get("devices"), form.get("num_processes"))
    return TrainJobPlan(preset, config, overrides, devices, processes)


def start_train_job(jobs: Any, plan: TrainJobPlan, settings: Settings, owner: str = "") -> tuple[Any, TrainJobPlan]:
    """Check the models and the run name, then start (or queue) the job through ``jobs`` (a JobManager).

    Returns (job, the plan with the run name filled in)."""
    check_models(plan.config, settings)
    overrides = dict(plan.overrides)
    run_name = overrides.get("run_name") or plan.config.run_name or new_run_name(settings.runs_dir)
    if not plan.config.run_name:
        overrides["run_name"] = run_name
    run_dir = settings.runs_dir / run_name
    if (run_dir / STATUS_NAME).exists():
        raise UserError(f"config field 'run_name' = {run_name!r} is taken: pick another name or resume it")
    plan = replace(plan, overrides=overrides, config=replace(plan.config, run_name=run_name))
    job = jobs.start(plan.argv(settings.data_dir), run_dir, devices=plan.devices, kind=KIND, name=run_name, owner=owner)
    return job, plan
