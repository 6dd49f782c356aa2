"""Train tab: a form that becomes a validated TrainConfig, a background job, and live plots of its metrics.

The job runs ``python -m ctllm train --preset P --FIELD value ...`` (the exact line "Show command" prints)
through the JobManager, in its own process group; the page only reads the run dir, every 2 s.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.dpo.config import COLLECTION_PREFIX, LOSS_TYPES, SCHEDULERS, TrainConfig, convert_value
from ctllm.errors import UserError
from ctllm.settings import Settings
from ctllm.ui import plots
from ctllm.ui.auth import Role, require
from ctllm.ui.context import SAMPLES_COLLECTION, AppContext
from ctllm.ui.handlers import form
from ctllm.ui.i18n import Translator, t
from ctllm.ui.render import inert_inline

DEFAULT_PRESET = "cpu-demo"
TRAIN_KINDS = ("train",)  # synthesis jobs share the job table but have their own panel (Pairs tab)
# The before/after columns: SFT (the reference) → DPO (the trained model), from the run's eval.json.
BEFORE_AFTER_HEADERS = ["pref. acc. SFT → DPO", "refusals SFT → DPO", "answers SFT → DPO"]
HISTORY_HEADERS = [
    "job",
    "run",
    "state",
    "preset",
    "data hash",
    "best eval acc.",
    *BEFORE_AFTER_HEADERS,
    "duration",
    "started",
]
DURATION_COLUMN = HISTORY_HEADERS.index("duration")
EVAL_TABLE_HEADERS = ["section", "group", "metric", "SFT", "DPO", "n", "note"]
EVAL_CHARTS = ("preference", "reward", "behaviour")
COMPARE_METRICS = [
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "eval_loss",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
]
_FIELD_IN_ERROR = re.compile(r"config field '(\w+)'")


@dataclass(frozen=True)
class Field:
    """One form field: a TrainConfig field name, the widget kind, and its help text."""

    name: str
    kind: str  # number | int | text | dropdown | checkbox
    help: str
    choices: tuple[str, ...] = ()
    advanced: bool = False


FIELDS: tuple[Field, ...] = (
    Field("beta", "number", "β: how far the policy may move from the reference (CT-LLM: 0.5)"),
    Field("loss_type", "dropdown", "sigmoid (DPO), hinge, ipo, robust", LOSS_TYPES),
    Field("lr", "number", "learning rate (CT-LLM: 1e-6 full fine-tuning)"),
    Field("batch_size", "int", "pairs per device per micro-batch"),
    Field("grad_accum", "int", "micro-batches per optimizer step"),
    Field("epochs", "int", "passes over the training pairs"),
    Field("max_steps", "int", "0: run the epochs; > 0: stop after this many steps"),
    Field("max_length", "int", "tokens of prompt + response kept"),
    Field("lora", "checkbox", "LoRA adapter instead of full fine-tuning"),
    Field("lora_r", "int", "LoRA rank"),
    Field("warmup_ratio", "number", "share of steps with a rising learning rate"),
    Field("weight_decay", "number", "AdamW weight decay"),
    Field("eval_every", "int", "steps between held-out evaluations (0: at the end)"),
    Field("seed", "int", "random seed"),
    Field("label_smoothing", "number", "cDPO / robust ε", advanced=True),
    Field("rpo_alpha", "number", "RPO: weight of the chosen NLL (0: off)", advanced=True),
    Field("scheduler", "dropdown", "learning-rate schedule", SCHEDULERS, advanced=True),
    Field("lora_alpha", "int", "LoRA α", advanced=True),
    Field("precompute_ref", "checkbox", "reference log-probs in one pass before training", advanced=True),
    Field("max_grad_norm", "number", "gradient clipping (0: off)", advanced=True),
    Field("save_every", "int", "steps between checkpoints (0: at the end)", advanced=True),
    Field("logging_every", "int", "steps between metric lines", advanced=True),
    Field("final_eval", "checkbox", "at the end: SFT vs DPO on held-out pairs and prompt lists", advanced=True),
    Field("final_eval_limit", "int", "prompts per list in that evaluation (0: all)", advanced=True),
)
# The form's inputs in order: these come before the hyperparameter fields.
HEAD = ("preset", "model", "ref_model", "data", "eval_data", "eval_fraction", "run_name", "devices", "num_processes")
FORM_NAMES = HEAD + tuple(f.name for f in FIELDS)
HELP = {f.name: f.help for f in FIELDS} | {
    "model": "",
    "ref_model": "",
    "data": "",
    "eval_data": "",
    "eval_fraction": "",
    "run_name": "",
    "devices": "cpu, or GPU ids such as 0 or 0,1",
    "num_processes": "1, or N processes through accelerate",
    "preset": "",
}


def _is_collection(value: str) -> bool:
    return not any(ch in value for ch in "/\\.") or value.startswith(COLLECTION_PREFIX)


def data_spec(value: str) -> str:
    """A collection name becomes ``collection:NAME``; a file path stays as it is."""
    value = (value or "").strip()
    if not value or value.startswith(COLLECTION_PREFIX) or not _is_collection(value):
        return value
    return COLLECTION_PREFIX + value


def form_to_config(form: dict[str, Any]) -> tuple[str, TrainConfig, dict[str, Any]]:
    """(preset, validated config, overrides relative to the preset). Raises UserError naming the field."""
    from ctllm.dpo.presets import load_preset, resolve_config

    preset = form.get("preset") or ""
    base = load_preset(preset) if preset else TrainConfig()
    values: dict[str, Any] = {
        "model": (form.get("model") or "").strip(),
        "ref_model": (form.get("ref_model") or "").strip(),
        "data": data_spec(form.get("data") or ""),
        "eval_data": data_spec(form.get("eval_data") or ""),
        "run_name": (form.get("run_name") or "").strip(),
    }
    if form.get("eval_fraction") is not None:
        values["eval_fraction"] = form["eval_fraction"]
    for field in FIELDS:
        value = form.get(field.name)
        if value is None or value == "":
            raise UserError(f"config field '{field.name}' needs a value")
        values[field.name] = value
    overrides = {}
    for name, value in values.items():
        converted = convert_value(name, value, origin="form")
        if converted != getattr(base, name):
            overrides[name] = converted
    config = resolve_config(preset or None, None, overrides)
    return preset, config, overrides


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def train_argv(preset: str, overrides: dict[str, Any], data_dir: Path, devices: str, processes: int) -> list[str]:
    """The job's command: ``python -m ctllm train`` (or accelerate launch ... -m ctllm train) with the overrides."""
    from ctllm.jobs.commands import ctllm_command

    args: list[str] = ["--preset", preset] if preset else []
    for name, value in overrides.items():
        args += [f"--{name}", _flag_value(value)]
    args += ["--data-dir", str(data_dir)]
    if devices.strip().lower() == "cpu":
        args += ["--device", "cpu"]
    return ctllm_command("train", args, processes)


def job_env(settings: Settings) -> dict[str, str]:
    """Settings the job must share with the app that have no command-line flag."""
    env = {}
    if settings.allowed_roots:
        env["CTLLM_ALLOWED_ROOTS"] = ",".join(str(root) for root in settings.allowed_roots)
    if settings.offline:
        env["CTLLM_OFFLINE"] = "1"
    if settings.trust_remote_code:
        env["CTLLM_TRUST_REMOTE_CODE"] = "1"
    return env


def shown_command(argv: list[str], devices: str, env: dict[str, str] | None = None) -> str:
    """The command line a user can paste: ``python`` for the interpreter, CUDA_VISIBLE_DEVICES when GPUs are named."""
    parts = ["python" if i == 0 and part == sys.executable else part for i, part in enumerate(argv)]
    line = shlex.join(parts)
    prefix = dict(env or {})
    if devices.strip().lower() != "cpu":
        from ctllm.jobs.devices import parse_devices

        prefix["CUDA_VISIBLE_DEVICES"] = parse_devices(devices)
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in prefix.items())
    return f"{assignments} {line}" if assignments else line


def new_run_name(runs_dir: Path) -> str:
    base = datetime.now().strftime("dpo-%Y%m%d-%H%M%S")
    name, n = base, 1
    while (runs_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def field_updates(error: str | None) -> list[Any]:
    """One update per form input: the failing field's help text replaced by the reason."""
    failing = None
    if error:
        match = _FIELD_IN_ERROR.search(error)
        failing = match.group(1) if match else None
        if failing == "data" and "eval" in error.lower():
            failing = "eval_data"
    updates = []
    for name in FORM_NAMES:
        if name == failing:
            updates.append(gr.update(info=f"⚠ {error}"))
        else:
            updates.append(gr.update(info=HELP.get(name) or None))
    return updates


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(
    job: Any, status: dict[str, Any] | None, last: dict[str, Any] | None, now: float, global_batch: int | None = None
) -> str:
    """State, step / total, ETA and pairs/s of one job, as Markdown.

    The ETA uses the training speed (global batch / pairs per second) when known, so the minutes spent loading
    models before step 1 do not inflate it; otherwise the average time per step so far."""
    status = status or {}
    state = job.state
    step = status.get("step") or (last or {}).get("step") or 0
    total = status.get("total_steps")
    elapsed = job.duration(now)
    parts = [f"**Job {job.id}** · run {inert_inline(job.name)} · **{state}**"]
    if total:
        share = min(1.0, step / total) if total else 0.0
        parts.append(f"step {step} / {total} ({share:.0%})")
        speed = (last or {}).get("pairs_per_second")
        if state in ("running", "cancelling") and step and elapsed:
            per_step = global_batch / speed if global_batch and isinstance(speed, (int, float)) and speed > 0 else None
            eta = (per_step or elapsed / step) * (total - step)
            parts.append(f"ETA {format_duration(eta)}")
    elif state == "running":
        parts.append("preparing (tokenizing, loading models)…")
    parts.append(f"elapsed {format_duration(elapsed)}")
    if last and isinstance(last.get("pairs_per_second"), (int, float)):
        parts.append(f"{last['pairs_per_second']:.2f} pairs/s")
    text = " · ".join(parts)
    if status.get("reference"):
        text += f"\n\nreference model: {inert_inline(str(status['reference']))}"
    if job.error:
        text += f"\n\n⚠ {inert_inline(job.error)}"
    summary = status.get("summary")
    if state == "finished" and isinstance(summary, dict):
        from ctllm.evaluate import headline_text, summary_headline

        keys = [
            k for k in ("eval_rewards/accuracies", "eval_rewards/margins") if isinstance(summary.get(k), (int, float))
        ]
        if keys:
            text += "\n\n" + " · ".join(f"{k} = {summary[k]:.3g}" for k in keys)
        numbers = headline_text(summary_headline(summary))
        if numbers:
            text += f"\n\nSFT → DPO: {numbers}"
        elif str(summary.get("final_eval", "")).startswith(("cancelled", "failed")):
            text += f"\n\nfinal evaluation {inert_inline(str(summary['final_eval']))}"
    return text


def _metrics_signature(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size)


def read_new_metrics(run_dir: Path, cache: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Rows of ``run_dir``'s metrics.jsonl, reading only lines added since ``cache`` was made.

    A file that shrank or was replaced (a resumed run rewrites it) is read again from the start.
    """
    from ctllm.runs import read_metrics

    signature = _metrics_signature(run_dir / "metrics.jsonl")
    same_file = cache.get("run_dir") == str(run_dir)
    if same_file and signature == cache.get("signature"):
        return cache, False
    previous = cache.get("signature")
    grown = same_file and previous and signature and signature[0] == previous[0] and signature[1] >= previous[1]
    lines = cache.get("lines", 0) if grown else 0
    rows = list(cache.get("rows", [])) if grown else []
    new = read_metrics(run_dir, after_line=lines)
    rows += new
    kept = cache if same_file else {}  # other facts about the same run (e.g. its global batch) stay
    return {**kept, "run_dir": str(run_dir), "signature": signature, "lines": lines + len(new), "rows": rows}, True


def _global_batch(run_dir: Path) -> int | None:
    from ctllm.runs import read_config

    value = (read_config(run_dir).get("resolved") or {}).get("global_batch")
    return value if isinstance(value, int) and value > 0 else None


def job_preset(job: Any) -> str:
    argv = list(job.argv)
    return argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else ""


def best_eval_accuracy(run_dir: Path) -> float | None:
    from ctllm.runs import read_metrics

    values = [r.get("eval_rewards/accuracies") for r in read_metrics(run_dir)]
    numbers = [v for v in values if isinstance(v, (int, float))]
    return max(numbers) if numbers else None


def before_after_cells(run_dir: Path) -> list[str]:
    """The history's SFT → DPO cells of a run, from its eval.json ("–" where it has none)."""
    from ctllm.evaluate import before_after, headline, load_result
    from ctllm.evaluate.report import BEFORE_AFTER

    result = load_result(run_dir)
    numbers = headline(result) if result else {}
    return [before_after(numbers, key) for key, _ in BEFORE_AFTER]


def eval_runs(runs_dir: Path) -> list[str]:
    """Runs with an end-of-run evaluation (eval.json), newest first."""
    from ctllm.evaluate import EVAL_JSON
    from ctllm.runs import list_runs

    return [run["name"] for run in list_runs(runs_dir) if (Path(run["path"]) / EVAL_JSON).is_file()]


def eval_view(result: dict[str, Any] | None, run: str) -> tuple[str, list[list[Any]], list[Any]]:
    """(summary Markdown, table rows, one figure per EVAL_CHARTS name) of a run's evaluation."""
    from ctllm.evaluate import figures, headline, headline_text, result_rows

    if not result:
        message = (
            "Pick a run, or click one in the job history."
            if not run
            else (
                f"Run {inert_inline(run)} has no evaluation yet (eval.json is written when a run with final_eval "
                "finishes; `python -m ctllm eval` makes one for any two models)."
            )
        )
        return message, [], [plots.waiting_figure(name, "no evaluation") for name in EVAL_CHARTS]
    models = result.get("models", {})
    lines = [
        f"**{inert_inline(run)}** · SFT {inert_inline(str(models.get('ref', {}).get('label', '?')))} → DPO "
        f"{inert_inline(str(models.get('model', {}).get('label', '?')))} · β = {result.get('beta')} · "
        f"{result.get('seconds', '?')} s"
    ]
    numbers = headline_text(headline(result))
    if numbers:
        lines.append(numbers)
    lines += [f"note: {inert_inline(str(note))}" for note in result.get("notes") or []]
    rows = [
        [r["section"], r["group"], r["metric"], _cell(r["sft"]), _cell(r["dpo"]), r["n"], r["note"]]
        for r in result_rows(result)
    ]
    charts = figures(result)
    shown = [charts.get(name) or plots.waiting_figure(name, "not in this evaluation") for name in EVAL_CHARTS]
    return "  \n".join(lines), rows, shown


def _cell(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else ("–" if value is None else value)


def check_models(config: TrainConfig, settings: Settings) -> None:
    """Refuse before start what the job would only find out inside: a missing or out-of-bounds model, a hub id
    while offline, a model whose own code the operator has not allowed."""
    from ctllm.models.registry import resolve_spec

    for name in ("model", "ref_model"):
        spec = getattr(config, name)
        if spec:
            try:
                resolve_spec(spec, settings)
            except UserError as error:
                raise UserError(f"config field '{name}': {error}") from None


class TrainHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._history_cache: dict[tuple[int, str, float | None], list[Any]] = {}

    # --- the form --------------------------------------------------------------------------------------
    def preset_values(self, preset: str, request: gr.Request | None = None) -> list[Any]:
        """The form filled from a preset (the data and run name the user chose are kept)."""
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.dpo.presets import load_preset

        config = load_preset(preset) if preset else TrainConfig()
        return [gr.update(value=config.model), gr.update(value=config.ref_model)] + [
            gr.update(value=getattr(config, f.name)) for f in FIELDS
        ]

    def show_command(self, form: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        require(request, Role.VIEWER, self.ctx.settings)
        try:
            preset, config, overrides = form_to_config(form)
            devices, processes = _devices(form)
        except UserError as error:
            return (gr.update(value=f"# {error}"), f"⚠ {inert_inline(str(error))}", *field_updates(str(error)))
        if not config.run_name:
            overrides = {**overrides, "run_name": "<chosen at start>"}
        argv = train_argv(preset, overrides, self.ctx.settings.data_dir, devices, processes)
        return (shown_command(argv, devices, job_env(self.ctx.settings)), "", *field_updates(None))

    def start(self, form: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """Validate the form, then start the job; returns (job id, command, message, *field updates)."""
        user = require(request, Role.ADMIN, self.ctx.settings)
        try:
            preset, config, overrides = form_to_config(form)
            devices, processes = _devices(form)
            check_models(config, self.ctx.settings)
            if not config.run_name:
                overrides["run_name"] = new_run_name(self.ctx.settings.runs_dir)
            run_name = overrides.get("run_name", config.run_name)
            run_dir = self.ctx.settings.runs_dir / run_name
            if (run_dir / "status.json").exists():
                raise UserError(f"config field 'run_name' = {run_name!r} is taken: pick another name or resume it")
            argv = train_argv(preset, overrides, self.ctx.settings.data_dir, devices, processes)
            env = job_env(self.ctx.settings)
            job = self.ctx.jobs.start(
                argv, run_dir, devices=devices, kind="train", name=run_name, owner=user.name, env=env
            )
        except UserError as error:
            return (gr.skip(), gr.skip(), f"⚠ {inert_inline(str(error))}", *field_updates(str(error)))
        message = f"Started job {job.id} ({job.state}) in {inert_inline(str(run_dir))}."
        return (job.id, shown_command(argv, devices, env), message, *field_updates(None))

    # --- job control -----------------------------------------------------------------------------------
    def cancel(self, job_id: int | None, request: gr.Request | None = None) -> str:
        require(request, Role.ADMIN, self.ctx.settings)
        if not job_id:
            raise gr.Error("No job selected.")
        try:
            job = self.ctx.jobs.cancel(int(job_id), wait=False)
        except UserError as error:
            raise gr.Error(str(error)) from None
        return f"Job {job.id}: {job.state} (the run saves a checkpoint, then stops)."

    def resume(self, job_id: int | None, request: gr.Request | None = None) -> tuple[Any, str]:
        user = require(request, Role.ADMIN, self.ctx.settings)
        if not job_id:
            raise gr.Error("No job selected.")
        try:
            job = self.ctx.jobs.resume(int(job_id), owner=user.name)
        except UserError as error:
            raise gr.Error(str(error)) from None
        return job.id, f"Resumed as job {job.id} ({job.state})."

    # --- watching --------------------------------------------------------------------------------------
    def job_choices(self) -> list[tuple[str, int]]:
        jobs = self.ctx.jobs.list_jobs(limit=50, kinds=TRAIN_KINDS)
        return [(f"{job.id} · {job.name} · {job.state}", job.id) for job in jobs]

    def current_job(self) -> int | None:
        """The job to show on opening the page: the newest active one, else the newest."""
        jobs = self.ctx.jobs.list_jobs(limit=50, kinds=TRAIN_KINDS)
        for job in jobs:
            if job.state in ("running", "cancelling", "queued"):
                return job.id
        return jobs[0].id if jobs else None

    def poll(self, job_id: int | None, cache: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """Every 2 s: (status, 4 figures, log tail, cache, cancel button, resume button). Figures only when new
        metric lines arrived."""
        require(request, Role.VIEWER, self.ctx.settings)
        cache = cache or {}
        if not job_id:
            figures = [plots.waiting_figure(p.title, "Start a run to see its curves here.") for p in plots.PANELS]
            first = cache.get("run_dir") != ""
            return (
                "No job yet.",
                *(figures if first else [gr.skip()] * len(figures)),
                "",
                {"run_dir": ""},
                gr.update(interactive=False),
                gr.update(interactive=False),
            )
        try:
            view = self.ctx.jobs.watch(int(job_id))
        except UserError as error:
            return (f"⚠ {inert_inline(str(error))}", *[gr.skip()] * 4, "", cache, gr.skip(), gr.skip())
        cache, changed = read_new_metrics(view.job.run_dir, cache)
        rows = cache["rows"]
        figures = plots.metric_figures(rows) if changed or "drawn" not in cache else [gr.skip()] * 4
        cache["drawn"] = True
        last = next((row for row in reversed(rows) if "loss" in row), None) or view.metrics
        if not cache.get("global_batch"):
            cache["global_batch"] = _global_batch(view.job.run_dir)
        status = progress_text(view.job, view.status, last, time.time(), cache["global_batch"])
        active = view.job.state in ("running", "cancelling", "queued")
        return (
            status,
            *figures,
            view.log_tail,
            cache,
            gr.update(interactive=view.job.state in ("running", "queued")),
            gr.update(interactive=view.job.state in ("failed", "cancelled") and not active),
        )

    def history(self, request: gr.Request | None = None) -> list[list[Any]]:
        """The job history table: state, preset, data hash, best eval accuracy, SFT → DPO numbers, duration."""
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.runs import read_status

        rows = []
        for job in self.ctx.jobs.list_jobs(limit=100, kinds=TRAIN_KINDS):
            key = (job.id, job.state, job.finished)
            if key not in self._history_cache:
                status = read_status(job.run_dir)
                best = best_eval_accuracy(job.run_dir) if job.final else None
                started = datetime.fromtimestamp(job.started).strftime("%Y-%m-%d %H:%M") if job.started else "–"
                before_after = before_after_cells(job.run_dir) if job.final else ["–"] * len(BEFORE_AFTER_HEADERS)
                self._history_cache[key] = [
                    job.id,
                    job.name,
                    job.state,
                    job_preset(job) or "–",
                    str(status.get("data_hash") or "–")[:12],
                    f"{best:.3f}" if best is not None else "–",
                    *before_after,
                    format_duration(job.duration()),
                    started,
                ]
            row = list(self._history_cache[key])
            if job.active:
                row[DURATION_COLUMN] = format_duration(job.duration())
            rows.append(row)
        return rows

    def compare(self, runs: list[str] | None, metric: str, request: gr.Request | None = None) -> Any:
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.runs import read_metrics

        chosen = {name: read_metrics(self.ctx.settings.runs_dir / name) for name in runs or []}
        return plots.overlay_figure(chosen, metric or "loss")

    # --- a run's evaluation ----------------------------------------------------------------------------
    def show_eval(self, run: str | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """(summary, table, *charts, CSV file) of ``run``'s eval.json; the CSV is exported for download."""
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.evaluate import EVAL_JSON, export_csv, load_result

        run = (run or "").strip()
        result = None
        if run:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", run) or ".." in run:
                raise gr.Error(f"not a run name: {run!r}")
            result = load_result(self.ctx.settings.runs_dir / run)
        summary, rows, charts = eval_view(result, run)
        csv_path = None
        if result:
            csv_path = str(
                export_csv(
                    self.ctx.settings.runs_dir / run / EVAL_JSON, self.ctx.settings.exports_dir / f"eval-{run}.csv"
                )
            )
        return summary, rows, *charts, csv_path

    def history_select(self, evt: gr.SelectData, request: gr.Request | None = None) -> Any:
        """Clicking a row of the job history shows that run's evaluation."""
        require(request, Role.VIEWER, self.ctx.settings)
        row = evt.row_value or []
        run = str(row[HISTORY_HEADERS.index("run")]) if len(row) > 1 else ""
        return gr.update(value=run) if run else gr.skip()

    def load(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """On page load: pickers (models, collections, runs) and the job to watch (a running one re-attaches)."""
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.models.registry import list_models
        from ctllm.runs import list_runs

        self.ctx.jobs.poll()
        models = [(spec.label, spec.ref) for spec in list_models(self.ctx.settings)]
        collections = [c.name for c in self.ctx.store.list_collections()]
        data_value = (
            SAMPLES_COLLECTION if SAMPLES_COLLECTION in collections else (collections[0] if collections else "")
        )
        runs = [run["name"] for run in list_runs(self.ctx.settings.runs_dir)]
        job_id = self.current_job()
        return (
            gr.update(choices=models),
            gr.update(choices=collections, value=data_value),
            gr.update(choices=["", *collections]),
            gr.update(choices=self.job_choices(), value=job_id),
            gr.update(choices=runs),
            self.history(request),
            gr.update(choices=eval_runs(self.ctx.settings.runs_dir)),
            job_id,
        )

    def refresh(self, job_id: int | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """(job picker, compare runs, history, evaluated runs) again."""
        require(request, Role.VIEWER, self.ctx.settings)
        from ctllm.runs import list_runs

        runs = [run["name"] for run in list_runs(self.ctx.settings.runs_dir)]
        return (
            gr.update(choices=self.job_choices(), value=job_id),
            gr.update(choices=runs),
            self.history(request),
            gr.update(choices=eval_runs(self.ctx.settings.runs_dir)),
        )


def _devices(form: dict[str, Any]) -> tuple[str, int]:
    from ctllm.jobs.devices import parse_devices

    devices = str(form.get("devices") or "cpu").strip() or "cpu"
    try:
        parse_devices(devices)
    except UserError as error:
        raise UserError(f"config field 'devices': {error}") from None
    processes = form.get("num_processes")
    if processes is None or processes == "":
        processes = 1
    if float(processes) < 1 or not float(processes).is_integer():
        raise UserError(f"config field 'num_processes' = {processes!r} must be a whole number >= 1")
    return devices, int(processes)


def _widget(field: Field) -> Any:
    label = field.name.replace("_", " ")
    common = {"label": label, "info": field.help, "elem_id": f"train-{field.name.replace('_', '-')}"}
    if field.kind == "number":
        return gr.Number(**common)
    if field.kind == "int":
        return gr.Number(precision=0, **common)
    if field.kind == "dropdown":
        return gr.Dropdown(choices=list(field.choices), **common)
    if field.kind == "checkbox":
        return gr.Checkbox(**common)
    return gr.Textbox(**common)


def build(ctx: AppContext, tr: Translator) -> dict[str, Any]:
    from ctllm.dpo.presets import list_presets, load_preset

    h = TrainHandlers(ctx)
    presets = list_presets()
    preset_default = DEFAULT_PRESET if DEFAULT_PRESET in presets else (presets[0] if presets else "")
    defaults = load_preset(preset_default) if preset_default else TrainConfig()
    job_id = gr.State(None)
    cache = gr.State({})
    widgets: dict[str, Any] = {}

    with gr.Row():
        with gr.Column(scale=2, min_width=380):
            widgets["preset"] = tr.bind(
                gr.Dropdown(presets, value=preset_default, label=t("train.preset"), elem_id="train-preset"),
                "train.preset",
            )
            widgets["model"] = tr.bind(
                gr.Dropdown(
                    [defaults.model],
                    value=defaults.model,
                    allow_custom_value=True,
                    label=t("train.model"),
                    elem_id="train-model",
                ),
                "train.model",
            )
            widgets["ref_model"] = tr.bind(
                gr.Textbox(value=defaults.ref_model, label=t("train.ref_model"), elem_id="train-ref-model"),
                "train.ref_model",
            )
            widgets["data"] = tr.bind(
                gr.Dropdown([], allow_custom_value=True, label=t("train.collection"), elem_id="train-data"),
                "train.collection",
            )
            with gr.Row():
                widgets["eval_data"] = tr.bind(
                    gr.Dropdown(
                        [""], value="", allow_custom_value=True, label=t("train.eval_data"), elem_id="train-eval-data"
                    ),
                    "train.eval_data",
                )
                widgets["eval_fraction"] = tr.bind(
                    gr.Number(
                        value=defaults.eval_fraction, label=t("train.eval_fraction"), elem_id="train-eval-fraction"
                    ),
                    "train.eval_fraction",
                )
            with gr.Accordion(t("train.hyper"), open=True) as hyper:
                tr.bind(hyper, "train.hyper")
                with gr.Row():
                    for field in [f for f in FIELDS if not f.advanced]:
                        widgets[field.name] = _widget(field)
            with gr.Accordion(t("train.advanced"), open=False) as advanced:
                tr.bind(advanced, "train.advanced")
                with gr.Row():
                    widgets["run_name"] = tr.bind(
                        gr.Textbox(label=t("train.run_name"), elem_id="train-run-name"), "train.run_name"
                    )
                    widgets["devices"] = tr.bind(
                        gr.Textbox(value="cpu", label=t("train.devices"), elem_id="train-devices"), "train.devices"
                    )
                    widgets["num_processes"] = tr.bind(
                        gr.Number(
                            value=1, precision=0, minimum=1, label=t("train.processes"), elem_id="train-num-processes"
                        ),
                        "train.processes",
                    )
                    for field in [f for f in FIELDS if f.advanced]:
                        widgets[field.name] = _widget(field)
            for field in FIELDS:
                widgets[field.name].value = getattr(defaults, field.name)
            with gr.Row():
                show = tr.bind(
                    gr.Button(t("train.show_command"), elem_id="train-show-command"), "train.show_command", "value"
                )
                start = tr.bind(
                    gr.Button(t("train.start"), variant="primary", elem_id="train-start"), "train.start", "value"
                )
            message = gr.Markdown(elem_id="train-message")
            command = tr.bind(
                gr.Code(label=t("train.command"), language="shell", interactive=False, elem_id="train-command"),
                "train.command",
            )
        with gr.Column(scale=3):
            with gr.Row():
                watch = tr.bind(gr.Dropdown([], label=t("train.watch"), elem_id="train-job", scale=3), "train.watch")
                cancel = tr.bind(
                    gr.Button(t("train.cancel"), variant="stop", interactive=False, elem_id="train-cancel", scale=1),
                    "train.cancel",
                    "value",
                )
                resume = tr.bind(
                    gr.Button(t("train.resume"), interactive=False, elem_id="train-resume", scale=1),
                    "train.resume",
                    "value",
                )
            status = gr.Markdown("No job yet.", elem_id="train-status")
            tr.bind(
                gr.Markdown(t("train.explain"), elem_classes=["explain-box"], elem_id="train-explain"),
                "train.explain",
                "value",
            )
            # Empty until the first timer tick draws them: building plotly figures here (its first use imports
            # plotly's validators) would add seconds to the app's start.
            figures = []
            for row in (plots.PANELS[:2], plots.PANELS[2:]):
                with gr.Row():
                    for panel in row:
                        figures.append(gr.Plot(show_label=False, elem_id=f"train-plot-{panel.key}"))
            log = tr.bind(
                gr.Textbox(label=t("train.log"), lines=8, max_lines=12, interactive=False, elem_id="train-log"),
                "train.log",
            )

    with gr.Accordion(t("train.history"), open=True) as history_box:
        tr.bind(history_box, "train.history")
        refresh = tr.bind(gr.Button(t("train.refresh"), size="sm", elem_id="train-refresh"), "train.refresh", "value")
        history = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="train-history", wrap=True)
    with gr.Accordion(t("train.eval_box"), open=False, elem_id="train-eval-box") as eval_box:
        tr.bind(eval_box, "train.eval_box")
        with gr.Row():
            eval_run = tr.bind(
                gr.Dropdown([], label=t("train.eval_run"), allow_custom_value=True, elem_id="train-eval-run", scale=2),
                "train.eval_run",
            )
            eval_csv = tr.bind(
                gr.File(label=t("train.eval_csv"), interactive=False, elem_id="train-eval-csv", scale=1),
                "train.eval_csv",
            )
        eval_summary = gr.Markdown("Pick a run, or click one in the job history.", elem_id="train-eval-summary")
        eval_table = gr.Dataframe(headers=EVAL_TABLE_HEADERS, interactive=False, elem_id="train-eval-table", wrap=True)
        with gr.Row():
            eval_plots = [gr.Plot(show_label=False, elem_id=f"train-eval-{name}") for name in EVAL_CHARTS]
    with gr.Accordion(t("train.compare"), open=False) as compare_box:
        tr.bind(compare_box, "train.compare")
        with gr.Row():
            compare_runs = tr.bind(
                gr.Dropdown([], multiselect=True, label=t("train.compare_runs"), elem_id="train-compare-runs"),
                "train.compare_runs",
            )
            compare_metric = tr.bind(
                gr.Dropdown(
                    COMPARE_METRICS, value="loss", label=t("train.compare_metric"), elem_id="train-compare-metric"
                ),
                "train.compare_metric",
            )
        compare_plot = gr.Plot(show_label=False, elem_id="train-compare-plot")

    form_inputs = [widgets[name] for name in FORM_NAMES]
    widgets["preset"].change(
        h.preset_values,
        inputs=[widgets["preset"]],
        outputs=[widgets["model"], widgets["ref_model"], *[widgets[f.name] for f in FIELDS]],
    )
    show.click(
        form(h.show_command, FORM_NAMES),
        inputs=form_inputs,
        outputs=[command, message, *form_inputs],
        api_name="train_command",
    )
    start.click(
        form(h.start, FORM_NAMES),
        inputs=form_inputs,
        outputs=[job_id, command, message, *form_inputs],
        concurrency_limit=1,
        api_name="train_start",
    ).then(h.refresh, inputs=[job_id], outputs=[watch, compare_runs, history, eval_run])
    watch.input(lambda value: (value, {}), inputs=[watch], outputs=[job_id, cache])
    cancel.click(h.cancel, inputs=[job_id], outputs=[message], api_name="train_cancel").then(
        h.refresh, inputs=[job_id], outputs=[watch, compare_runs, history, eval_run]
    )
    resume.click(h.resume, inputs=[job_id], outputs=[job_id, message], api_name="train_resume").then(
        lambda: {}, outputs=[cache]
    ).then(h.refresh, inputs=[job_id], outputs=[watch, compare_runs, history, eval_run])
    refresh.click(h.refresh, inputs=[job_id], outputs=[watch, compare_runs, history, eval_run])
    history.select(h.history_select, outputs=[eval_run])
    eval_run.change(
        h.show_eval, inputs=[eval_run], outputs=[eval_summary, eval_table, *eval_plots, eval_csv], api_name="train_eval"
    )
    gr.on(
        [compare_runs.change, compare_metric.change],
        h.compare,
        inputs=[compare_runs, compare_metric],
        outputs=[compare_plot],
    )
    timer = gr.Timer(value=2)
    timer.tick(
        h.poll,
        inputs=[job_id, cache],
        outputs=[status, *figures, log, cache, cancel, resume],
        show_progress="hidden",
        concurrency_limit=None,
        api_visibility="undocumented",
    )

    return {
        "load": (
            h.load,
            [],
            [widgets["model"], widgets["data"], widgets["eval_data"], watch, compare_runs, history, eval_run, job_id],
        )
    }
