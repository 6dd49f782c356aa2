"""Synthesize panel (admin only), inside the Pairs tab: a prompts file becomes a collection of synthetic pairs.

The synthesis runs as a background job through the JobManager, like a training run (``python -m ctllm synth ...``
in its own process group, in ``<data_dir>/synth-jobs/<name>/``); the page reads the job's status.json every 2 s
while it runs (prompts done / total, ETA, pairs added, filter counts) and refreshes the Pairs tab's collection
picker, so the new collection can be reviewed as soon as its first pairs are stored. Every handler checks the
admin role on the server; the panel is shown to admins only.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.jobs.devices import parse_devices
from ctllm.models.registry import list_models
from ctllm.paths import safe_resolve
from ctllm.synth import SynthOptions, preflight, start_synth_job
from ctllm.synth.filters import NEAR_IDENTICAL_THRESHOLD
from ctllm.ui.auth import Forbidden, Role, require
from ctllm.ui.context import AppContext
from ctllm.ui.i18n import STRINGS, t
from ctllm.ui.job_progress import state_name
from ctllm.ui.render import code_block, inert_inline
from ctllm.ui.train_tab import format_duration, shown_command

KIND = "synth"
ACTIVE = ("queued", "running", "cancelling")
FILTERS = ("empty", "cut_off", "wrong_language", "near_identical", "too_long")  # named "synth.filter.<name>"
PROMPT_FILE_TYPES = [".txt", ".json", ".jsonl", ".csv", ".tsv", ".parquet"]


def filter_name(name: str) -> str:
    return t(f"synth.filter.{name}") if name in FILTERS else name


def no_strong_model() -> tuple[str, str]:
    """The strong-model picker's "none" choice, in the session's language."""
    return (t("synth.no_strong"), "")


def argv_value(argv: tuple[str, ...] | list[str], flag: str) -> str | None:
    """The value after ``flag`` in a job's command, if any."""
    argv = list(argv)
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def remaining_seconds(status: dict[str, Any], now: float) -> float | None:
    """The run's ETA (written after each batch) less the time since it was written."""
    eta = _number(status.get("eta_s"))
    if eta is None:
        return None
    try:
        written = datetime.fromisoformat(str(status.get("updated"))).timestamp()
    except ValueError:
        return eta
    return max(0.0, eta - max(0.0, now - written))


def filter_counts(filtered: Any) -> str:
    """'dropped 3: empty 0, cut off 2, ...' from a {filter: count} dict."""
    if not isinstance(filtered, dict):
        return t("synth.dropped").format(n=0)
    counts = {name: int(count) for name, count in filtered.items() if _number(count) is not None}
    shown = t("synth.list_separator").join(f"{filter_name(name)} {count}" for name, count in counts.items())
    return t("synth.dropped").format(n=sum(counts.values())) + (f" ({shown})" if shown else "")


def progress_markdown(job: Any, status: dict[str, Any] | None, now: float) -> str:
    """State, prompts done / total, ETA, speed, pairs added and filter counts of one synthesis job."""
    status = status or {}
    collection = status.get("collection") or argv_value(job.argv, "--collection") or "?"
    heading = t("synth.heading").format(
        job=job.id, collection=inert_inline(str(collection)), state=state_name(job.state)
    )
    parts = [heading]
    step, total = _number(status.get("step")) or 0, _number(status.get("total_steps"))
    running = job.state in ("running", "cancelling")
    if total:
        parts.append(
            t("synth.prompts_done").format(done=int(step), total=int(total), share=f"{min(1.0, step / total):.0%}")
        )
    if job.state == "queued":
        parts.append(t("synth.queued"))
    elif running:
        eta = remaining_seconds(status, now)
        if eta is not None and status.get("phase") == "generating":
            parts.append(t("job.eta").format(eta=format_duration(eta)))
        else:
            parts.append(synth_phase(status.get("phase")))
    rate = _number(status.get("pairs_per_minute"))
    if rate:
        parts.append(t("synth.rate").format(rate=f"{rate:.1f}"))
    parts.append(t("job.elapsed").format(elapsed=format_duration(job.duration(now))))
    lines = [" · ".join(parts)]
    summary = status.get("summary") if isinstance(status.get("summary"), dict) else None
    source = summary or status
    if "added" in source or summary:
        added = t("synth.added").format(
            added=int(source.get("added") or 0), duplicates=int(source.get("duplicates") or 0)
        )
        lines.append(f"{added} · {filter_counts(source.get('filtered'))}")
    if summary and job.final:
        names = ("prompts", "rows", "bad_rows", "repeated_rows", "already_done", "processed", "remaining", "seed")
        lines.append(t("synth.summary").format(**{name: summary.get(name) for name in names}))
    if job.error:
        lines.append(f"⚠ {inert_inline(job.error)}")
    elif job.state == "cancelled":
        lines.append(t("synth.resume_hint"))
    return "\n\n".join(lines)


def preflight_text(checked: Any) -> str:
    """What the checks before the start found (a ``ctllm.synth.Preflight``), in the session's language."""
    text = t("synth.preflight").format(prompts=checked.prompts, with_answer=checked.with_answer)
    if checked.bad_rows:
        text += t("synth.preflight_bad_rows").format(bad_rows=checked.bad_rows)
    text += t("synth.preflight_weak").format(weak=inert_inline(str(checked.weak)))
    if checked.strong:
        text += t("synth.preflight_strong").format(strong=inert_inline(str(checked.strong)))
    return text


def synth_phase(phase: Any) -> str:
    """What a running synthesis is doing ("loading…", "generating…"), in the session's language."""
    key = f"synth.phase.{phase or 'starting'}"
    return t(key) if key in STRINGS else f"{phase}…"


def _int(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} = {value!r} is not a number") from None
    if not number.is_integer():
        raise UserError(f"{name} = {value!r} must be a whole number")
    return int(number)


def _float(value: Any, name: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} = {value!r} is not a number") from None


class SynthHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # --- helpers ---------------------------------------------------------------------------------------
    def synth_jobs(self, limit: int = 200) -> list[Any]:
        return [job for job in self.ctx.jobs.list_jobs(limit=limit) if job.kind == KIND]

    def job_choices(self) -> list[tuple[str, int]]:
        return [
            (f"{job.id} · {argv_value(job.argv, '--collection') or job.name} · {state_name(job.state)}", job.id)
            for job in self.synth_jobs(50)
        ]

    def current_job(self) -> int | None:
        """The job to show on opening the page: the newest unfinished one, else the newest."""
        jobs = self.synth_jobs(50)
        for job in jobs:
            if job.state in ACTIVE:
                return job.id
        return jobs[0].id if jobs else None

    def _synth_job(self, job_id: Any) -> Any:
        if not job_id:
            raise gr.Error(t("synth.no_job_selected"))
        try:
            job = self.ctx.jobs.get(int(job_id))
        except UserError as error:
            raise gr.Error(str(error)) from None
        if job.kind != KIND:
            raise gr.Error(t("synth.not_synth_job").format(job=job.id, kind=job.kind))
        return job

    def _prompts_source(self, upload: str | None, typed: str | None) -> tuple[Path, bool]:
        """(the prompts file, whether it is an upload) — a typed path only inside the operator's allowed folders."""
        if upload:
            return Path(upload), True
        typed = (typed or "").strip()
        if not typed:
            raise UserError(t("synth.no_prompts"))
        roots = self.ctx.settings.path_roots
        base = None if Path(typed).expanduser().is_absolute() else Path(roots[0])
        return safe_resolve(typed, roots, base=base), False

    # --- actions (admin) -------------------------------------------------------------------------------
    def start(
        self,
        upload: str | None,
        path: str,
        collection: str,
        weak: str,
        strong: str,
        max_new_tokens: float,
        batch_size: float,
        limit: float | None,
        temperature: float,
        top_p: float,
        seed: float | None,
        near_threshold: float,
        split: str,
        threads: float,
        devices: str,
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """Check the form, the models and the prompts file, then start the job. Returns (job id, message, timer,
        job picker); on a bad input nothing starts and the message says which field or file is at fault."""
        user = require(request, Role.ADMIN, self.ctx.settings)

        settings = self.ctx.settings
        try:
            prompts, uploaded = self._prompts_source(upload, path)
            limit_value = _int(limit, "limit")
            seed_value = _int(seed, "seed")
            options = SynthOptions(
                prompts=str(prompts),
                collection=(collection or "").strip() or f"synth-{prompts.stem}",
                weak=(weak or "").strip() or "embedded",
                strong=(strong or "").strip() or None,
                batch_size=_int(batch_size, "batch size", 8),
                max_new_tokens=_int(max_new_tokens, "max new tokens", 256),
                temperature=_float(temperature, "temperature", 0.7),
                top_p=_float(top_p, "top-p", 0.9),
                seed=seed_value if seed_value is not None and seed_value >= 0 else None,
                limit=limit_value if limit_value else None,
                near_threshold=_float(near_threshold, "near-identical threshold", NEAR_IDENTICAL_THRESHOLD),
                split=(split or "").strip() or "train",
                threads=_int(threads, "threads", 0),
            )
            device_set = parse_devices((devices or "").strip() or "cpu")
            checked = preflight(options, settings, max_bytes=settings.max_upload_mb << 20)
            job = start_synth_job(
                self.ctx.jobs, options, settings, devices=device_set, owner=user.name, copy_prompts=uploaded
            )
        except UserError as error:
            return gr.skip(), t("synth.not_started").format(error=inert_inline(str(error))), gr.skip(), gr.skip()
        message = t("synth.started").format(
            job=job.id,
            state=state_name(job.state),
            collection=inert_inline(options.collection),
            checked=preflight_text(checked),
        )
        message += "\n\n" + code_block(shown_command(list(job.argv), device_set))
        return job.id, message, gr.update(active=True), gr.update(choices=self.job_choices(), value=job.id)

    def cancel(self, job_id: int | None, request: gr.Request | None = None) -> str:
        require(request, Role.ADMIN, self.ctx.settings)
        job = self._synth_job(job_id)
        try:
            job = self.ctx.jobs.cancel(job.id, wait=False)
        except UserError as error:
            raise gr.Error(str(error)) from None
        return t("synth.cancelled").format(job=job.id, state=state_name(job.state))

    def resume(self, job_id: int | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        user = require(request, Role.ADMIN, self.ctx.settings)
        job = self._synth_job(job_id)
        try:
            new = self.ctx.jobs.resume(job.id, owner=user.name)
        except UserError as error:
            raise gr.Error(str(error)) from None
        message = t("synth.resumed").format(job=new.id, state=state_name(new.state))
        return new.id, message, gr.update(active=True), gr.update(choices=self.job_choices(), value=new.id)

    # --- watching (admin) ------------------------------------------------------------------------------
    def poll(self, job_id: int | None, known: list[str] | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Every 2 s while a job is watched: (status, log tail, cancel button, resume button, timer, the Pairs tab's
        collection picker, the collection names last sent). The timer stops once the job is over."""
        require(request, Role.ADMIN, self.ctx.settings)
        names = [c.name for c in self.ctx.store.list_collections()]
        picker = gr.update(choices=names) if names != known else gr.skip()
        if not job_id:
            off = gr.update(interactive=False)
            return t("synth.no_job"), "", off, off, gr.update(active=False), picker, names
        try:
            view = self.ctx.jobs.watch(int(job_id), lines=20)
        except UserError as error:
            return f"⚠ {inert_inline(str(error))}", "", gr.skip(), gr.skip(), gr.update(active=False), picker, names
        job = view.job
        return (
            progress_markdown(job, view.status, time.time()),
            view.log_tail,
            gr.update(interactive=job.state in ("running", "queued")),
            gr.update(interactive=job.state in ("failed", "cancelled")),
            gr.update(active=job.state in ACTIVE),
            picker,
            names,
        )

    def language_changed(self, job_id: int | None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """After a switch of language (admins; nothing for others): the status line, the job picker and the strong
        model's choices again, in the new language."""
        try:
            require(request, Role.ADMIN, self.ctx.settings)
        except Forbidden:
            return gr.skip(), gr.skip(), gr.skip()
        models = [(spec.label, spec.ref) for spec in list_models(self.ctx.settings)]
        return (
            self.poll(job_id, None, request)[0],
            gr.update(choices=self.job_choices()),
            gr.update(choices=[no_strong_model(), *models]),
        )

    def select_job(self, job_id: int | None, request: gr.Request | None = None) -> tuple[Any, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        return job_id, gr.update(active=True)  # one poll at least; it stops the timer again for a finished job

    def load(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Page load: the panel for admins (model choices, the job to watch); hidden for everyone else."""
        try:
            require(request, Role.ADMIN, self.ctx.settings)
        except Forbidden:
            return gr.update(visible=False), gr.skip(), gr.skip(), gr.skip(), None, gr.update(active=False)

        self.ctx.wait_until_ready()
        self.ctx.jobs.poll()
        models = [(spec.label, spec.ref) for spec in list_models(self.ctx.settings)]
        job_id = self.current_job()
        return (
            gr.update(visible=True),
            gr.update(choices=models),
            gr.update(choices=[no_strong_model(), *models]),
            gr.update(choices=self.job_choices(), value=job_id),
            job_id,
            gr.update(active=job_id is not None),
        )


def build(ctx: AppContext, collection_picker: Any) -> dict[str, Any]:
    """The panel (inside the Pairs tab's layout); ``collection_picker`` is the tab's collection dropdown, whose
    choices the panel refreshes while a job adds a collection. Returns the handlers ("handlers") and the event that
    writes the panel again after a switch of language ("language": fn, inputs, outputs)."""
    h = SynthHandlers(ctx)
    job_id = gr.State(None)
    known = gr.State(None)

    with gr.Accordion(open=False, visible=False, elem_id="synth-panel") as panel:
        gr.Markdown(elem_id="synth-explain", elem_classes=["explain-box"])
        with gr.Row():
            upload = gr.File(type="filepath", file_types=PROMPT_FILE_TYPES, elem_id="synth-file")
            with gr.Column():
                path = gr.Textbox(elem_id="synth-path")
                collection = gr.Textbox(elem_id="synth-collection")
        with gr.Row():
            weak = gr.Dropdown(
                [("embedded", "embedded")], value="embedded", allow_custom_value=True, elem_id="synth-weak"
            )
            strong = gr.Dropdown([no_strong_model()], value="", allow_custom_value=True, elem_id="synth-strong")
        with gr.Row():
            max_new_tokens = gr.Number(value=256, precision=0, minimum=1, elem_id="synth-max-new")
            batch_size = gr.Number(value=8, precision=0, minimum=1, elem_id="synth-batch-size")
            limit = gr.Number(value=0, precision=0, minimum=0, elem_id="synth-limit")
            temperature = gr.Number(value=0.7, minimum=0, elem_id="synth-temperature")
            top_p = gr.Number(value=0.9, minimum=0, maximum=1, elem_id="synth-top-p")
            seed = gr.Number(value=-1, precision=0, minimum=-1, elem_id="synth-seed")
        with gr.Row():
            near_threshold = gr.Number(value=0.1, minimum=0, maximum=1, elem_id="synth-near-threshold")
            split = gr.Textbox(value="train", elem_id="synth-split")
            threads = gr.Number(value=0, precision=0, minimum=0, elem_id="synth-threads")
            devices = gr.Textbox(value="cpu", elem_id="synth-devices")
        with gr.Row():
            start = gr.Button(variant="primary", elem_id="synth-start")
            watch = gr.Dropdown([], elem_id="synth-job", scale=3)
            cancel = gr.Button(variant="stop", interactive=False, elem_id="synth-cancel")
            resume = gr.Button(interactive=False, elem_id="synth-resume")
        message = gr.Markdown(elem_id="synth-message")
        status = gr.Markdown(t("synth.no_job", "en"), elem_id="synth-status")
        log = gr.Textbox(lines=4, max_lines=8, interactive=False, elem_id="synth-log")

    timer = gr.Timer(value=2, active=False)
    form = [upload, path, collection, weak, strong, max_new_tokens, batch_size, limit, temperature, top_p, seed]
    form += [near_threshold, split, threads, devices]
    start.click(
        h.start, inputs=form, outputs=[job_id, message, timer, watch], concurrency_limit=1, api_name="synth_start"
    )
    cancel.click(h.cancel, inputs=[job_id], outputs=[message], api_name="synth_cancel")
    resume.click(h.resume, inputs=[job_id], outputs=[job_id, message, timer, watch], api_name="synth_resume")
    watch.input(
        h.select_job, inputs=[watch], outputs=[job_id, timer], api_name="synth_select", api_visibility="undocumented"
    )
    timer.tick(
        h.poll,
        inputs=[job_id, known],
        outputs=[status, log, cancel, resume, timer, collection_picker, known],
        show_progress="hidden",
        concurrency_limit=None,
        api_name="synth_poll",
        api_visibility="undocumented",
    )
    gr.on(
        None,
        h.load,
        inputs=[],
        outputs=[panel, weak, strong, watch, job_id, timer],
        show_progress="hidden",
        api_name="synth_load",
        api_visibility="undocumented",
    )
    return {"handlers": h, "language": (h.language_changed, [job_id], [status, watch, strong])}
