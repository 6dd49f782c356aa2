"""Synthesis as a background job: checked before it starts, then a ``python -m ctllm synth ...`` process in its own
folder, started, watched and cancelled through the JobManager exactly like a training run.

Job folders live in ``<data_dir>/synth-jobs/`` (not ``runs/``, whose folders are training runs and model choices).
The process writes ``status.json`` there (state, step / total_steps in prompts, added, filtered, pairs_per_minute,
eta_s, and the summary at the end) and its log to ``train.log``, the JobManager's log name for every job.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.models.registry import resolve_spec
from ctllm.settings import Settings
from ctllm.synth.prompts import read_prompt_file
from ctllm.synth.run import SynthOptions, synth_command

JOBS_DIRNAME = "synth-jobs"
KIND = "synth"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def jobs_dir(settings: Settings) -> Path:
    return settings.data_dir / JOBS_DIRNAME


def new_job_dir(settings: Settings, collection: str) -> Path:
    """A fresh folder name: ``synth-<collection>-<timestamp>`` (the collection made file-name safe)."""
    slug = _UNSAFE.sub("-", collection).strip("-").removeprefix("synth-")[:40] or "pairs"
    base = f"synth-{slug}-{datetime.now():%Y%m%d-%H%M%S}"
    root = jobs_dir(settings)
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return root / name


@dataclass(frozen=True)
class Preflight:
    """What a synthesis will work on, known before any model loads."""

    prompts: int
    with_answer: int
    bad_rows: int
    weak: str  # display labels of the resolved models
    strong: str | None

    def describe(self) -> str:
        text = f"{self.prompts} prompts ({self.with_answer} with an answer of their own"
        text += f", {self.bad_rows} bad rows skipped)" if self.bad_rows else ")"
        text += f"; rejected from {self.weak}"
        if self.strong:
            text += f", missing chosen answers from {self.strong}"
        return text


def preflight(options: SynthOptions, settings: Settings, max_bytes: int | None = None) -> Preflight:
    """Check everything that can fail before the job starts: the options, the models (resolved inside the allowed
    folders, never loaded), the prompts file (size, format, at least one usable prompt) and whether chosen answers
    can be had at all. Raises UserError naming the field or file at fault."""
    options.validate()
    if options.max_new_tokens > settings.max_new_tokens_limit:
        raise UserError(
            f"--max-new-tokens {options.max_new_tokens} is over this server's limit of {settings.max_new_tokens_limit}"
        )
    labels = {}
    for field in ("weak", "strong"):
        spec = getattr(options, field)
        if spec:
            try:
                labels[field] = resolve_spec(spec, settings).label
            except UserError as error:
                raise UserError(f"{field} model: {error}") from None
    path = Path(options.prompts)
    if max_bytes is not None and path.is_file() and path.stat().st_size > max_bytes:
        raise UserError(
            f"prompts file {path.name} is {path.stat().st_size / 2**20:.1f} MB, over the limit of {max_bytes >> 20} MB"
        )
    source = read_prompt_file(path)
    with_answer = sum(item.answer is not None for item in source.items)
    if not options.strong and not with_answer:
        raise UserError(
            f"{path.name}: no prompt has an answer of its own, so the chosen answers must come from a strong model: "
            "choose one"
        )
    return Preflight(len(source.items), with_answer, len(source.errors), labels["weak"], labels.get("strong"))


def start_synth_job(
    jobs: Any,
    options: SynthOptions,
    settings: Settings,
    *,
    devices: str = "cpu",
    owner: str = "",
    copy_prompts: bool = False,
    run_dir: Path | None = None,
) -> Any:
    """Start (or queue, while another job holds ``devices``) a synthesis job through ``jobs`` (a JobManager).

    ``copy_prompts``: copy the prompts file into the job's folder first and read it from there (an upload lives in
    a temporary folder that may be cleaned before the job, or a resume of it, reads it)."""
    options.validate()
    run_dir = Path(run_dir) if run_dir is not None else new_job_dir(settings, options.collection)
    if (run_dir / "status.json").exists():
        raise UserError(f"job folder {run_dir} is taken: resume its job instead")
    run_dir.mkdir(parents=True, exist_ok=True)
    if copy_prompts:
        source = Path(options.prompts)
        target = run_dir / source.name
        shutil.copyfile(source, target)
        options = replace(options, prompts=str(target))
    return jobs.start(synth_command(options, run_dir), run_dir, devices=devices, kind=KIND, owner=owner)
