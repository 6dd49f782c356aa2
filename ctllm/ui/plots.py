"""Training metrics (rows of a run's metrics.jsonl) and evaluation results to plotly figures, with every title,
axis, legend and hover text in the session's language (:func:`ctllm.ui.i18n.t`). Pure functions, no I/O.

Eval series (keys prefixed ``eval_``) are drawn on the same axes as their training series.
Before the first logged step each figure says plainly that it is waiting; before a page has any figure at all,
:func:`placeholder` gives one without building a plotly object.

With an NLL term (``rpo_alpha`` > 0, rows carry ``nll_loss``) the logged ``loss`` is DPO + α·NLL and starts near
the chosen answers' NLL (e.g. 7.6), not ln 2: the loss panel then draws the DPO part (:func:`with_dpo_loss`) on the
left axis and the NLL on its own right axis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio
import plotly.graph_objects as go
from gradio.components.plot import PlotData

from ctllm.evaluate.chart_style import chart_layout
from ctllm.evaluate.report import CHART_TEXT, figures
from ctllm.ui.i18n import t

Row = Mapping[str, object]
HEIGHT = 280
EVAL_HEIGHT = 340
TITLE_WIDTH = 44  # columns: a live plot is about 350 px wide in a 1280 px window
EVAL_TITLE_WIDTH = 90
EVAL_CHARTS = ("preference", "reward", "behaviour")


@dataclass(frozen=True)
class Panel:
    key: str  # also its title's key, plot.<key>
    series: tuple[tuple[str, str], ...]  # (metric key, legend name's key plot.series.<name>)
    right: tuple[str, ...] = ()  # keys drawn against a second y axis on the right

    @property
    def title(self) -> str:
        return t(f"plot.{self.key}")


PANELS: tuple[Panel, ...] = (
    Panel("loss", (("loss", "train"), ("eval_loss", "eval"))),
    Panel("margin", (("rewards/margins", "train"), ("eval_rewards/margins", "eval"))),
    Panel("accuracy", (("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval"))),
    Panel(
        "rewards",
        (
            ("rewards/chosen", "chosen"),
            ("rewards/rejected", "rejected"),
            ("eval_rewards/chosen", "eval_chosen"),
            ("eval_rewards/rejected", "eval_rejected"),
        ),
    ),
)
PANEL_BY_KEY = {panel.key: panel for panel in PANELS}
NLL_LOSS_PANEL = Panel(
    "loss_nll",
    (("dpo_loss", "dpo"), ("eval_dpo_loss", "eval_dpo"), ("nll_loss", "nll"), ("eval_nll_loss", "eval_nll")),
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


WAITING_TEXT = "Waiting for the first step…"  # plot.waiting's English


def waiting_layout(title: str, message: str, height: int = HEIGHT, width: int = TITLE_WIDTH) -> dict[str, Any]:
    """A figure's layout that says ``message`` where its curves will be (no axes). The message starts at the left:
    a centred one is placed by its measured width, which is 0 when the figure is drawn in a hidden tab (as on a
    language switch), and it then started mid-plot and ran off the edge."""
    layout = chart_layout(title, height, width)
    hidden = {"visible": False, "automargin": True}
    note = {"text": message, "showarrow": False, "x": 0, "xanchor": "left", "y": 0.5, "xref": "paper",
            "yref": "paper", "font": {"size": 15}}
    return layout | {"xaxis": hidden, "yaxis": hidden, "annotations": [note], "margin": {**layout["margin"], "l": 15}}


def waiting_figure(
    title: str, message: str | None = None, height: int = HEIGHT, width: int = TITLE_WIDTH
) -> go.Figure:
    layout = waiting_layout(title, message or t("plot.waiting"), height, width)
    return go.Figure({"data": [], "layout": {**layout, "template": "none"}})  # as bare as placeholder's JSON


def placeholder(title: str, message: str, height: int = HEIGHT, width: int = TITLE_WIDTH) -> PlotData:
    """What a ``gr.Plot`` shows from the start (Gradio's empty-plot icon otherwise): :func:`waiting_figure`'s JSON,
    made without plotly's validators, which a first figure loads (a few hundred ms the app's start does not pay)."""
    layout = waiting_layout(title, message, height, width)
    return PlotData(type="plotly", plot=json.dumps({"data": [], "layout": layout}))


def idle_figures() -> list[go.Figure]:
    """The four live plots of a page that shows no run."""
    return [waiting_figure(panel.title, t("train.no_curves")) for panel in PANELS]


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(chart_layout(title, HEIGHT, TITLE_WIDTH), template="plotly_white", xaxis_title=t("plot.step"))
    return fig


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
    step = t("plot.step")
    for key, name_key in panel.series:
        steps, values = series_points(rows, key)
        if not steps:
            continue
        is_eval = key.startswith("eval_")
        name = t(f"plot.series.{name_key}")
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=values,
                name=name,
                hovertemplate=f"{step} %{{x}}: %{{y:.4g}}<extra>{name}</extra>",
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
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "NLL",
                                  "automargin": True})
    return _layout(fig, panel.title)


def metric_figures(rows: Sequence[Row]) -> list[go.Figure]:
    """The four live figures, in the order of :data:`PANELS` (the loss split in two with an NLL term)."""
    chosen = [NLL_LOSS_PANEL if panel.key == "loss" and has_nll(rows) else panel for panel in PANELS]
    return [panel_figure(rows, panel) for panel in chosen]


def overlay_figure(runs: Mapping[str, Sequence[Row]], key: str) -> go.Figure:
    """One metric from several runs on one set of axes, for comparison."""
    title = t("plot.compare").format(metric=key)
    step = t("plot.step")
    fig = go.Figure()
    for name, rows in runs.items():
        steps, values = series_points(rows, key)
        if steps:
            hover = f"{step} %{{x}}: %{{y:.4g}}<extra>{name}</extra>"
            fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines", hovertemplate=hover))
    if not fig.data:
        return waiting_figure(title, t("plot.compare_none"))
    return _layout(fig, title)


def point_count(fig: go.Figure) -> int:
    return sum(len(trace.x or ()) for trace in fig.data)



def eval_title(name: str) -> str:
    return t(f"eval_chart.{name}.title").format(beta="…")


def eval_figures(result: Mapping[str, Any] | None, message: str = "") -> list[go.Figure]:
    """One figure per :data:`EVAL_CHARTS` name of an evaluation result, in the session's language; a chart the
    result has no part for (or every chart, without a result) says ``message`` or that it is not there."""
    charts = figures(result, {key: t(f"eval_chart.{key}") for key in CHART_TEXT}) if result else {}
    missing = message or t("train.eval_chart_missing")
    return [charts.get(name) or waiting_figure(eval_title(name), missing, EVAL_HEIGHT, EVAL_TITLE_WIDTH)
            for name in EVAL_CHARTS]


# Gradio loads its plotly bundle (4.6 MB) only when a plot first shows, and the Train tab's plots first show when the
# tab opens: its empty-plot icon stood there for seconds. The page loads the bundle once it is idle instead.
PRELOAD_JS = """(() => {
  const preload = () => {
    const index = document.querySelector('script[src*="/assets/index-"]');
    const later = window.requestIdleCallback || ((fn) => setTimeout(fn, 200));
    if (index) later(() => import(new URL('%s', index.src).href).catch(() => {}), {timeout: 3000});
  };
  // Gradio adds the head's scripts once the page has loaded
  if (document.readyState === 'complete') preload(); else window.addEventListener('load', preload);
})();"""


def plotly_preload() -> str:
    """A ``<script>`` for the page head that loads Gradio's plotly bundle after the page (empty when this Gradio
    has no such bundle)."""
    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    bundles = sorted(path.name for path in assets.glob("PlotlyPlot-*.js"))
    return f"<script>\n{PRELOAD_JS % bundles[0]}\n</script>" if len(bundles) == 1 else ""
