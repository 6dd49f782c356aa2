"""One job's progress as Markdown: state, the preparation phase or step / total, ETA, speed. Pure functions, no
Gradio, no I/O: the Train tab's timer hands in the job record and what the run wrote (status.json, metrics).

The run says what it is doing in status.json: ``phase`` (one of :data:`ctllm.runs.PHASES`) with ``phase_done`` and
``phase_total`` when the phase is counted (pairs tokenized, reference batches, prompts evaluated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctllm.evaluate import summary_headline
from ctllm.evaluate.report import BEFORE_AFTER, before_after
from ctllm.ui.i18n import STRINGS, t
from ctllm.ui.render import inert_inline

# The phases before step 1, numbered as the user sees them ("step 2 of 4"); their names are "job.phase.<phase>".
PREPARATION = ("converting", "loading", "tokenizing", "reference")
PHASES = (*PREPARATION, "training", "evaluating", "scoring")
ACTIVE = ("running", "cancelling")


def state_name(state: str) -> str:
    """A job state ("running", "finished", ...) in the session's language."""
    key = f"job.state.{state}"
    return t(key) if key in STRINGS else state


def headline_line(numbers: Mapping[str, float]) -> str:
    """The before/after numbers on one line in the session's language ("pref. acc. 45% → 70% · ...")."""
    return " · ".join(
        f"{t('eval.headline.' + key)} {before_after(numbers, key)}"
        for key, _ in BEFORE_AFTER
        if f"{key}/sft" in numbers or f"{key}/dpo" in numbers
    )


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def phase_text(status: Mapping[str, Any], numbered: bool = True) -> str:
    """'preparing: step 4 of 4, reference pass 42% (84 / 200)', 'evaluating 50% (2 / 4)', or '' without a phase.
    ``numbered=False`` leaves out the training run's preparation steps (for other jobs, e.g. scoring)."""
    phase = status.get("phase")
    if phase not in PHASES:
        return ""
    text = t(f"job.phase.{phase}")
    done, total = _count(status.get("phase_done")), _count(status.get("phase_total"))
    if done is not None and total:
        text += f" {min(1.0, done / total):.0%} ({done} / {total})"
    if numbered and phase in PREPARATION:
        return t("job.preparing_step").format(step=PREPARATION.index(phase) + 1, steps=len(PREPARATION), phase=text)
    return text


def progress_text(
    job: Any,
    status: Mapping[str, Any] | None,
    last: Mapping[str, Any] | None,
    now: float,
    global_batch: int | None = None,
) -> str:
    """State, phase or step / total, ETA and pairs/s of one job, as Markdown.

    The ETA uses the training speed (global batch / pairs per second) when known, so the minutes spent loading
    models before step 1 do not inflate it; otherwise the average time per step so far."""
    status = status or {}
    state = job.state
    step = status.get("step") or (last or {}).get("step") or 0
    total = status.get("total_steps")
    elapsed = job.duration(now)
    phase = status.get("phase")
    parts = [t("job.heading").format(job=job.id, run=inert_inline(job.name), state=state_name(state))]
    if total and phase not in PREPARATION:
        parts.append(t("job.step").format(step=step, total=total, share=f"{min(1.0, step / total):.0%}"))
        speed = (last or {}).get("pairs_per_second")
        if state in ACTIVE and step and elapsed and phase in (None, "training"):
            per_step = global_batch / speed if global_batch and isinstance(speed, (int, float)) and speed > 0 else None
            eta = (per_step or elapsed / step) * (total - step)
            parts.append(t("job.eta").format(eta=format_duration(eta)))
    if state in ACTIVE:
        shown = phase_text(status) if phase != "training" else ""
        if shown:
            parts.append(shown)
        elif not total and phase is None:
            parts.append(t("job.preparing"))
    parts.append(t("job.elapsed").format(elapsed=format_duration(elapsed)))
    if last and isinstance(last.get("pairs_per_second"), (int, float)):
        parts.append(t("job.pairs_per_second").format(rate=f"{last['pairs_per_second']:.2f}"))
    text = " · ".join(parts)
    if status.get("reference"):
        text += "\n\n" + t("job.reference_model").format(model=inert_inline(str(status["reference"])))
    if job.error:
        text += f"\n\n⚠ {inert_inline(job.error)}"
    summary = status.get("summary")
    if state == "finished" and isinstance(summary, dict):
        text += _summary_text(summary)
    return text


def _summary_text(summary: Mapping[str, Any]) -> str:
    text = ""
    keys = [k for k in ("eval_rewards/accuracies", "eval_rewards/margins") if isinstance(summary.get(k), (int, float))]
    if keys:
        text += "\n\n" + " · ".join(f"{k} = {summary[k]:.3g}" for k in keys)
    numbers = headline_line(summary_headline(dict(summary)))
    if numbers:
        text += f"\n\nSFT → DPO: {numbers}"
    elif str(summary.get("final_eval", "")).startswith(("cancelled", "failed")):
        text += "\n\n" + t("job.final_eval").format(what=inert_inline(str(summary["final_eval"])))
    return text
