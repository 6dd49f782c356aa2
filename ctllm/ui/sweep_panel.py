"""The Sweep panel of the Train tab: a grid of config values queued as one training job per combination
(``ctllm.jobs.sweep``), the sweep's comparison table (sortable by any column) and its runs' curves overlaid.
Starting, cancelling and resuming a sweep is for admins, checked on the server as the Train tab's Start is."""

from __future__ import annotations

import re
import time
from typing import Any

import gradio as gr

from ctllm.dpo.presets import list_presets
from ctllm.evaluate.sweep_table import columns, comparison_rows, sort_rows
from ctllm.jobs.sweep import cancel_sweep, list_sweeps, load, parse_grid, plan_sweep, resume_sweep, start_sweep
from ctllm.runs import read_metrics
from ctllm.ui import plots
from ctllm.ui.auth import Role, require
from ctllm.ui.context import AppContext
from ctllm.ui.handlers import bind, keyed
from ctllm.ui.i18n import t
from ctllm.ui.render import inert_inline

OUTPUTS = ("sweeps", "sort", "table", "plot", "message")
METRICS = ("loss", "rewards/margins", "rewards/accuracies", "eval_loss", "eval_rewards/accuracies")


def grid_items(text: str) -> list[str]:
    """The grid box: ``FIELD=V1,V2`` items separated by spaces or new lines."""
    return [item for item in re.split(r"\s+", text or "") if item]


class SweepHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def _names(self) -> list[str]:
        return [sweep.name for sweep in list_sweeps(self.ctx.settings)]

    def start(self, name: str, preset: str, grid: str, devices: str,
              request: gr.Request | None = None) -> dict[str, Any]:
        user = require(request, Role.ADMIN, self.ctx.settings)
        name = (name or "").strip() or time.strftime("sweep-%Y%m%d-%H%M%S")
        sweep, plans = plan_sweep(name, preset or "", parse_grid(grid_items(grid)), (devices or "cpu").strip())
        sweep.owner = user.name
        start_sweep(self.ctx.jobs, self.ctx.settings, sweep, plans)
        shown = self.show(name, "run", False, METRICS[0], request)
        message = t("sweep.started").format(name=inert_inline(name), runs=len(sweep.runs))
        return {**shown, "sweeps": gr.update(choices=self._names(), value=name), "message": message}

    def cancel(self, name: str | None, sort: str, descending: bool, metric: str,
               request: gr.Request | None = None) -> dict[str, Any]:
        return self._whole_sweep(cancel_sweep, "sweep.cancelled", name, sort, descending, metric, request)

    def resume(self, name: str | None, sort: str, descending: bool, metric: str,
               request: gr.Request | None = None) -> dict[str, Any]:
        return self._whole_sweep(resume_sweep, "sweep.resumed", name, sort, descending, metric, request)

    def _whole_sweep(self, action: Any, message: str, name: str | None, sort: str, descending: bool, metric: str,
                     request: gr.Request | None) -> dict[str, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        if not name:
            raise gr.Error(t("sweep.pick"))
        action(self.ctx.jobs, self.ctx.settings, name)
        return {**self.show(name, sort, descending, metric, request),
                "message": t(message).format(name=inert_inline(name))}

    def show(self, name: str | None, sort: str | None, descending: bool, metric: str | None,
             request: gr.Request | None = None) -> dict[str, Any]:
        """The comparison table sorted by ``sort`` and the runs' ``metric`` overlaid."""
        require(request, Role.VIEWER, self.ctx.settings)
        if not name:
            return {"sweeps": gr.update(choices=self._names()), "table": gr.update(value=[], headers=["run"])}
        sweep = load(self.ctx.settings, name)
        names = columns(sweep)
        sort = sort if sort in names else "run"
        rows = sort_rows(comparison_rows(self.ctx.jobs, self.ctx.settings, sweep), sort, bool(descending))
        curves = {run.name: read_metrics(self.ctx.settings.runs_dir / run.name) for run in sweep.runs}
        return {
            "sweeps": gr.update(choices=self._names(), value=name),
            "sort": gr.update(choices=names, value=sort),
            "table": gr.update(value=[[_cell(row[n]) for n in names] for row in rows], headers=names),
            "plot": plots.overlay_figure(curves, metric or METRICS[0]),
        }


def _cell(value: Any) -> Any:
    return "–" if value is None else value


def build(ctx: AppContext) -> SweepHandlers:
    """The panel, an accordion of its own in the Train tab."""
    h = SweepHandlers(ctx)
    ui: dict[str, Any] = {}
    with gr.Accordion(open=False, elem_id="train-sweep-box"):
        gr.Markdown(elem_id="train-sweep-explain", elem_classes=["explain-box"])
        with gr.Row():
            name = gr.Textbox(elem_id="train-sweep-name", scale=1)
            presets = list_presets()
            preset = gr.Dropdown(presets, value="cpu-demo" if "cpu-demo" in presets else None,
                                 elem_id="train-sweep-preset", scale=1)
            devices = gr.Textbox(value="cpu", elem_id="train-sweep-devices", scale=1)
        grid = gr.Textbox(lines=3, elem_id="train-sweep-grid")
        start = gr.Button(variant="primary", elem_id="train-sweep-start")
        ui["message"] = gr.Markdown(elem_id="train-sweep-message")
        with gr.Row():
            ui["sweeps"] = gr.Dropdown([], elem_id="train-sweep-pick", scale=2)
            cancel = gr.Button(variant="stop", elem_id="train-sweep-cancel", scale=1)
            resume = gr.Button(elem_id="train-sweep-resume", scale=1)
            refresh = gr.Button(elem_id="train-sweep-refresh", scale=1)
        with gr.Row():
            ui["sort"] = gr.Dropdown(["run"], value="run", elem_id="train-sweep-sort")
            descending = gr.Checkbox(value=False, elem_id="train-sweep-desc")
            metric = gr.Dropdown(list(METRICS), value=METRICS[0], elem_id="train-sweep-metric")
        ui["table"] = gr.Dataframe(headers=["run"], interactive=False, wrap=True, elem_id="train-sweep-table")
        ui["plot"] = gr.Plot(show_label=False, elem_id="train-sweep-plot")

    outputs = [ui[n] for n in OUTPUTS]
    wired = keyed(bind(h.show), ui)
    view = [ui["sweeps"], ui["sort"], descending, metric]
    start.click(keyed(bind(h.start), ui), inputs=[name, preset, grid, devices], outputs=outputs,
                concurrency_limit=1, api_name="sweep_start")
    cancel.click(keyed(bind(h.cancel), ui), inputs=view, outputs=outputs, api_name="sweep_cancel")
    resume.click(keyed(bind(h.resume), ui), inputs=view, outputs=outputs, api_name="sweep_resume")
    gr.on([refresh.click, ui["sweeps"].input, ui["sort"].input, descending.input, metric.input], wired,
          inputs=view, outputs=outputs, api_name="sweep_show")
    return h
