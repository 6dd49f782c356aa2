"""Training metrics (rows of a run's metrics.jsonl) to plotly figures. Pure functions, no I/O.

Eval series (keys prefixed ``eval_``) are drawn on the same axes as their training series.
Before the first logged step each figure says plainly that it is waiting.

With an NLL term (``rpo_alpha`` > 0, rows carry ``nll_loss``) the logged ``loss`` is DPO + α·NLL and starts near
the chosen answers' NLL (e.g. 7.6), not ln 2: the loss panel then draws the DPO part (:func:`with_dpo_loss`) on the
left axis and the NLL on its own right axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

Row = Mapping[str, object]


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    series: tuple[tuple[str, str], ...]  # (metric key, legend name)
    right: tuple[str, ...] = ()  # keys drawn against a second y axis on the right


PANELS: tuple[Panel, ...] = (
    Panel("loss", "Loss", (("loss", "train"), ("eval_loss", "eval"))),
    Panel(
        "margin", "Reward margin (chosen − rejected)", (("rewards/margins", "train"), ("eval_rewards/margins", "eval"))
    ),
    Panel("accuracy", "Reward accuracy", (("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval"))),
    Panel(
        "rewards",
        "Rewards: chosen and rejected",
        (
            ("rewards/chosen", "chosen"),
            ("rewards/rejected", "rejected"),
            ("eval_rewards/chosen", "eval chosen"),
            ("eval_rewards/rejected", "eval rejected"),
        ),
    ),
)
PANEL_BY_KEY = {panel.key: panel for panel in PANELS}
NLL_LOSS_PANEL = Panel(
    "loss",
    "Loss: DPO (left) and chosen NLL (right); the logged loss is DPO + α·NLL",
    (("dpo_loss", "DPO"), ("eval_dpo_loss", "eval DPO"), ("nll_loss", "NLL"), ("eval_nll_loss", "eval NLL")),
    right=("nll_loss", "eval_nll_loss"),
)


def has_nll(rows: Sequence[Row]) -> bool:
    return any(isinstance(row.get("nll_loss"), (int, float)) for row in rows)


def with_dpo_loss(rows: Sequence[Row], rpo_alpha: float) -> list[dict[str, object]]:
    """Rows with ``dpo_loss`` (and ``eval_dpo_loss``) = loss − α·NLL where a row has both and not that key yet.
    Exact for the logged means: the per-pair loss is the sum of the two terms."""
    out = []
    for row in rows:
        row = dict(row)
        for prefix in ("", "eval_"):
            loss, nll = row.get(f"{prefix}loss"), row.get(f"{prefix}nll_loss")
            if f"{prefix}dpo_loss" not in row and isinstance(loss, (int, float)) and isinstance(nll, (int, float)):
                row[f"{prefix}dpo_loss"] = loss - rpo_alpha * nll
        out.append(row)
    return out


WAITING_TEXT = "Waiting for the first step…"


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=260,
        margin={"l": 45, "r": 10, "t": 40, "b": 35},
        legend={"orientation": "h", "y": -0.25},
        xaxis_title="step",
        template="plotly_white",
    )
    return fig


def waiting_figure(title: str, message: str = WAITING_TEXT) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


def series_points(rows: Sequence[Row], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of rows that carry a finite number under ``key``."""
    steps: list[float] = []
    values: list[float] = []
    for row in rows:
        value, step = row.get(key), row.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)) and value == value:
            steps.append(float(step))
            values.append(float(value))
    return steps, values


def panel_figure(rows: Sequence[Row], panel: Panel) -> go.Figure:
    fig = go.Figure()
    drawn = 0
    for key, name in panel.series:
        steps, values = series_points(rows, key)
        if not steps:
            continue
        is_eval = key.startswith("eval_")
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=values,
                name=name,
                mode="lines+markers" if is_eval or len(steps) < 30 else "lines",
                line={"dash": "dash"} if is_eval else {},
                yaxis="y2" if key in panel.right else "y",
            )
        )
        drawn += 1
    if drawn == 0:
        return waiting_figure(panel.title)
    if panel.key == "accuracy":
        fig.update_yaxes(range=[-0.02, 1.02])
    if panel.right:
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "NLL"})
    return _layout(fig, panel.title)


def metric_figures(rows: Sequence[Row]) -> list[go.Figure]:
    """The four live figures, in the order of :data:`PANELS` (the loss split in two with an NLL term)."""
    chosen = [NLL_LOSS_PANEL if panel.key == "loss" and has_nll(rows) else panel for panel in PANELS]
    return [panel_figure(rows, panel) for panel in chosen]


def overlay_figure(runs: Mapping[str, Sequence[Row]], key: str) -> go.Figure:
    """One metric from several runs on one set of axes, for comparison."""
    title = f"Runs compared: {key}"
    fig = go.Figure()
    for name, rows in runs.items():
        steps, values = series_points(rows, key)
        if steps:
            fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines"))
    if not fig.data:
        return waiting_figure(title, "Pick runs with logged steps to compare.")
    return _layout(fig, title)


def point_count(fig: go.Figure) -> int:
    return sum(len(trace.x or ()) for trace in fig.data)
