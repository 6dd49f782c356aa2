"""How every chart of the studio is laid out (the evaluation charts here, the Train tab's live plots in
``ctllm.ui.plots``): the title wrapped to the width the chart gets, the legend in a row under the plot where it never
covers tick labels, and margins that grow with the labels instead of clipping them.

Plain dicts, so a placeholder can be sent without building a plotly figure (its validators cost a few hundred ms on
first use, which the app's start does not pay).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

TITLE_SIZE = 14
FONT = {"color": "#2a3f5f", "size": 12}
# Pieces a title may break between: a run of Latin text, a space, or one wide (CJK) character.
_PIECES = re.compile(r"\s+|[^\s\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]+|.")


def display_width(text: str) -> int:
    """Columns ``text`` takes, a wide (CJK) character counting two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def wrap_title(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` columns (a longer word keeps its own line), joined by ``<br>``;
    Latin text breaks at spaces, Chinese between any two characters."""
    lines: list[str] = []
    line = ""
    for piece in _PIECES.findall(text):
        if line and not piece.isspace() and display_width(line + piece) > width:
            lines.append(line.rstrip())
            line = ""
        if line or not piece.isspace():
            line += piece
    lines.append(line.rstrip())
    return "<br>".join(lines)


def chart_layout(title: str, height: int, width: int, subtitle: str = "") -> dict[str, Any]:
    """The layout every chart starts from: ``title`` wrapped at ``width`` columns (what the narrowest place the chart
    is shown in holds at the title's size), ``subtitle`` under it in smaller type."""
    title_layout: dict[str, Any] = {"text": wrap_title(title, width), "font": {"size": TITLE_SIZE}, "x": 0,
                                    "xref": "container", "xanchor": "left", "automargin": True, "yref": "paper", "y": 1,
                                    "yanchor": "bottom", "pad": {"b": 12, "l": 14}}
    if subtitle:
        title_layout["subtitle"] = {"text": wrap_title(subtitle, width + width // 4), "font": {"size": 11}}
    return {
        "title": title_layout,
        "height": height,
        "font": FONT,
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": 15, "t": 20, "b": 10},
        # Under everything, in the figure's own frame: the axes' automargin keeps their labels clear of it.
        "legend": {"orientation": "h", "yref": "container", "y": 0.01, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        "xaxis": {"automargin": True},
        "yaxis": {"automargin": True},
        "uniformtext": {"minsize": 9, "mode": "hide"},  # bar labels too small to read are left out, not shrunk
    }
