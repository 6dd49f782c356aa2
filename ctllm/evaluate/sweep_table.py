"""A sweep's comparison: one row per run with its grid values, its state, its end-of-run evaluation (SFT vs DPO),
its best held-out reward accuracy and its time, read from each run's status.json, eval.json and metrics.jsonl.
Sortable by any column; missing numbers (a run still queued, or without a final evaluation) sort last."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctllm.evaluate.run import headline, load_result
from ctllm.jobs.manager import JobManager
from ctllm.jobs.sweep import Sweep, sweep_jobs
from ctllm.runs import best_eval_accuracy
from ctllm.settings import Settings

# Column -> the headline() key it shows (the final evaluation's numbers, after DPO).
EVAL_COLUMNS = {
    "pref_acc_sft": "preference_accuracy/sft",
    "pref_acc_dpo": "preference_accuracy/dpo",
    "refusal_dpo": "refusal_rate/dpo",
    "answer_dpo": "answer_rate/dpo",
}
TAIL_COLUMNS = ("best_eval_acc", "time_s")


def columns(sweep: Sweep) -> list[str]:
    return ["run", *sweep.grid, "state", *EVAL_COLUMNS, *TAIL_COLUMNS]


def comparison_rows(jobs: JobManager, settings: Settings, sweep: Sweep) -> list[dict[str, Any]]:
    """One dict per run, keyed by ``columns(sweep)``; None where a number is not there (yet)."""
    rows = []
    for run, job in zip(sweep.runs, sweep_jobs(jobs, sweep), strict=True):
        run_dir = settings.runs_dir / run.name
        result = load_result(run_dir)
        numbers = headline(result) if result else {}
        duration = job.duration() if job is not None else None
        rows.append({
            "run": run.name,
            **{name: run.overrides.get(name) for name in sweep.grid},
            "state": job.state if job is not None else "not queued",
            **{column: numbers.get(key) for column, key in EVAL_COLUMNS.items()},
            "best_eval_acc": best_eval_accuracy(run_dir),
            "time_s": round(duration, 1) if duration is not None else None,
        })
    return rows


def sort_rows(rows: Sequence[dict[str, Any]], column: str, descending: bool = False) -> list[dict[str, Any]]:
    """Sorted by ``column``, None always last; numbers and text each compare as themselves."""
    present = [row for row in rows if row.get(column) is not None]
    missing = [row for row in rows if row.get(column) is None]
    key = (lambda row: row[column]) if all(isinstance(r[column], (int, float)) for r in present) else (
        lambda row: str(row[column]))
    return sorted(present, key=key, reverse=descending) + missing


def cell(value: Any) -> str:
    """4 significant digits, so that grid values such as lr=5e-06 stay readable; "–" for none."""
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def format_comparison(names: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``names`` columns (the CLI's --table)."""
    table = [names, *([cell(row.get(name)) for name in names] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(names))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table)
