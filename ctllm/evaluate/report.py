"""An evaluation result (the dict saved as eval.json) as table rows, CSV, a printed table and plotly charts.

Pure functions over the result dict, except the two writers; the UI can call ``figures(result)`` directly.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from ctllm.evaluate.chart_style import chart_layout

CSV_COLUMNS = ("section", "group", "metric", "sft", "dpo", "n", "note")
SFT_COLOUR, DPO_COLOUR = "#8c8c8c", "#1f77b4"
# Metrics of the pairs section: (key in the result, shown name, which side has it)
PAIR_METRICS = (
    ("preference_accuracy", "preference accuracy", "both"),
    ("reward_accuracy", "implicit reward accuracy", "dpo"),
    ("margin", "implicit reward margin", "dpo"),
    ("chosen_reward", "reward of chosen", "dpo"),
    ("rejected_reward", "reward of rejected", "dpo"),
)


def role_names(result: Mapping[str, Any]) -> tuple[str, str]:
    """Legend names: ("SFT · <reference label>", "DPO · <model label>")."""
    models = result.get("models", {})
    return (f"SFT · {models.get('ref', {}).get('label', 'reference')}",
            f"DPO · {models.get('model', {}).get('label', 'model')}")


def result_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (section, group, metric) with the SFT (reference) and DPO (model) values side by side."""
    rows: list[dict[str, Any]] = []
    pairs = result.get("pairs")
    if pairs:
        groups = [("all", pairs["overall"])]
        groups += [(f"category: {k}", v) for k, v in pairs.get("by_category", {}).items()]
        groups += [(f"language: {k}", v) for k, v in pairs.get("by_language", {}).items()]
        for group, values in groups:
            for key, name, side in PAIR_METRICS:
                if side == "both":
                    sft, dpo = values.get(f"ref_{key}"), values.get(f"model_{key}")
                else:
                    sft, dpo = None, values.get(key)
                rows.append({"section": "pairs", "group": group, "metric": name, "sft": sft, "dpo": dpo,
                             "n": values.get("n"), "note": ""})
    for entry in result.get("prompts") or []:
        for metric in ("refusal_rate", "answer_rate"):
            rows.append({
                "section": "prompts", "group": entry["name"], "metric": metric.replace("_", " "),
                "sft": entry.get("ref", {}).get(metric), "dpo": entry.get("model", {}).get(metric),
                "n": entry.get("n"), "note": entry.get("note", ""),
            })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# The before/after numbers a run's name is shown with (keys of ``run.headline`` without the /sft, /dpo suffix).
BEFORE_AFTER = (("preference_accuracy", "pref. acc."), ("refusal_rate", "refusals"), ("answer_rate", "answers"))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def before_after(numbers: Mapping[str, float], key: str) -> str:
    """"SFT → DPO" for one headline number (e.g. ``preference_accuracy``), in percent; "–" when neither is known."""
    sft, dpo = numbers.get(f"{key}/sft"), numbers.get(f"{key}/dpo")
    if sft is None and dpo is None:
        return "–"
    return f"{_percent(sft)} → {_percent(dpo)}"


def headline_text(numbers: Mapping[str, float]) -> str:
    """The before/after numbers on one line: "pref. acc. 45% → 70% · refusals 10% → 60% · answers 95% → 90%"."""
    parts = [f"{name} {before_after(numbers, key)}" for key, name in BEFORE_AFTER
             if f"{key}/sft" in numbers or f"{key}/dpo" in numbers]
    return " · ".join(parts)


def format_table(result: Mapping[str, Any]) -> str:
    """The rows as a fixed-width text table, with the notes listed under it."""
    rows = result_rows(result)
    sft, dpo = role_names(result)
    header = ("section", "group", "metric", sft, dpo, "n")
    body = [(r["section"], r["group"], r["metric"], _cell(r["sft"]), _cell(r["dpo"]), _cell(r["n"])) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = list(dict.fromkeys(r["note"] for r in rows if r["note"])) + list(result.get("notes") or [])
    return "\n".join(lines + [f"note: {n}" for n in notes])


def write_csv(result: Mapping[str, Any], path: Path | str) -> Path:
    """The table as CSV (columns: section, group, metric, sft, dpo, n, note)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in result_rows(result):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def export_csv(eval_json: Path | str, csv_path: Path | str) -> Path:
    """CSV from a saved eval.json (for a download button)."""
    return write_csv(json.loads(Path(eval_json).read_text(encoding="utf-8")), csv_path)


# Every text a chart shows that is not data, in English; the UI passes its own language's (``text=`` of figures).
CHART_TEXT = {
    "all": "all",
    "preference.title": "Preference accuracy on held-out pairs (length-normalised log-likelihood)",
    "preference.yaxis": "chosen preferred",
    "reward.title": "DPO implicit reward against SFT (β = {beta})",
    "reward.accuracy": "implicit reward accuracy",
    "reward.margin": "mean margin β·Δ",
    "behaviour.title": "Behaviour under greedy decoding: refusals of harmful prompts, answers to benign ones",
    "behaviour.yaxis": "share of prompts",
    "behaviour.not_meaningful": "* the model cannot write this language: not meaningful",
    "refusal_rate": "refusal rate",
    "answer_rate": "answer rate",
}
CHART_HEIGHT = 340
TITLE_WIDTH = 90  # columns: the charts are shown at least ~700 px wide (full width in the app, a page in the HTML)


def _layout(fig: go.Figure, title: str, yaxis: str, percent: bool, subtitle: str = "") -> go.Figure:
    fig.update_layout(chart_layout(title, CHART_HEIGHT, TITLE_WIDTH, subtitle), barmode="group",
                      template="plotly_white", yaxis_title=yaxis)
    if percent:
        fig.update_yaxes(range=[0, 1.15], tickformat=".0%")
    return fig


def _bars(fig: go.Figure, name: str, x: Sequence[str], y: Sequence[float | None], colour: str,
          n: Sequence[Any], percent: bool) -> None:
    fig.add_trace(go.Bar(
        name=name, x=list(x), y=list(y), marker_color=colour, customdata=list(n),
        text=[_percent(v) if percent else _cell(v) for v in y], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}: %{y:.3f} (n=%{customdata})<extra>" + name + "</extra>",
    ))


def _category(name: str) -> str:
    """A category as a tick label: words apart, so a long one breaks over two lines instead of tilting."""
    return "<br>".join(name.replace("_", " ").split(" ", 1)) if len(name) > 12 else name.replace("_", " ")


def figures(result: Mapping[str, Any], text: Mapping[str, str] | None = None) -> dict[str, go.Figure]:
    """Charts, SFT and DPO side by side: preference accuracy (overall and per category), the implicit reward of
    DPO against SFT, and refusal / answer rates on the prompt lists. Only the parts the result has. ``text``: the
    charts' own words (the keys of :data:`CHART_TEXT`) in another language."""
    words = {**CHART_TEXT, **(text or {})}
    sft, dpo = role_names(result)
    out: dict[str, go.Figure] = {}
    pairs = result.get("pairs")
    if pairs:
        groups = {words["all"]: pairs["overall"], **pairs.get("by_category", {})}
        names, values = [_category(name) for name in groups], list(groups.values())
        counts = [v.get("n") for v in values]
        fig = go.Figure()
        _bars(fig, sft, names, [v.get("ref_preference_accuracy") for v in values], SFT_COLOUR, counts, True)
        _bars(fig, dpo, names, [v.get("model_preference_accuracy") for v in values], DPO_COLOUR, counts, True)
        out["preference"] = _layout(fig, words["preference.title"], words["preference.yaxis"], True)
        fig = go.Figure()
        _bars(fig, words["reward.accuracy"], names, [v.get("reward_accuracy") for v in values], DPO_COLOUR, counts,
              False)
        _bars(fig, words["reward.margin"], names, [v.get("margin") for v in values], "#ff7f0e", counts, False)
        out["reward"] = _layout(fig, words["reward.title"].format(beta=result.get("beta")), "", False)
    prompts = result.get("prompts") or []
    if prompts:
        labels = [f"{e['name']}: {words.get(e['headline'], e['headline'])}" + ("" if e.get("meaningful", True)
                  else " *") for e in prompts]
        counts = [e.get("n") for e in prompts]
        fig = go.Figure()
        _bars(fig, sft, labels, [e.get("ref", {}).get(e["headline"]) for e in prompts], SFT_COLOUR, counts, True)
        _bars(fig, dpo, labels, [e.get("model", {}).get(e["headline"]) for e in prompts], DPO_COLOUR, counts, True)
        footnote = "" if all(e.get("meaningful", True) for e in prompts) else words["behaviour.not_meaningful"]
        out["behaviour"] = _layout(fig, words["behaviour.title"], words["behaviour.yaxis"], True, footnote)
    return out


def write_charts(result: Mapping[str, Any], out_dir: Path | str, stem: str = "eval_charts") -> list[Path]:
    """``<stem>.html``: every chart in one page, plotly.js inlined (4.8 MB) so it opens offline, as the app runs;
    ``<stem>.json``: {name: figure JSON}, readable with plotly.io.from_json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = figures(result)
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0)
             for i, fig in enumerate(charts.values())]
    title = html.escape("Evaluation: " + " vs ".join(role_names(result)))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h2 style='font-family:sans-serif'>{title}</h2>{''.join(parts)}</body></html>")
    html_path, json_path = out_dir / f"{stem}.html", out_dir / f"{stem}.json"
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps({k: json.loads(f.to_json()) for k, f in charts.items()}), encoding="utf-8")
    return [html_path, json_path]
