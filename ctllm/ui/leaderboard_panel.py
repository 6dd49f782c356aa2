"""Leaderboard panel (Chat tab): every model that answered in the Chat tab, rated from the votes.

A thin layer over ``ctllm.evaluate.arena`` (the Bradley–Terry fit, bootstrap intervals, win rates) and
``ctllm.evaluate.arena_votes`` (the votes as battles), the same as ``python -m ctllm leaderboard``: a table (rank,
model, rating, 95 % interval, votes), the ratings with error bars and the head-to-head win-rate matrix, per
language and prompt category, blind-mode votes only by default. It is computed when the accordion opens, on
*Refresh*, when a filter changes and, while it is open, when a vote or label arrives (a 2 s look at the
collection's counts; any session's vote counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from ctllm.errors import UserError
from ctllm.evaluate.arena import ALL, Leaderboard, leaderboard, select
from ctllm.evaluate.arena_votes import chat_battles, votes_signature
from ctllm.ui.auth import Role, require
from ctllm.ui.context import CHAT_VOTES_COLLECTION, AppContext
from ctllm.ui.handlers import bind, keyed
from ctllm.ui.i18n import headers, labelled, t
from ctllm.ui.plots import waiting_figure
from ctllm.ui.render import inert_inline

UI_ROUNDS = 100
MAX_ROUNDS = 2000
POLL_SECONDS = 2.0
TABLE = "chat-leaderboard-table"
TABLE_HEADERS = ["rank", "model", "rating", "95 % CI", "votes", "W-L-T"]
LANGUAGE = "chat-leaderboard-language"
CATEGORY = "chat-leaderboard-category"
FILTERS = ("language", "category", "blind", "rounds")


def plot_text(name: str) -> str:
    """A model name as plotly text: plotly reads a few HTML tags (links included) in labels, so none may form."""
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _round(x: float) -> str:
    return f"{x:.0f}" if math.isfinite(x) else "–"


def table_rows(board: Leaderboard) -> list[list[Any]]:
    return [
        [r.rank, r.model, _round(r.rating), f"{_round(r.lower)} – {_round(r.upper)}", r.battles,
         f"{r.wins}-{r.losses}-{r.ties}"]
        for r in board.ratings
    ]


def ratings_figure(board: Leaderboard) -> go.Figure:
    title = t("leaderboard.chart_title")
    if not board.ratings:
        return waiting_figure(title, t("leaderboard.no_votes"))
    rated = board.ratings
    fig = go.Figure(
        go.Scatter(
            x=[plot_text(r.model) for r in rated],
            y=[r.rating for r in rated],
            mode="markers+text",
            text=[_round(r.rating) for r in rated],
            textposition="middle right",
            error_y={
                "type": "data",
                "array": [r.upper - r.rating if math.isfinite(r.upper) else 0 for r in rated],
                "arrayminus": [r.rating - r.lower if math.isfinite(r.lower) else 0 for r in rated],
            },
            hovertemplate="%{x}: %{y:.0f}<extra></extra>",
        )
    )
    fig.update_layout(  # no title: the component's label says it
        height=340,
        margin={"l": 50, "r": 10, "t": 20, "b": 60},
        yaxis_title=t("leaderboard.rating_axis"),
        template="plotly_white",
    )
    return fig


def matrix_figure(board: Leaderboard) -> go.Figure:
    title = t("leaderboard.matrix_title")
    if len(board.ratings) < 2:
        return waiting_figure(title, t("leaderboard.no_votes"))
    names = [plot_text(m) for m in board.models]
    z = [[math.nan if x is None else x for x in row] for row in board.win_rate]
    text = [["" if x is None else f"{x:.0%}" for x in row] for row in board.win_rate]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="RdBu",
            zmin=0,
            zmax=1,
            customdata=[list(row) for row in board.decisive],
            hovertemplate=t("leaderboard.matrix_hover") + "<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=140 + 40 * len(names),
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        xaxis={"side": "top", "title": t("leaderboard.opponent")},
        yaxis={"autorange": "reversed", "title": t("leaderboard.model")},
        template="plotly_white",
    )
    return fig


def rounds_of(value: Any) -> int:
    try:
        rounds = int(value)
    except (TypeError, ValueError):
        raise UserError(t("leaderboard.bad_rounds").format(max=MAX_ROUNDS)) from None
    if not 0 <= rounds <= MAX_ROUNDS:
        raise UserError(t("leaderboard.bad_rounds").format(max=MAX_ROUNDS))
    return rounds


def choices(elem_id: str, values: Sequence[str], current: str) -> dict[str, Any]:
    options = [ALL, *values]
    return gr.update(choices=labelled(elem_id, "choice", options), value=current if current in options else ALL)


class LeaderboardHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def refresh(
        self, language: str, category: str, blind: bool, rounds: Any, request: gr.Request | None = None
    ) -> dict[str, Any]:
        """The table, chart, matrix and summary for the filters, from the votes stored now."""
        require(request, Role.VIEWER, self.ctx.settings)
        rounds = rounds_of(rounds)
        store = self.ctx.store
        seen = votes_signature(store, CHAT_VOTES_COLLECTION)  # before reading: a vote arriving meanwhile is redone
        votes = chat_battles(store, CHAT_VOTES_COLLECTION)
        language, category = language or ALL, category or ALL
        chosen = select(votes.battles, language, category, blind_only=bool(blind))
        board = leaderboard(chosen, rounds=rounds, seed=0)
        return {
            "summary": self.summary(board, len(votes.battles), bool(blind), category),
            "table": {"data": table_rows(board), "headers": headers(TABLE, TABLE_HEADERS)},
            "chart": ratings_figure(board),
            "matrix": matrix_figure(board),
            "language": choices(LANGUAGE, votes.languages, language),
            "category": choices(CATEGORY, votes.categories, category),
            "seen": seen,
        }

    @staticmethod
    def summary(board: Leaderboard, total: int, blind: bool, category: str) -> str:
        if not total:
            return t("leaderboard.no_votes")
        parts = [t("leaderboard.summary").format(votes=board.battles, total=total, rounds=board.rounds)]
        if category != ALL:
            parts.append(t("leaderboard.category").format(category=inert_inline(category)))
        if blind and board.battles < total:
            parts.append(t("leaderboard.blind_only"))
        return " · ".join(parts)

    def poll(
        self, language: str, category: str, blind: bool, rounds: Any, seen: str, request: gr.Request | None = None
    ) -> dict[str, Any]:
        """While the panel is open: redo it when a vote or label was added or removed since ``seen``."""
        require(request, Role.VIEWER, self.ctx.settings)
        if votes_signature(self.ctx.store, CHAT_VOTES_COLLECTION) == seen:
            return {}
        return self.refresh(language, category, blind, rounds, request)

    def opened(
        self, language: str, category: str, blind: bool, rounds: Any, request: gr.Request | None = None
    ) -> dict[str, Any]:
        return {**self.refresh(language, category, blind, rounds, request), "timer": gr.Timer(active=True)}

    def closed(self, request: gr.Request | None = None) -> dict[str, Any]:
        return {"timer": gr.Timer(active=False)}

    def relabel(
        self, language: str, category: str, blind: bool, rounds: Any, seen: str, request: gr.Request | None = None
    ) -> dict[str, Any]:
        """After a language switch: the panel's texts again, if it was ever shown."""
        return self.refresh(language, category, blind, rounds, request) if seen else {}


def build(ctx: AppContext) -> dict[str, Any]:
    """The accordion and its events (inside an open tab); returns what the language switch must run."""
    h = LeaderboardHandlers(ctx)
    c: dict[str, Any] = {"seen": gr.State("")}
    with gr.Accordion(open=False, elem_id="chat-leaderboard-box") as box:
        with gr.Row():
            c["language"] = gr.Dropdown([ALL], value=ALL, elem_id=LANGUAGE, scale=2)
            c["category"] = gr.Dropdown([ALL], value=ALL, elem_id=CATEGORY, scale=2)
            c["blind"] = gr.Checkbox(value=True, elem_id="chat-leaderboard-blind", scale=2)
            c["rounds"] = gr.Number(
                value=UI_ROUNDS, precision=0, minimum=0, maximum=MAX_ROUNDS, elem_id="chat-leaderboard-rounds", scale=1
            )
            refresh = gr.Button(elem_id="chat-leaderboard-refresh", scale=1)
        c["summary"] = gr.Markdown(elem_id="chat-leaderboard-summary")
        c["table"] = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id=TABLE, wrap=True)
        with gr.Row():
            c["chart"] = gr.Plot(elem_id="chat-leaderboard-chart")
            c["matrix"] = gr.Plot(elem_id="chat-leaderboard-matrix")
    c["timer"] = gr.Timer(value=POLL_SECONDS, active=False)

    filters = [c[name] for name in FILTERS]
    shown = [c[name] for name in ("summary", "table", "chart", "matrix", "language", "category", "seen")]
    options = {"show_progress": "hidden"}
    gr.on(
        [refresh.click, *(c[name].input for name in FILTERS)],
        keyed(bind(h.refresh), c), inputs=filters, outputs=shown, api_name="leaderboard", **options,
    )
    box.expand(keyed(bind(h.opened), c), inputs=filters, outputs=[*shown, c["timer"]], **options)
    box.collapse(keyed(bind(h.closed), c), outputs=[c["timer"]], **options)
    c["timer"].tick(
        keyed(bind(h.poll), c), inputs=[*filters, c["seen"]], outputs=shown, concurrency_limit=None, **options
    )
    return {"language": (keyed(bind(h.relabel), c), [*filters, c["seen"]], shown), "handlers": h}
