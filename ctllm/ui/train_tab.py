"""Train tab: a form that becomes a background training job, and a page that stays true while it runs.

The form's logic (validation, the command, the run name) lives in :mod:`ctllm.jobs.train_job`; the job runs
``python -m ctllm train ...`` through the JobManager in its own process group. The page only reads the jobs table
and the run dirs: the 2 s timer keeps the shown run (state, phase, plots, log), the job history and the run pickers
current, whoever started or ended a job (this tab, another one, the CLI), and sends nothing for what did not change.

Handlers return ``{name: value}`` for the components they change (see ``ctllm.ui.handlers.keyed``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.dpo.config import SCHEDULERS, TrainConfig
from ctllm.dpo.presets import list_presets, load_preset
from ctllm.errors import UserError
from ctllm.evaluate import (
    EVAL_JSON,
    before_after,
    export_csv,
    headline,
    load_result,
    result_rows,
)
from ctllm.evaluate.report import BEFORE_AFTER
from ctllm.jobs.log_text import readable_log
from ctllm.jobs.score_job import start_score_job
from ctllm.jobs.train_job import RUN_NAME_PLACEHOLDER, data_spec, plan_train_job, shown_command, start_train_job
from ctllm.models.registry import list_models
from ctllm.runs import best_eval_accuracy, list_runs, read_config, read_metrics, read_status
from ctllm.ui import loss_picker, plots
from ctllm.ui.auth import Role, require
from ctllm.ui.context import SAMPLES_COLLECTION, AppContext
from ctllm.ui.handlers import bind, form, keyed
from ctllm.ui.i18n import STRINGS, headers, t
from ctllm.ui.job_progress import format_duration, headline_line, phase_text, progress_text, state_name
from ctllm.ui.publish_panel import build as build_publish_panel
from ctllm.ui.render import inert_inline
from ctllm.ui.sweep_panel import build as build_sweep_panel

__all__ = ["data_spec", "format_duration", "progress_text", "shown_command"]  # re-exported: callers of the old home

DEFAULT_PRESET = "cpu-demo"
TRAIN_KINDS = ("train",)  # synthesis and scoring jobs share the job table but have their own panels
SCORE_KINDS = ("score",)
ACTIVE_STATES = ("running", "cancelling", "queued")
CONFIRM_WINDOW_S = 10.0  # a first click on Cancel waits this long for the confirming one
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
STATE_COLUMN = HISTORY_HEADERS.index("state")
EVAL_TABLE_HEADERS = ["section", "group", "metric", "SFT", "DPO", "n", "note"]
EVAL_CHARTS = plots.EVAL_CHARTS
COMPARE_METRICS = [
    "loss",
    "nll_loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "eval_loss",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
]
PLOT_NAMES = tuple(f"plot_{panel.key}" for panel in plots.PANELS)
EVAL_PLOT_NAMES = tuple(f"eval_{name}" for name in EVAL_CHARTS)
# What the timer may change, the status, figures and log first (API clients read them by position).
POLL_OUTPUTS = (
    "status", *PLOT_NAMES, "log", "cache", "cancel", "resume", "job_id", "seen", "armed", "watch", "history",
    "compare_runs", "eval_run", "score_status", "data", "eval_data", "score_collection",
)  # fmt: skip
SCROLL_LOG_TO_END = """() => { requestAnimationFrame(() => {
  const box = document.querySelector('#train-log textarea');
  if (box) box.scrollTop = box.scrollHeight;
}); }"""
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
FORM_NAMES = HEAD + tuple(f.name for f in FIELDS) + loss_picker.NAMES  # the loss and its hyperparameters last
COMMAND_OUTPUTS = ("command", "message", *FORM_NAMES)  # "Show command" and Start, command first for API clients
START_OUTPUTS = ("job_id", "cache", *COMMAND_OUTPUTS, "watch")
HELP = {f.name: f.help for f in FIELDS} | {
    "devices": "cpu, or GPU ids such as 0 or 0,1",
    "num_processes": "1, or N processes through accelerate",
}


def job_label(job_id: int, name: str, state: str) -> str:
    """A run picker's choice label: "12 · run-name · running", the state in the session's language."""
    return f"{job_id} · {name} · {state_name(state)}"


def score_target_text(run: str) -> str:
    return f"{t('train.score_run')}: **{inert_inline(run)}**"


def localized_command(command: str) -> str:
    """The "Show command" line with its run-name placeholder in the session's language."""
    return command.replace(RUN_NAME_PLACEHOLDER, t("train.run_name_placeholder"))


def field_help(name: str) -> str | None:
    """A form field's hint in the session's language."""
    key = f"train-{name.replace('_', '-')}.info"
    return t(key) if key in STRINGS else HELP.get(name) or None


def field_updates(error: str | None) -> dict[str, Any]:
    """One update per form input: the failing field's help text replaced by the reason."""
    failing = None
    if error:
        match = _FIELD_IN_ERROR.search(error)
        failing = match.group(1) if match else None
        if failing == "data" and "eval" in error.lower():
            failing = "eval_data"
    return {
        name: gr.update(info=f"⚠ {error}") if name == failing else gr.update(info=field_help(name))
        for name in FORM_NAMES
    }


def _rpo_alpha(run_dir: Path) -> float | None:
    """The run's NLL weight; None while its config.yaml is not written yet."""
    config = read_config(run_dir)
    if not config:
        return None
    value = config.get("rpo_alpha")
    return float(value) if isinstance(value, (int, float)) else 0.0


def score_text(job: Any, status: dict[str, Any], now: float) -> str:
    """A scoring job's line: state, phase with its percentage, elapsed; where the scores went when finished."""
    parts = [t("train.score_heading").format(job=job.id, run=inert_inline(job.name), state=state_name(job.state))]
    if job.state in ("running", "cancelling"):
        parts.append(phase_text(status, numbered=False) or t("job.starting"))
    parts.append(t("job.elapsed").format(elapsed=format_duration(job.duration(now))))
    text = " · ".join(parts)
    if job.state == "finished":
        text += "\n\n" + t("train.score_saved")
    if job.error:
        text += f"\n\n⚠ {inert_inline(job.error)}"
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
    value = (read_config(run_dir).get("resolved") or {}).get("global_batch")
    return value if isinstance(value, int) and value > 0 else None


def job_preset(job: Any) -> str:
    argv = list(job.argv)
    return argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else ""


def before_after_cells(run_dir: Path) -> list[str]:
    """The history's SFT → DPO cells of a run, from its eval.json ("–" where it has none)."""
    result = load_result(run_dir)
    numbers = headline(result) if result else {}
    return [before_after(numbers, key) for key, _ in BEFORE_AFTER]


def eval_runs(runs_dir: Path) -> list[str]:
    """Runs with an end-of-run evaluation (eval.json), newest first."""
    return [run["name"] for run in list_runs(runs_dir) if (Path(run["path"]) / EVAL_JSON).is_file()]


def eval_view(result: dict[str, Any] | None, run: str) -> tuple[str, Any, list[Any]]:
    """(summary Markdown, table rows, one figure per EVAL_CHARTS name) of a run's evaluation."""
    if not result:
        message = t("train.eval_pick") if not run else t("train.eval_none").format(run=inert_inline(run))
        return message, [], plots.eval_figures(None, t("train.eval_no_chart"))
    models = result.get("models", {})
    lines = [
        f"**{inert_inline(run)}** · SFT {inert_inline(str(models.get('ref', {}).get('label', '?')))} → DPO "
        f"{inert_inline(str(models.get('model', {}).get('label', '?')))} · β = {result.get('beta')} · "
        f"{result.get('seconds', '?')} s"
    ]
    numbers = headline_line(headline(result))
    if numbers:
        lines.append(numbers)
    lines += [t("train.eval_note").format(note=inert_inline(str(note))) for note in result.get("notes") or []]
    rows = {"data": [eval_cells(r) for r in result_rows(result)],
            "headers": headers("train-eval-table", EVAL_TABLE_HEADERS)}
    return "  \n".join(lines), rows, plots.eval_figures(result)


def eval_cells(row: dict[str, Any]) -> list[Any]:
    """One row of the evaluation table in the session's language; list names and categories are data."""
    kind, _, name = row["group"].partition(": ")
    if row["group"] == "all":
        group = t("eval.group.all")
    elif name and kind in ("category", "language"):
        group = f"{t(f'eval.group.{kind}')}: {name}"
    else:
        group = row["group"]
    note = t("eval_chart.behaviour.not_meaningful") if row["note"] else ""
    return [t(f"eval.section.{row['section']}"), group, t(f"eval.metric.{row['metric'].replace(' ', '_')}"),
            _cell(row["sft"]), _cell(row["dpo"]), row["n"], note]


def run_figures(cache: dict[str, Any]) -> list[Any]:
    """The four live figures of the run whose metric rows ``cache`` holds (waiting ones before its first step)."""
    rows, alpha = cache.get("rows") or [], cache.get("rpo_alpha")
    return plots.metric_figures(plots.with_dpo_loss(rows, alpha) if alpha and plots.has_nll(rows) else rows)


def _cell(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else ("–" if value is None else value)


class TrainHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._history_cache: dict[tuple[int, str, float | None], list[Any]] = {}

    # --- the form --------------------------------------------------------------------------------------
    def preset_values(self, preset: str, request: gr.Request | None = None) -> dict[str, Any]:
        """The form filled from a preset (the data and run name the user chose are kept)."""
        require(request, Role.VIEWER, self.ctx.settings)

        config = load_preset(preset) if preset else TrainConfig()
        names = ("model", "ref_model", *(f.name for f in FIELDS))
        values = {name: getattr(config, name) for name in names} | loss_picker.form_values(config)
        return {name: gr.update(value=value) for name, value in values.items()}

    def show_command(self, form: dict[str, Any], request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.VIEWER, self.ctx.settings)
        try:
            plan = plan_train_job(form)
        except UserError as error:
            return {"command": f"# {error}", "message": f"⚠ {inert_inline(str(error))}", **field_updates(str(error))}
        return {"command": localized_command(plan.command(self.ctx.settings)), "message": "", **field_updates(None)}

    def start(self, form: dict[str, Any], request: gr.Request | None = None) -> dict[str, Any]:
        """Validate the form, then start the job and show it."""
        user = require(request, Role.ADMIN, self.ctx.settings)
        try:
            job, plan = start_train_job(self.ctx.jobs, plan_train_job(form), self.ctx.settings, owner=user.name)
        except UserError as error:
            return {"message": f"⚠ {inert_inline(str(error))}", **field_updates(str(error))}
        run_dir = inert_inline(str(job.run_dir))
        message = t("train.started").format(job=job.id, state=state_name(job.state), run_dir=run_dir)
        return {
            "job_id": job.id,
            "cache": {},
            "command": plan.command(self.ctx.settings),
            "message": message,
            "watch": gr.update(choices=self.job_choices(), value=job.id),
            **field_updates(None),
        }

    # --- job control -----------------------------------------------------------------------------------
    def cancel(self, job_id: int | None, armed: float | None, request: gr.Request | None = None) -> dict[str, Any]:
        """Two clicks: the first turns the button into "Confirm cancel", the second (within CONFIRM_WINDOW_S)
        sends the job SIGTERM (it saves a checkpoint, then stops)."""
        require(request, Role.ADMIN, self.ctx.settings)
        if not job_id:
            raise gr.Error(t("train.no_job_selected"))
        if not armed or time.time() - armed > CONFIRM_WINDOW_S:
            return {"armed": time.time(), "cancel": gr.update(value=t("train.confirm_cancel"))}
        job = self.ctx.jobs.cancel(int(job_id), wait=False)
        return {
            "armed": None,
            "cancel": gr.update(value=t("train.cancel"), interactive=False),
            "message": t("train.cancelled").format(job=job.id, state=state_name(job.state)),
        }

    def resume(self, job_id: int | None, request: gr.Request | None = None) -> dict[str, Any]:
        user = require(request, Role.ADMIN, self.ctx.settings)
        if not job_id:
            raise gr.Error(t("train.no_job_selected"))
        job = self.ctx.jobs.resume(int(job_id), owner=user.name)
        return {
            "job_id": job.id,
            "cache": {},
            "message": t("train.resumed").format(job=job.id, state=state_name(job.state)),
            "watch": gr.update(choices=self.job_choices(), value=job.id),
        }

    def score(self, run: str | None, collection: str | None, request: gr.Request | None = None) -> dict[str, Any]:
        """Start a background job scoring ``collection`` with ``run`` (its final model against its reference)."""
        user = require(request, Role.ADMIN, self.ctx.settings)

        trained = [job for job in self.ctx.jobs.list_jobs(limit=100, kinds=TRAIN_KINDS) if job.name == run]
        devices = trained[0].devices if trained else "cpu"  # where the run trained fits its model
        job = start_score_job(
            self.ctx.jobs, self.ctx.settings, run or "", collection or "", devices=devices, owner=user.name
        )
        return {"score_job": job.id, "score_status": score_text(job, {}, time.time())}

    # --- watching --------------------------------------------------------------------------------------
    def job_choices(self) -> list[tuple[str, int]]:
        jobs = self.ctx.jobs.list_jobs(limit=50, kinds=TRAIN_KINDS)
        return [(job_label(job.id, job.name, job.state), job.id) for job in jobs]

    def current_job(self, kinds: tuple[str, ...] = TRAIN_KINDS) -> int | None:
        """The job to show on opening the page: the newest active one, else the newest."""
        jobs = self.ctx.jobs.list_jobs(limit=50, kinds=kinds)
        for job in jobs:
            if job.state in ACTIVE_STATES:
                return job.id
        return jobs[0].id if jobs else None

    def _shown_job(self, job_id: int | None, cache: dict[str, Any]) -> dict[str, Any]:
        """The shown run: status, the four figures (only when new metric lines arrived), log, buttons, cache."""
        if not job_id:
            out: dict[str, Any] = {"status": t("train.no_job"), "log": "", "cache": {"run_dir": ""}}
            if cache.get("run_dir") != "":
                out.update(zip(PLOT_NAMES, plots.idle_figures(), strict=True))
            return out | {"cancel": gr.update(interactive=False), "resume": gr.update(interactive=False)}
        try:
            view = self.ctx.jobs.watch(int(job_id))
        except UserError as error:
            return {"status": f"⚠ {inert_inline(str(error))}", "log": ""}
        run_dir = view.job.run_dir
        cache, changed = read_new_metrics(run_dir, cache)
        if cache.get("rpo_alpha") is None:
            cache["rpo_alpha"] = _rpo_alpha(run_dir)
        rows = cache["rows"]
        out = {}
        if changed or "drawn" not in cache:
            out.update(zip(PLOT_NAMES, run_figures(cache), strict=True))
        cache["drawn"] = True
        last = next((row for row in reversed(rows) if "loss" in row), None) or view.metrics
        if not cache.get("global_batch"):
            cache["global_batch"] = _global_batch(run_dir)
        state = view.job.state
        return out | {
            "status": progress_text(view.job, view.status, last, time.time(), cache["global_batch"]),
            "log": readable_log(view.log_tail),
            "cache": cache,
            "cancel": gr.update(interactive=state in ("running", "queued")),
            "resume": gr.update(interactive=state in ("failed", "cancelled")),
        }

    def _lists(self, job_id: int | None, seen: dict[str, Any]) -> dict[str, Any]:
        """The run picker, the history, the compare and evaluation run lists, the collection pickers: only those that
        changed since ``seen`` (what this page last received), and ``seen`` brought up to date."""
        jobs = self.ctx.jobs.list_jobs(limit=100, kinds=TRAIN_KINDS)
        runs_dir = self.ctx.settings.runs_dir
        current = {
            "watch": [(job.id, job.name, job.state) for job in jobs[:50]],
            "history": self.history_rows(jobs),
            "runs": [run["name"] for run in list_runs(runs_dir)],
            "evaluated": eval_runs(runs_dir),
            "collections": [c.name for c in self.ctx.store.list_collections()],
        }
        out: dict[str, Any] = {}
        if current["watch"] != seen.get("watch"):
            choices = [(job_label(job_id_, name, state), job_id_) for job_id_, name, state in current["watch"]]
            out["watch"] = gr.update(choices=choices, value=job_id)
        if current["history"] != seen.get("history"):  # headers too: plain rows would bring back the English ones
            out["history"] = {"data": current["history"], "headers": headers("train-history", HISTORY_HEADERS)}
        if current["runs"] != seen.get("runs"):
            out["compare_runs"] = gr.update(choices=current["runs"])
        if current["evaluated"] != seen.get("evaluated"):
            out["eval_run"] = gr.update(choices=current["evaluated"])
        if seen and current["collections"] != seen.get("collections"):  # an import or a vote elsewhere; load sets them
            names = current["collections"]
            out |= {"data": gr.update(choices=names), "eval_data": gr.update(choices=["", *names]),
                    "score_collection": gr.update(choices=names)}
        if out:
            out["seen"] = current
        return out

    def _score_panel(self, score_job: int | None) -> dict[str, Any]:
        if not score_job:
            return {}
        try:
            view = self.ctx.jobs.watch(int(score_job), lines=0)
        except UserError as error:
            return {"score_status": f"⚠ {inert_inline(str(error))}"}
        return {"score_status": score_text(view.job, view.status, time.time())}

    def poll(
        self,
        job_id: int | None,
        cache: dict[str, Any] | None,
        seen: dict[str, Any] | None = None,
        armed: float | None = None,
        score_job: int | None = None,
        request: gr.Request | None = None,
    ) -> dict[str, Any]:
        """Every 2 s: the shown run, the lists that changed, the scoring job. A page showing no run takes the
        newest active one, wherever it was started."""
        require(request, Role.VIEWER, self.ctx.settings)
        out: dict[str, Any] = {}
        if not job_id:
            job_id = self.current_job()
            if job_id:
                out["job_id"], cache = job_id, {}
        out.update(self._shown_job(job_id, cache or {}))
        out.update(self._lists(job_id, seen or {}))
        out.update(self._score_panel(score_job))
        if armed and time.time() - armed > CONFIRM_WINDOW_S:  # the confirming click did not come
            out["armed"] = None
            out["cancel"] = gr.update(value=t("train.cancel"), **_without_value(out.get("cancel")))
        return out

    def refresh(self, job_id: int | None, request: gr.Request | None = None) -> dict[str, Any]:
        """The picker, history and run lists again, whether or not they changed."""
        require(request, Role.VIEWER, self.ctx.settings)
        return self._lists(job_id, {})

    def history_rows(self, jobs: list[Any]) -> list[list[Any]]:
        """The job history table: state, preset, data hash, best eval accuracy, SFT → DPO numbers, duration (running
        jobs: their time so far)."""
        rows = []
        for job in jobs:
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
            row[STATE_COLUMN] = state_name(job.state)
            if job.active:
                row[DURATION_COLUMN] = format_duration(job.duration())
            rows.append(row)
        return rows

    def history(self, request: gr.Request | None = None) -> list[list[Any]]:
        require(request, Role.VIEWER, self.ctx.settings)
        return self.history_rows(self.ctx.jobs.list_jobs(limit=100, kinds=TRAIN_KINDS))

    def compare(self, runs: list[str] | None, metric: str, request: gr.Request | None = None) -> Any:
        require(request, Role.VIEWER, self.ctx.settings)

        chosen = {name: read_metrics(self.ctx.settings.runs_dir / name) for name in runs or []}
        return plots.overlay_figure(chosen, metric or "loss")

    # --- a run's evaluation ----------------------------------------------------------------------------
    def show_eval(self, run: str | None, request: gr.Request | None = None) -> dict[str, Any]:
        """Summary, table, charts and CSV file of ``run``'s eval.json; the CSV is exported for download."""
        require(request, Role.VIEWER, self.ctx.settings)

        run = (run or "").strip()
        result, shown = self._evaluation(run)
        csv_path = None
        if result:
            runs_dir, exports = self.ctx.settings.runs_dir, self.ctx.settings.exports_dir
            csv_path = str(export_csv(runs_dir / run / EVAL_JSON, exports / f"eval-{run}.csv"))
        return {**shown, "eval_csv": csv_path}

    def _evaluation(self, run: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(``run``'s eval.json or None, the summary, table and charts showing it)."""
        result = None
        if run:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", run) or ".." in run:
                raise gr.Error(t("train.not_a_run").format(run=repr(run)))
            result = load_result(self.ctx.settings.runs_dir / run)
        summary, rows, charts = eval_view(result, run)
        return result, {"eval_summary": summary, "eval_table": rows, **dict(zip(EVAL_PLOT_NAMES, charts, strict=True))}

    def history_select(self, evt: gr.SelectData, request: gr.Request | None = None) -> dict[str, Any]:
        """Clicking a row of the job history shows that run's evaluation and picks it for scoring."""
        require(request, Role.VIEWER, self.ctx.settings)
        row = evt.row_value or []
        run = str(row[HISTORY_HEADERS.index("run")]) if len(row) > 1 else ""
        if not run:
            return {}
        return {
            "eval_run": gr.update(value=run),
            "selected_run": run,
            "score_target": score_target_text(run),
        }

    def language_changed(
        self,
        job_id: int | None,
        cache: dict[str, Any] | None,
        score_job: int | None,
        selected_run: str | None,
        eval_run: str | None,
        compare_runs: list[str] | None = None,
        metric: str | None = None,
        request: gr.Request | None = None,
    ) -> dict[str, Any]:
        """After a switch of language: what the handlers wrote, again in the new language (the shown run's status and
        figures, the run picker, the history, the scoring line, the chosen run and its evaluation, the comparison)."""
        require(request, Role.VIEWER, self.ctx.settings)
        redraw = {k: v for k, v in (cache or {}).items() if k != "drawn"} if job_id else {}
        out = {**self._shown_job(job_id, redraw), **self._lists(job_id, {}), **self._score_panel(score_job)}
        if selected_run:
            out["score_target"] = score_target_text(selected_run)
        out["compare_plot"] = self.compare(compare_runs, metric or "loss", request)
        return out | self._evaluation((eval_run or "").strip())[1]

    def load(self, request: gr.Request | None = None) -> dict[str, Any]:
        """On page load: pickers (models, collections, runs) and the job to watch (a running one re-attaches)."""
        require(request, Role.VIEWER, self.ctx.settings)

        self.ctx.jobs.poll()
        models = [(spec.label, spec.ref) for spec in list_models(self.ctx.settings)]
        collections = [c.name for c in self.ctx.store.list_collections()]
        data_value = (
            SAMPLES_COLLECTION if SAMPLES_COLLECTION in collections else (collections[0] if collections else "")
        )
        job_id = self.current_job()
        score_job = self.current_job(SCORE_KINDS)
        return {
            "model": gr.update(choices=models),
            "data": gr.update(choices=collections, value=data_value),
            "eval_data": gr.update(choices=["", *collections]),
            "score_collection": gr.update(choices=collections, value=data_value),
            "job_id": job_id,
            "score_job": score_job,
            **self._lists(job_id, {}),
            **self._score_panel(score_job),
        }


def _without_value(update: Any) -> dict[str, Any]:
    """The keyword arguments of a ``gr.update`` other than its value (to merge a new value in)."""
    return {k: v for k, v in (update or {}).items() if k not in ("value", "__type__")}


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


def build(ctx: AppContext) -> dict[str, Any]:
    h = TrainHandlers(ctx)
    presets = list_presets()
    preset_default = DEFAULT_PRESET if DEFAULT_PRESET in presets else (presets[0] if presets else "")
    defaults = load_preset(preset_default) if preset_default else TrainConfig()
    ui: dict[str, Any] = {
        "job_id": gr.State(None),
        "cache": gr.State({}),  # the shown run's metric rows
        "seen": gr.State({}),  # the lists this page last received
        "armed": gr.State(None),  # time of a first click on Cancel
        "selected_run": gr.State(""),
        "score_job": gr.State(None),
    }
    widgets: dict[str, Any] = {}

    with gr.Row():
        with gr.Column(scale=2, min_width=380):
            widgets["preset"] = gr.Dropdown(presets, value=preset_default, elem_id="train-preset")
            widgets["model"] = gr.Dropdown(
                [defaults.model], value=defaults.model, allow_custom_value=True, elem_id="train-model"
            )
            widgets["ref_model"] = gr.Textbox(value=defaults.ref_model, elem_id="train-ref-model")
            widgets["data"] = gr.Dropdown([], allow_custom_value=True, elem_id="train-data")
            with gr.Row():
                widgets["eval_data"] = gr.Dropdown([""], value="", allow_custom_value=True, elem_id="train-eval-data")
                widgets["eval_fraction"] = gr.Number(value=defaults.eval_fraction, elem_id="train-eval-fraction")
            with gr.Accordion(open=True, elem_id="train-hyper-box"):
                widgets.update(loss_picker.build(defaults))
                with gr.Row():
                    for field in [f for f in FIELDS if not f.advanced]:
                        widgets[field.name] = _widget(field)
            with gr.Accordion(open=False, elem_id="train-advanced-box"):
                with gr.Row():
                    widgets["run_name"] = gr.Textbox(elem_id="train-run-name")
                    widgets["devices"] = gr.Textbox(value="cpu", elem_id="train-devices")
                    widgets["num_processes"] = gr.Number(value=1, precision=0, minimum=1, elem_id="train-num-processes")
                    for field in [f for f in FIELDS if f.advanced]:
                        widgets[field.name] = _widget(field)
            for field in FIELDS:
                widgets[field.name].value = getattr(defaults, field.name)
            with gr.Row():
                show = gr.Button(elem_id="train-show-command")
                start = gr.Button(variant="primary", elem_id="train-start")
            ui["message"] = gr.Markdown(elem_id="train-message")
            ui["command"] = gr.Code(language="shell", interactive=False, wrap_lines=True, elem_id="train-command")
        with gr.Column(scale=3):
            with gr.Row():
                ui["watch"] = gr.Dropdown([], elem_id="train-job", scale=3)
                ui["cancel"] = gr.Button(variant="stop", interactive=False, elem_id="train-cancel", scale=1)
                ui["resume"] = gr.Button(interactive=False, elem_id="train-resume", scale=1)
            ui["status"] = gr.Markdown(t("train.no_job", "en"), elem_id="train-status")
            gr.Markdown(elem_classes=["explain-box"], elem_id="train-explain")
            # Each plot says what it waits for from the start (Gradio's empty-plot icon otherwise); the first timer
            # tick and a language switch draw real figures.
            for row in (plots.PANELS[:2], plots.PANELS[2:]):
                with gr.Row():
                    for panel in row:
                        ui[f"plot_{panel.key}"] = gr.Plot(
                            plots.placeholder(t(f"plot.{panel.key}", "en"), t("train.no_curves", "en")),
                            show_label=False, elem_id=f"train-plot-{panel.key}",
                        )
            ui["log"] = gr.Textbox(lines=8, max_lines=12, interactive=False, autoscroll=True, elem_id="train-log")

    with gr.Accordion(open=True, elem_id="train-history-box"):
        refresh = gr.Button(size="sm", elem_id="train-refresh")
        ui["history"] = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="train-history", wrap=True)
        with gr.Row(equal_height=True):
            ui["score_target"] = gr.Markdown(elem_id="train-score-target")
            ui["score_collection"] = gr.Dropdown([], elem_id="train-score-collection")
            score_button = gr.Button(elem_id="train-score")
        ui["score_status"] = gr.Markdown(elem_id="train-score-status")
    with gr.Accordion(open=False, elem_id="train-eval-box"):
        with gr.Row():
            ui["eval_run"] = gr.Dropdown([], allow_custom_value=True, elem_id="train-eval-run", scale=2)
            ui["eval_csv"] = gr.File(interactive=False, elem_id="train-eval-csv", scale=1)
        ui["eval_summary"] = gr.Markdown(t("train.eval_pick", "en"), elem_id="train-eval-summary")
        ui["eval_table"] = gr.Dataframe(
            headers=EVAL_TABLE_HEADERS, interactive=False, elem_id="train-eval-table", wrap=True
        )
        for name, key in zip(EVAL_PLOT_NAMES, EVAL_CHARTS, strict=True):  # one a row: category labels need the width
            title = t(f"eval_chart.{key}.title", "en").format(beta="…")
            empty = plots.placeholder(title, t("train.eval_no_chart", "en"), plots.EVAL_HEIGHT, plots.EVAL_TITLE_WIDTH)
            ui[name] = gr.Plot(empty, show_label=False, elem_id=f"train-eval-{key}")
    build_publish_panel(ctx, ui["eval_run"])
    with gr.Accordion(open=False, elem_id="train-compare-box"):
        with gr.Row():
            ui["compare_runs"] = gr.Dropdown([], multiselect=True, elem_id="train-compare-runs")
            compare_metric = gr.Dropdown(COMPARE_METRICS, value="loss", elem_id="train-compare-metric")
            ui["compare_metric"] = compare_metric
        empty = plots.placeholder(t("plot.compare", "en").format(metric="loss"), t("plot.compare_none", "en"))
        ui["compare_plot"] = compare_plot = gr.Plot(empty, show_label=False, elem_id="train-compare-plot")
    build_sweep_panel(ctx)
    ui.update(widgets)
    outputs = list(ui.values())
    picker_language = loss_picker.wire(widgets)

    def wire(method: Any, names: tuple[str, ...] | None = None) -> Any:
        return keyed(bind(method), ui if names is None else {name: ui[name] for name in names})

    form_inputs = [widgets[name] for name in FORM_NAMES]
    widgets["preset"].change(wire(h.preset_values), inputs=[widgets["preset"]], outputs=outputs)
    show.click(
        keyed(form(h.show_command, FORM_NAMES), {name: ui[name] for name in COMMAND_OUTPUTS}),
        inputs=form_inputs,
        outputs=[ui[name] for name in COMMAND_OUTPUTS],
        api_name="train_command",
    )
    start.click(
        keyed(form(h.start, FORM_NAMES), {name: ui[name] for name in START_OUTPUTS}),
        inputs=form_inputs,
        outputs=[ui[name] for name in START_OUTPUTS],
        concurrency_limit=1,
        api_name="train_start",
    )
    ui["watch"].input(
        lambda value: (value, {}, None), inputs=[ui["watch"]], outputs=[ui["job_id"], ui["cache"], ui["armed"]]
    )
    ui["cancel"].click(wire(h.cancel), inputs=[ui["job_id"], ui["armed"]], outputs=outputs, api_name="train_cancel")
    ui["resume"].click(wire(h.resume), inputs=[ui["job_id"]], outputs=outputs, api_name="train_resume")
    refresh.click(wire(h.refresh), inputs=[ui["job_id"]], outputs=outputs)
    ui["history"].select(wire(h.history_select), outputs=outputs)
    score_button.click(
        wire(h.score), inputs=[ui["selected_run"], ui["score_collection"]], outputs=outputs, api_name="train_score"
    )
    ui["eval_run"].change(wire(h.show_eval), inputs=[ui["eval_run"]], outputs=outputs, api_name="train_eval")
    gr.on(
        [ui["compare_runs"].change, compare_metric.change],
        bind(h.compare),
        inputs=[ui["compare_runs"], compare_metric],
        outputs=[compare_plot],
    )
    # Gradio's own autoscroll leaves a non-interactive textbox at its top: scroll to the newest line in the page.
    ui["log"].change(None, js=SCROLL_LOG_TO_END, show_progress="hidden")
    timer = gr.Timer(value=2)
    timer.tick(
        wire(h.poll, POLL_OUTPUTS),
        inputs=[ui["job_id"], ui["cache"], ui["seen"], ui["armed"], ui["score_job"]],
        outputs=[ui[name] for name in POLL_OUTPUTS],
        show_progress="hidden",
        concurrency_limit=None,
        api_name="train_poll",
        api_visibility="undocumented",
    )

    relocalize_inputs = [ui["job_id"], ui["cache"], ui["score_job"], ui["selected_run"], ui["eval_run"]]
    relocalize_inputs += [ui["compare_runs"], ui["compare_metric"]]
    language = [(wire(h.language_changed), relocalize_inputs, outputs), picker_language]
    return {"load": (wire(h.load), [], outputs), "language": language}
