"""The Train tab's loss picker: the loss in its set (needs a reference / reference-free; KTO's unpaired set is not
available yet and the picker's hint says so), one line on what it optimises with a link to its paper, and only the
hyperparameters that loss uses.

Which fields a loss uses is :func:`ctllm.dpo.loss_fields.visible_fields`; the job ignores the hidden ones
(:func:`ctllm.jobs.train_job.form_to_config`). Gradio dropdowns have no option groups: each choice's label starts
with its set ("Reference-free · simpo"). Several reference-based losses may be typed comma-separated (MPO).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ctllm.dpo.config import F_DIVERGENCES, LOSS_TYPES, TrainConfig, loss_names
from ctllm.dpo.loss_fields import LOSS_FIELDS, PAPERS, paper_url, visible_fields
from ctllm.ui.i18n import labelled, t, use_language

ELEM_ID = "train-loss-type"
# The form inputs the picker builds, in the form's order (β stays with the general fields of the Train tab).
NAMES = ("loss_type", *(name for name in LOSS_FIELDS if name != "beta"))


def loss_choices(lang: str | None = None) -> list[tuple[str, str]]:
    """The picker's (label, loss_type) choices, each label led by its set, reference-based ones first."""
    return labelled(ELEM_ID, "choice", LOSS_TYPES, lang)


def paper_lines(loss_type: str) -> str:
    """Markdown: per loss named, one line on what it optimises and a link to its paper ("" for unknown names)."""
    lines = []
    for name in loss_names(loss_type or ""):
        if name in PAPERS:
            url = paper_url(name)
            lines.append(f"**{name}** — {t(f'loss.paper.{name}')} · [arXiv {url.rsplit('/', 1)[1]}]({url})")
    return "  \n".join(lines)


def method_view(loss_type: str | None, f_divergence_type: str | None, request: gr.Request | None = None
                ) -> dict[str, Any]:
    """The fields ``loss_type`` uses shown, the others hidden, and its paper line."""
    use_language(request)
    shown = visible_fields(loss_type or "", f_divergence_type or "reverse_kl")
    return {name: gr.update(visible=name in shown) for name in LOSS_FIELDS} | {"loss_paper": paper_lines(loss_type)}


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The picker's inputs as a form shows them (loss weights as comma-separated text)."""
    values = {name: getattr(config, name) for name in NAMES}
    values["loss_weights"] = ", ".join(f"{w:g}" for w in config.loss_weights)
    return values


def build(defaults: TrainConfig) -> dict[str, Any]:
    """The picker's components, keyed by field name, plus "loss_paper" (the paper line)."""
    shown = visible_fields(defaults.loss_type, defaults.f_divergence_type)
    values = form_values(defaults)
    ui: dict[str, Any] = {}

    def number(name: str, **kwargs: Any) -> Any:
        elem_id = f"train-{name.replace('_', '-')}"
        return gr.Number(value=values[name], visible=name in shown, elem_id=elem_id, min_width=120, **kwargs)

    with gr.Row(elem_id="train-loss-box"):
        ui["loss_type"] = gr.Dropdown(loss_choices("en"), value=defaults.loss_type, allow_custom_value=True,
                                      elem_id=ELEM_ID, scale=2, min_width=240)
        ui["f_divergence_type"] = gr.Dropdown(list(F_DIVERGENCES), value=defaults.f_divergence_type,
                                              visible="f_divergence_type" in shown, elem_id="train-f-divergence-type")
        for name in ("f_alpha_divergence_coef", "discopop_tau", "simpo_gamma", "cpo_alpha", "orpo_lambda",
                     "alphapo_alpha", "label_smoothing", "rpo_alpha"):
            ui[name] = number(name)
        ui["loss_weights"] = gr.Textbox(value=values["loss_weights"], visible="loss_weights" in shown,
                                        elem_id="train-loss-weights", min_width=160)
    ui["loss_paper"] = gr.Markdown(paper_lines(defaults.loss_type), elem_id="train-loss-paper")
    return ui


def wire(components: dict[str, Any]) -> tuple[Any, list[Any], list[Any]]:
    """Show the chosen loss's fields and paper line when the loss or the divergence changes (a preset too);
    ``components`` holds the picker's and β. Returns the event that writes the paper line again after a switch of
    language: (function, inputs, outputs)."""
    inputs = [components["loss_type"], components["f_divergence_type"]]
    names = (*LOSS_FIELDS, "loss_paper")
    outputs = [components[name] for name in names]

    def view(loss_type: str | None, f_divergence_type: str | None, request: gr.Request | None = None) -> list[Any]:
        result = method_view(loss_type, f_divergence_type, request)
        return [result[name] for name in names]

    gr.on([components["loss_type"].change, components["f_divergence_type"].change], view, inputs=inputs,
          outputs=outputs, show_progress="hidden")
    return view, inputs, outputs
