"""Pairs tab: browse, search, filter and label a collection; edit, add, import, export; statistics.

The two responses appear in an order fixed per annotator and pair (a hash of both), so a reload shows the
same order and position bias averages out over annotators; each label records which stored side was first.

What the tab shows is one frozen :class:`PairsView` (kept in a ``gr.State``); handlers return dicts keyed by
the components in :class:`PairsUI`, so an event's outputs only have to list the components it may touch.
A page left open for hours stays true: a timer compares a cheap signature (collection names, the open
collection's counts) and sends the collection list or the progress only when it changed, and a change of the
collection dropdown, by the user or by code (an import, a collection gone), opens that collection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.pairs.agreement import AgreementReport, collection_stats, fmt_kappa
from ctllm.pairs.export import export_collection
from ctllm.pairs.formats import FORMATS
from ctllm.pairs.importer import import_pairs
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import DuplicatePair, LabelProgress, PairQuery
from ctllm.pairs.writers import EXPORT_FORMATS
from ctllm.paths import safe_resolve
from ctllm.ui.auth import Forbidden, Role, User, require
from ctllm.ui.context import HAND_WRITTEN_COLLECTION, SAMPLES_COLLECTION, AppContext
from ctllm.ui.guidelines_panel import build as build_guidelines_panel
from ctllm.ui.handlers import bind, form
from ctllm.ui.i18n import STRINGS, headers, labelled, t
from ctllm.ui.render import (
    code_block,
    inert_inline,
    inert_markdown,
    last_user_markdown,
    prompt_context_markdown,
    search_highlighter,
)
from ctllm.ui.synth_panel import build as build_synth_panel

PAGE_SIZE = 20
POLL_SECONDS = 10  # how often an open page checks for new collections and others' labels
ALL = "all"
# The dropdowns' choices, labelled from the locale table (the language switch relabels them).
LANGUAGE_CHOICES = labelled("pairs-language", "choice", (ALL, "zh", "en", "other"), "en")
LABEL_STATE_CHOICES = labelled(
    "pairs-label-state", "choice", (ALL, "not_mine", "unlabelled", "mine", "labelled", "disagreement"), "en"
)
SORT_CHOICES = labelled("pairs-sort", "choice", ("id", "length_diff", "-length_diff", "score"), "en")
EDIT_WHICH_CHOICES = labelled("pairs-edit-which", "choice", ("first", "second"), "en")
TABLE_HEADERS = ["", "id", "lang", "prompt", "Δ len", "mine", "n"]
TABLE_WIDTHS = ["5%", "9%", "9%", "44%", "11%", "16%", "6%"]
MAX_SCAN_PAGES = 5  # pages looked through for the next pair to label before falling back to id order


def shown_first(annotator: str, root_id: int) -> str:
    """Which stored side ("chosen" / "rejected") this annotator sees first on this pair: a stable coin flip."""
    digest = hashlib.sha256(f"{annotator}\x00{root_id}".encode()).digest()
    return "chosen" if digest[0] % 2 == 0 else "rejected"


def _named(prefix: str, value: str) -> str:
    """``value``'s name from the locale table (``"<prefix>.<value>"``), or the value itself when it has none."""
    key = f"{prefix}.{value}"
    return t(key) if key in STRINGS else value


def verdict_name(verdict: str) -> str:
    """A verdict ("first", "tie", "skip", ...) as the session's language says it ("first better", ...)."""
    return _named("pairs.verdict", verdict)


def language_name(code: str) -> str:
    """A pair's language code, spelled out in Chinese ("zh" → 中文); the code itself in English."""
    return _named("pairs.lang", code)


def displayed_verdict(choice: str, first: str) -> str:
    """A label's choice (in stored sides) said in positions as they are shown now (the label may come from
    another screen, e.g. a chat vote, with another order)."""
    if choice in ("chosen", "rejected"):
        return verdict_name("first" if choice == first else "second")
    return verdict_name(choice)


def source_choices(sources: Iterable[str]) -> list[tuple[str, str]]:
    """The source dropdown's choices: "all" in the session's language, then the collection's sources as they are."""
    return [(t("pairs.all"), ALL), *((source, source) for source in sources)]


@dataclass(frozen=True)
class PairFilters:
    """What the filter row selects. The controls are read into one of these (:func:`filtered`), and the view
    carries them (:class:`PairsView` extends it)."""

    collection: str = ""
    language: str = ALL
    source: str = ALL
    label_state: str = "not_mine"
    sort: str = "id"
    score_name: str = ""
    text: str = ""

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> PairFilters:
        """From the controls' values by field name; an empty one means "all", import order, no search."""
        return cls(
            collection=values.get("collection") or "",
            language=values.get("language") or ALL,
            source=values.get("source") or ALL,
            label_state=values.get("label_state") or ALL,
            sort=values.get("sort") or "id",
            score_name=values.get("score_name") or "",
            text=values.get("text") or "",
        )

    @property
    def filters(self) -> PairFilters:
        """Just the filters (of a view, too)."""
        return PairFilters(**filter_values(self))


FILTER_FIELDS = tuple(f.name for f in fields(PairFilters))
FILTER_CONTROLS = {"text": "search"}  # the PairsUI component of a filter field, where its name differs


def filter_values(filters: PairFilters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in FILTER_FIELDS}


def filtered(method: Callable[..., Any], extra: int) -> Callable[..., Any]:
    """A handler whose inputs are the filter controls (``PairsUI.filters``), then ``extra`` more; calls
    ``method(PairFilters, *the extra values, request=...)``."""

    def with_filters(values: dict[str, Any], *rest: Any, request: gr.Request | None = None) -> Any:
        return method(PairFilters.read(values), *rest, request=request)

    with_filters.__name__ = getattr(method, "__name__", "handler")
    return form(with_filters, FILTER_FIELDS, extra)


@dataclass(frozen=True)
class PairsView(PairFilters):
    """What the tab shows: the filters, the page (its pair ids, how many pairs match) and the open pair."""

    page: int = 1
    page_ids: tuple[int, ...] = ()
    more: bool = False
    matches: int = 0
    pair_id: int | None = None
    shown_first: str = "chosen"

    @property
    def pages(self) -> int:
        return page_count(self.matches)

    def opened_first(self) -> PairsView:
        """The page's first pair opened (none on an empty page)."""
        return replace(self, pair_id=self.page_ids[0] if self.page_ids else None)


def new_view(collection: str = "") -> PairsView:
    return PairsView(collection=collection)


def page_count(matches: int) -> int:
    return max(1, -(-matches // PAGE_SIZE))


def pair_query(view: PairsView, annotator: str) -> Any:
    def pick(value: str) -> str | None:
        return None if (value or ALL) == ALL else value

    state = pick(view.label_state)
    return PairQuery(
        language=pick(view.language),
        source=pick(view.source),
        label_state=state,
        annotator=annotator if state in ("mine", "not_mine") else None,
        text=view.text.strip() or None,
    )


def page_info(view: PairsView) -> str:
    """ "Page X of N · M pairs match", or why nothing is listed."""
    if not view.collection:
        return ""
    if not view.page_ids:
        text = t("pairs.no_match")
        if view.label_state == "not_mine" and not view.text:
            text += " " + t("pairs.no_match_not_mine")
        return text
    where = t("pairs.page_of").format(page=view.page, pages=view.pages)
    if view.text:
        found = t("pairs.matches_text").format(n=f"{view.matches:,}", text=inert_inline(view.text))
    else:
        found = t("pairs.matches").format(n=f"{view.matches:,}")
    return f"{where} · {found}"


def progress_markdown(p: LabelProgress) -> str:
    share = f"{p.judged / p.total:.0%}" if p.total else "–"
    return counted("pairs.progress", mine=p.judged, total=p.total, share=share, skipped=p.skipped, anyone=p.anyone,
                   labels=p.judgements, annotators=p.annotators)


def counted(key: str, **values: int | str) -> str:
    """``key``'s text filled in, whole numbers written with thousands separators."""
    return t(key).format(**{name: f"{v:,}" if isinstance(v, int) else v for name, v in values.items()})


def agreement_text(report: AgreementReport) -> str:
    """The agreement line of the statistics (``AgreementReport``'s own text) in the session's language."""
    if not report.annotators:
        return t("pairs.agree_none")
    judged = {"annotators": len(report.annotators), "pairs": f"{report.labelled_pairs:,}"}
    parts = [t("pairs.agree_judged").format(**judged, multi=f"{report.multi_rated:,}")]
    if len(report.annotators) == 2 and report.cohen:
        ((kappa, shared),) = report.cohen.values()
        parts.append(t("pairs.agree_cohen").format(kappa=fmt_kappa(kappa), shared=f"{shared:,}"))
    elif len(report.annotators) > 2:
        parts.append(t("pairs.agree_fleiss").format(kappa=fmt_kappa(report.fleiss), pairs=f"{report.multi_rated:,}"))
    if report.decisive:
        share = f"{report.with_source / report.decisive:.0%}"
        parts.append(t("pairs.agree_source").format(share=share, decisive=f"{report.decisive:,}"))
        parts.append(t("pairs.agree_first").format(share=f"{report.first_position / report.decisive:.0%}"))
    if report.unequal_length:
        parts.append(t("pairs.agree_longer").format(share=f"{report.longer_picked / report.unequal_length:.0%}"))
    parts.append(t("pairs.agree_counts").format(ties=report.ties, both_bad=report.both_bad, skips=report.skips))
    return t("pairs.list_separator").join(parts)


def _preview(text: str, limit: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class PairPanel:
    """Everything the pair panel shows."""

    info: str
    context: str
    prompt: str
    first: str
    second: str


def empty_panel() -> PairPanel:
    return PairPanel(t("pairs.no_pair"), "", "", "", "")


@dataclass(frozen=True)
class PairsUI:
    """The components handlers write to; handlers return ``{component: value}`` dicts keyed by these."""

    view: Any
    signature: Any  # what the last poll saw (collection names, the open collection's counts)
    collection: Any
    language: Any
    source: Any
    label_state: Any
    sort: Any
    score_name: Any
    search: Any
    info: Any
    context: Any
    prompt: Any
    first: Any
    second: Any
    table: Any
    page: Any
    page_info: Any
    progress: Any
    message: Any
    reason: Any
    add_collection: Any
    add_message: Any
    import_report: Any
    export_report: Any
    export_file: Any

    @property
    def shown(self) -> list[Any]:
        """What every view change updates: the state, the pair panel, table, page, progress and message."""
        return [
            self.view,
            self.info,
            self.context,
            self.prompt,
            self.first,
            self.second,
            self.table,
            self.page,
            self.page_info,
            self.progress,
            self.message,
        ]

    @property
    def filters(self) -> list[Any]:
        """The filter controls, in ``PairFilters``' order."""
        return [getattr(self, FILTER_CONTROLS.get(name, name)) for name in FILTER_FIELDS]

    @property
    def opened(self) -> list[Any]:
        """What opening a collection sets: the dropdowns and search box, the poll signature and the view."""
        return [*self.filters, self.signature, *self.shown]


class PairsHandlers:
    def __init__(self, ctx: AppContext, ui: PairsUI) -> None:
        self.ctx = ctx
        self.ui = ui

    @property
    def store(self) -> Any:
        return self.ctx.store

    # --- rendering -------------------------------------------------------------------------------------
    def render_pair(self, pair_id: int | None, annotator: str, search: str = "") -> tuple[PairPanel, str]:
        """(what the panel shows, which stored side is first) for a pair; ``search``'s matches highlighted."""
        if pair_id is None:
            return empty_panel(), "chosen"
        stored = self.store.get_pair(pair_id)
        pair = stored.pair
        first = shown_first(annotator, stored.root_id)
        texts = (pair.chosen, pair.rejected) if first == "chosen" else (pair.rejected, pair.chosen)
        labels = self.store.labels_for(pair_id)
        mine = next((label for label in labels if label.annotator == annotator), None)
        parts = [t("pairs.info_pair").format(pair=stored.id), inert_inline(pair.source or "–")]
        parts.append(language_name(pair.language))
        if stored.split:
            parts.append(t("pairs.info_split").format(split=inert_inline(stored.split)))
        if stored.parent_id is not None:
            parts.append(t("pairs.info_edited").format(parent=stored.parent_id))
        if not stored.is_latest:
            parts.append(t("pairs.info_older"))
        parts.append(t("pairs.info_labels").format(n=len(labels)))
        if mine is not None:
            parts.append(t("pairs.info_mine").format(verdict=displayed_verdict(mine.choice, first)))
        scores = self.store.scores_for(pair_id)
        if scores:
            margin = t("pairs.info_margin")
            shown = list(scores.items())[:2]
            parts.append(", ".join(margin.format(run=inert_inline(k), margin=f"{v:+.3f}") for k, v in shown))
        mark = search_highlighter(search)
        context = prompt_context_markdown(pair.prompt, mark)
        return (
            PairPanel(
                info=" · ".join(parts),
                context=context or t("pairs.no_context"),
                prompt=last_user_markdown(pair.prompt, mark),
                first=inert_markdown(texts[0], mark),
                second=inert_markdown(texts[1], mark),
            ),
            first,
        )

    def progress_text(self, collection: str, annotator: str) -> str:
        if not collection:
            return ""
        return progress_markdown(self.store.label_progress(collection, annotator))

    def table_rows(self, ids: Iterable[int], annotator: str, current: int | None) -> list[list[Any]]:
        rows = []
        for pid in ids:
            stored = self.store.get_pair(pid)
            pair = stored.pair
            labels = self.store.labels_for(pid)
            mine = next((label.choice for label in labels if label.annotator == annotator), "")
            shown_now = shown_first(annotator, stored.root_id)
            rows.append(
                [
                    "▶" if pid == current else "",
                    pid,
                    language_name(pair.language),
                    _preview(pair.last_user, 60),
                    len(pair.chosen) - len(pair.rejected),
                    displayed_verdict(mine, shown_now) if mine else "",
                    len(labels),
                ]
            )
        return rows

    def show(self, view: PairsView, user: User, message: str = "") -> dict[Any, Any]:
        """The view's outputs: state, the pair panel, table, page number and info, progress, message."""
        ui = self.ui
        panel, first = self.render_pair(view.pair_id, user.name, view.text)
        view = replace(view, shown_first=first)
        return {
            ui.view: view,
            ui.info: panel.info,
            ui.context: panel.context,
            ui.prompt: panel.prompt,
            ui.first: panel.first,
            ui.second: panel.second,
            # With its headers: plain rows would bring back the English ones after a switch to 中文.
            ui.table: {"data": self.table_rows(view.page_ids, user.name, view.pair_id),
                       "headers": headers("pairs-table", TABLE_HEADERS)},
            ui.page: view.page,
            ui.page_info: page_info(view),
            ui.progress: self.progress_text(view.collection, user.name),
            ui.message: message,
        }

    # --- paging ----------------------------------------------------------------------------------------
    def _fetch_page(self, view: PairsView, annotator: str, page: int) -> PairsView:
        """Page ``page`` of the view's list (clamped to the pages there are), with how many pairs match."""
        query = pair_query(view, annotator)
        matches = self.store.count(view.collection, query)
        page = min(max(1, int(page)), page_count(matches))
        result = self.store.page(
            view.collection,
            query,
            sort=view.sort,
            score_name=view.score_name or None,
            page=page,
            size=PAGE_SIZE,
        )
        ids = tuple(item.id for item in result.items)
        return replace(view, page=page, page_ids=ids, more=result.next_cursor is not None, matches=matches)

    def browse(
        self, filters: PairFilters, page: float | None, view: PairsView | None, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """Apply the filters and show a page (the first pair of the page opens); a page past the last shows the
        last one and says how many there are."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not filters.collection:
            return self.show(new_view(), user)
        if filters.sort == "score" and not filters.score_name:
            raise gr.Error(t("pairs.need_scores"))
        view = replace(view or new_view(), **filter_values(filters))
        wanted = max(1, int(page or 1))
        try:
            view = self._fetch_page(view, user.name, wanted)
        except UserError as error:
            raise gr.Error(str(error)) from None
        message = ""
        if view.page < wanted and view.matches:
            message = t("pairs.only_pages").format(pages=view.pages, page=view.page)
        return self.show(view.opened_first(), user, message)

    def browse_first_page(
        self, filters: PairFilters, view: PairsView | None, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """A filter changed (or a search ran): back to page 1."""
        return self.browse(filters, 1, view, request)

    def turn_page(self, delta: int, view: PairsView | None, request: gr.Request | None = None) -> dict[Any, Any]:
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.collection:
            return self.show(new_view(), user)
        if delta > 0 and not view.more:
            return self.show(view, user, t("pairs.last_page"))
        if delta < 0 and view.page <= 1:
            return self.show(view, user, t("pairs.first_page"))
        return self.show(self._fetch_page(view, user.name, view.page + delta).opened_first(), user)

    def open_pair(
        self, view: PairsView | None, evt: gr.SelectData, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """A click on a table row opens that pair."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        view = view or new_view()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not 0 <= int(row) < len(view.page_ids):
            return self.show(view, user)
        return self.show(replace(view, pair_id=view.page_ids[int(row)]), user)

    def move(self, delta: int, view: PairsView | None, request: gr.Request | None = None) -> dict[Any, Any]:
        """← / →: the previous or next pair in the list, across page boundaries."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.page_ids:
            return self.show(view or new_view(), user)
        ids = view.page_ids
        index = ids.index(view.pair_id) if view.pair_id in ids else -1
        target = index + delta
        if 0 <= target < len(ids):
            return self.show(replace(view, pair_id=ids[target]), user)
        if target < 0 and view.page > 1:
            view = self._fetch_page(view, user.name, view.page - 1)
            return self.show(replace(view, pair_id=view.page_ids[-1] if view.page_ids else None), user)
        if target >= len(ids) and view.more:
            return self.show(self._fetch_page(view, user.name, view.page + 1).opened_first(), user)
        return self.show(view, user, t("pairs.first_pair" if target < 0 else "pairs.last_pair"))

    # --- labelling -------------------------------------------------------------------------------------
    def vote(
        self, verdict: str, view: PairsView | None, reason: str, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """Record the verdict, then open the next pair this annotator has not labelled (the reason box empties)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.pair_id is None:
            raise gr.Error(t("pairs.no_pair_open"))
        pair_id = int(view.pair_id)
        # The side order is derived again here, not trusted from the browser.
        root = self.store.get_pair(pair_id).root_id
        try:
            self.store.add_label(pair_id, user.name, verdict, shown_first(user.name, root), (reason or "").strip())
        except UserError as error:
            raise gr.Error(str(error)) from None
        view = self._next_to_label(view, user.name, pair_id)
        message = t("pairs.voted").format(pair=pair_id, verdict=verdict_name(verdict))
        if view.pair_id == pair_id:
            message += " " + t("pairs.all_labelled")
        return {**self.show(view, user, message), self.ui.reason: ""}

    def _next_to_label(self, view: PairsView, annotator: str, after: int) -> PairsView:
        """The list refreshed, and the first pair after ``after`` (in list order) without this annotator's label."""
        old_ids = view.page_ids
        index = old_ids.index(after) if after in old_ids else -1
        view = self._fetch_page(view, annotator, view.page)
        ids = view.page_ids
        if view.label_state == "not_mine":
            # The labelled pair left the list: the next one moved into its place.
            candidates = [pid for pid in ids if pid not in old_ids[: index + 1]]
            if candidates:
                return replace(view, pair_id=candidates[0])
            if view.page_ids:
                return view.opened_first()
            return replace(view, pair_id=after)
        position = ids.index(after) + 1 if after in ids else 0
        for _ in range(MAX_SCAN_PAGES):
            for pid in view.page_ids[position:]:
                if self.store.label_of(pid, annotator) is None:
                    return replace(view, pair_id=pid)
            if not view.more:
                break
            view = self._fetch_page(view, annotator, view.page + 1)
            position = 0
        found = self.store.next_unlabelled(
            view.collection, annotator, after_id=after, query=pair_query(view, annotator)
        )
        return replace(view, pair_id=found.id if found else after)

    def undo(self, view: PairsView | None, request: gr.Request | None = None) -> dict[Any, Any]:
        """Remove my last label in this collection and open that pair again (its reason back in the box)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or not view.collection:
            raise gr.Error(t("pairs.pick_collection"))
        label = self.store.undo_last_label(user.name, view.collection)
        if label is None:
            return self.show(view, user, t("pairs.nothing_to_undo"))
        pair_id = self.store.latest_version(label.pair_id).id
        view = replace(self._fetch_page(view, user.name, view.page), pair_id=pair_id)
        message = t("pairs.undid").format(verdict=verdict_name(label.verdict), pair=pair_id)
        return {**self.show(view, user, message), self.ui.reason: label.reason}

    # --- editing and adding ----------------------------------------------------------------------------
    def load_edit(self, view: PairsView | None, which: str, request: gr.Request | None = None) -> str:
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.pair_id is None:
            raise gr.Error(t("pairs.no_pair_open"))
        stored = self.store.get_pair(int(view.pair_id))
        side = self._stored_side(user.name, stored.root_id, which)
        return getattr(stored.pair, side)

    @staticmethod
    def _stored_side(annotator: str, root_id: int, which: str) -> str:
        """'first' / 'second' (as displayed) → 'chosen' / 'rejected' (as stored)."""
        first = shown_first(annotator, root_id)
        other = "rejected" if first == "chosen" else "chosen"
        return first if which == "first" else other

    def save_edit(
        self, view: PairsView | None, which: str, text: str, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """Save the edited response as a new version of the pair (the original stays)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.pair_id is None:
            raise gr.Error(t("pairs.no_pair_open"))
        stored = self.store.get_pair(int(view.pair_id))
        side = self._stored_side(user.name, stored.root_id, which)
        try:
            new_id = self.store.edit_pair(stored.id, **{side: text}, by=user.name)
        except UserError as error:
            raise gr.Error(str(error)) from None
        view = replace(self._fetch_page(view, user.name, view.page), pair_id=new_id)
        return self.show(view, user, t("pairs.saved_edit").format(new=new_id, old=stored.id))

    def add_pair(
        self,
        collection: str,
        system: str,
        prompt: str,
        chosen: str,
        rejected: str,
        view: PairsView | None = None,
        request: gr.Request | None = None,
    ) -> dict[Any, Any]:
        """Add a hand-written pair: the message, the collection list, and the view when it shows that collection."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        name = (collection or HAND_WRITTEN_COLLECTION).strip()
        for field, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not (value or "").strip():
                raise gr.Error(t(f"pairs.empty_{field}"))
        if chosen.strip() == rejected.strip():
            raise gr.Error(t("pairs.identical"))
        pair = Pair(
            prompt=user_prompt(prompt.strip(), (system or "").strip()),
            chosen=chosen,
            rejected=rejected,
            source="hand-written",
            meta={"author": user.name},
        )

        existing = self.store.find_collection(name)
        if existing is not None and existing.kind == "import" and not user.can(Role.ADMIN):
            raise gr.Error(t("pairs.admins_only").format(name=repr(name), hand=repr(HAND_WRITTEN_COLLECTION)))
        target = existing or self.store.ensure_collection(name, "manual")
        try:
            stored = self.store.add_pair(target, pair, by=user.name)
        except DuplicatePair as error:
            raise gr.Error(str(error)) from None
        out = {
            self.ui.add_message: t("pairs.added").format(pair=stored.id, collection=inert_inline(name)),
            self.ui.collection: gr.update(choices=self.collection_names()),
        }
        if view and view.collection == name:
            fresh = self._fetch_page(view, user.name, view.page)
            out |= self.show(replace(fresh, pair_id=view.pair_id if view.pair_id in fresh.page_ids else None), user)
        return out

    # --- statistics ------------------------------------------------------------------------------------
    def statistics(self, view: PairsView | None, request: gr.Request | None = None) -> str:
        """Progress, agreement (Cohen's / Fleiss' κ, agreement with the source's order), length bias and
        duplicates of the collection, from ``ctllm.pairs.agreement.collection_stats``."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.collection:
            return t("pairs.pick_collection")

        name = view.collection
        stats = collection_stats(self.store, name)
        lengths, dup = stats["lengths"], stats["duplicates"]
        judged = stats["agreement"].labelled_pairs  # skips are not judgements
        languages = ", ".join(f"{language_name(k) if k else '?'} {v:,}" for k, v in stats["by_language"].items())
        splits = ", ".join(f"{inert_inline(k or t('pairs.no_split'))} {v:,}" for k, v in stats["by_split"].items())
        share = lengths["chosen_longer_share"]
        skipped = max(0, stats["labelled"] - judged)
        items = [
            counted("pairs.stats_counts", pairs=stats["pairs"], judged=judged, skipped=skipped,
                    disagreements=stats["disagreements"], edited=stats["edited"]),
            t("pairs.stats_languages").format(languages=languages, splits=splits),
            t("pairs.stats_agreement").format(agreement=agreement_text(stats["agreement"])),
            t("pairs.stats_length_none")
            if share is None
            else counted("pairs.stats_length", share=f"{share:.0%}", equal=lengths["equal"],
                         chosen=round(lengths["mean_chosen"]), rejected=round(lengths["mean_rejected"])),
            counted("pairs.stats_duplicates", prompts=dup["prompts_in_several_pairs"],
                    sharing=dup["pairs_sharing_a_prompt"], elsewhere=dup["pairs_also_in_other_collections"],
                    skipped=dup["skipped_at_import"]),
        ]  # fmt: skip
        lines = [f"### {inert_inline(name)}", self.progress_text(name, user.name), "", *(f"- {i}" for i in items)]
        return "\n".join(lines)

    # --- import / export -------------------------------------------------------------------------------
    def import_file(
        self,
        upload: str | None,
        path: str,
        fmt: str,
        mapping_text: str,
        collection: str,
        abort: bool,
        view: PairsView | None = None,
        request: gr.Request | None = None,
    ) -> dict[Any, Any]:
        """Import an uploaded file, a server path inside the allowed roots, or a hub dataset id (admin); the
        imported collection opens (the dropdown, the pair, the table and the progress all show it)."""
        user = require(request, Role.ADMIN, self.ctx.settings)

        source: str | Path
        allow_hub = False
        typed = (path or "").strip()
        if upload:
            source = Path(upload)
            default_name = Path(upload).stem
        elif typed:
            candidate = Path(typed).expanduser()
            if looks_like_hub_id(typed) and not any(
                (Path(root) / typed).exists() for root in self.ctx.settings.path_roots
            ):
                source, allow_hub, default_name = typed, not self.ctx.settings.offline, typed.split("/")[-1]
            else:
                try:
                    base = None if candidate.is_absolute() else Path(self.ctx.settings.path_roots[0])
                    source = safe_resolve(typed, self.ctx.settings.path_roots, base=base)
                except UserError as error:
                    raise gr.Error(str(error)) from None
                default_name = Path(source).stem
        else:
            raise gr.Error(t("pairs.import_nothing_given"))
        mapping = None
        if (mapping_text or "").strip():
            try:
                mapping = json.loads(mapping_text)
            except json.JSONDecodeError as error:
                raise gr.Error(t("pairs.mapping_not_json").format(error=error)) from None
            if not isinstance(mapping, dict):
                raise gr.Error(t("pairs.mapping_not_object"))
        name = (collection or "").strip() or default_name
        try:
            summary = import_pairs(
                self.store,
                source,
                name,
                fmt=None if fmt in (None, "", "auto") else fmt,
                mapping=mapping,
                on_error="abort" if abort else "skip",
                max_field_chars=self.ctx.settings.max_field_chars,
                max_bytes=self.ctx.settings.max_upload_mb << 20,
                allow_hub=allow_hub,
                created_by=user.name,
            )
        except UserError as error:
            return {self.ui.import_report: t("pairs.import_failed") + "\n\n" + code_block(str(error)[:4000])}
        report = t("pairs.imported").format(collection=inert_inline(summary.collection), format=summary.format)
        report += "\n\n"
        report += code_block(summary.report())
        # The filters stay, except the source (the new collection has its own sources).
        base = replace(view or new_view(), collection=summary.collection, source=ALL, page=1)
        return {self.ui.import_report: report, **self._opened(base, user)}

    def export(self, view: PairsView | None, fmt: str, request: gr.Request | None = None) -> dict[Any, Any]:
        """Export the collection (labels resolved into chosen / rejected) and offer the file (admin)."""
        require(request, Role.ADMIN, self.ctx.settings)
        if not view or not view.collection:
            raise gr.Error(t("pairs.pick_collection"))

        out_dir = self.ctx.settings.exports_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = export_collection(self.store, view.collection, out_dir, fmt)
        except UserError as error:
            raise gr.Error(str(error)) from None
        path = Path(getattr(result, "path", result))
        summary = getattr(result, "report", None)
        text = summary() if callable(summary) else t("pairs.wrote").format(file=path.name)
        return {self.ui.export_report: inert_markdown(text), self.ui.export_file: str(path)}

    # --- opening a collection --------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return [c.name for c in self.store.list_collections()]

    def _signature(self, names: list[str], collection: str, annotator: str) -> tuple[Any, ...]:
        """Cheap to compute; when it changes, the collection list or the progress is sent again."""
        counts = astuple(self.store.progress(collection, annotator)) if collection in names else ()
        return (tuple(names), counts)

    @staticmethod
    def _choices(names: list[str], current: str | None) -> Any:
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def _opened(self, base: PairsView, user: User) -> dict[Any, Any]:
        """``base``'s collection opened on its first page: every dropdown, the search box, the signature and the
        view set to match (``PairsUI.opened``)."""
        ui = self.ui
        names = self.collection_names()
        if base.collection not in names:
            base = new_view()
        sources, scores = self._collection_filters(base.collection)
        source = base.source if base.source in sources else ALL
        score_name = base.score_name if base.score_name in scores else (scores[0] if scores else "")
        sort = "id" if base.sort == "score" and not score_name else base.sort
        view = replace(base, source=source, score_name=score_name, sort=sort)
        if view.collection:
            view = self._fetch_page(view, user.name, view.page).opened_first()
        return {
            ui.collection: gr.update(choices=names, value=view.collection or None),
            ui.language: view.language,
            ui.source: gr.update(choices=source_choices(sources), value=source),
            ui.label_state: view.label_state,
            ui.sort: view.sort,
            ui.score_name: gr.update(choices=scores, value=score_name or None),
            ui.search: view.text,
            ui.signature: self._signature(names, view.collection, user.name),
            **self.show(view, user),
        }

    def open_collection(self, name: str, request: gr.Request | None = None) -> dict[Any, Any]:
        """Open collection ``name`` with every pair listed (label state "all", no other filter), e.g. from the
        Chat tab's "see your votes"; outputs: ``PairsUI.opened`` (see :func:`open_collection_event`)."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        return self._opened(PairsView(collection=name, label_state=ALL), user)

    def collection_changed(
        self, filters: PairFilters, view: PairsView | None, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """The collection dropdown changed (by the user, or by code: an import, a collection gone): open the
        collection it shows, keeping the filters but the source. Nothing is sent when the view already shows it."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if filters.collection == (view or new_view()).collection:
            return {}
        return self._opened(PairsView(**filter_values(replace(filters, source=ALL))), user)

    def _collection_filters(self, collection: str) -> tuple[list[str], list[str]]:
        """A collection's sources and the runs that scored it."""
        if not collection:
            return [], []
        sources = list(self.store.counts(collection)[0]["by_source"])
        return sources, [name for name, _ in self.store.score_names(collection)]

    def collection_filters(self, collection: str, request: gr.Request | None = None) -> tuple[Any, Any]:
        """Source and run-score choices for a collection."""
        require(request, Role.VIEWER, self.ctx.settings)
        sources, scores = self._collection_filters(collection)
        return (
            gr.update(choices=source_choices(sources), value=ALL),
            gr.update(choices=scores, value=scores[0] if scores else None),
        )

    # --- staying true while the page is open -----------------------------------------------------------
    def refresh_collections(self, current: str | None, request: gr.Request | None = None) -> Any:
        """The collection list again (chat votes or imports may have added one since the page loaded)."""
        require(request, Role.VIEWER, self.ctx.settings)
        return self._choices(self.collection_names(), current)

    def poll(
        self,
        current: str | None,
        signature: tuple[Any, ...] | None,
        view: PairsView | None,
        request: gr.Request | None = None,
    ) -> dict[Any, Any]:
        """Every few seconds: the collection list when a collection came or went, the progress when labels
        changed; nothing at all when the signature is the one last sent."""
        try:
            user = require(request, Role.VIEWER, self.ctx.settings)
        except Forbidden:
            return {}
        names = self.collection_names()
        collection = view.collection if view else ""
        fresh = self._signature(names, collection, user.name)
        old = tuple(signature or ((), ()))
        if fresh == old:
            return {}
        out: dict[Any, Any] = {self.ui.signature: fresh}
        if fresh[0] != old[0]:
            out[self.ui.collection] = self._choices(names, current)
        if collection in names and fresh[1] != old[1]:
            out[self.ui.progress] = self.progress_text(collection, user.name)
        return out

    def tab_selected(
        self, current: str | None, view: PairsView | None, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """Back on the tab: the collection list, and the open page again (the Chat tab may have added votes),
        keeping the open pair when it is still listed."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        names = self.collection_names()
        out: dict[Any, Any] = {self.ui.collection: self._choices(names, current)}
        if view and view.collection in names:
            fresh = self._fetch_page(view, user.name, view.page)
            keep = view.pair_id if view.pair_id in fresh.page_ids else None
            out |= self.show(fresh.opened_first() if keep is None else replace(fresh, pair_id=keep), user)
        return out

    def language_changed(
        self, current: str | None, view: PairsView | None, request: gr.Request | None = None
    ) -> dict[Any, Any]:
        """After a switch of language: the open page and the source choices again, in the new language."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        out = self.tab_selected(current, view, request)
        if self.ui.view not in out:  # no collection open (or it is gone): the empty panel, in the new language
            out |= self.show(new_view(), user)
        view = out[self.ui.view]
        sources, _ = self._collection_filters(view.collection)
        return out | {self.ui.source: gr.update(choices=source_choices(sources), value=view.source)}

    def load(self, request: gr.Request | None = None) -> dict[Any, Any]:
        """Page load: the collection list, the first collection's first page, and who is labelling."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        self.ctx.wait_until_ready()
        names = self.collection_names()
        collection = SAMPLES_COLLECTION if SAMPLES_COLLECTION in names else (names[0] if names else "")
        return {
            **self._opened(new_view(collection), user),
            self.ui.add_collection: gr.update(
                choices=[*names] or [HAND_WRITTEN_COLLECTION], value=HAND_WRITTEN_COLLECTION
            ),
        }


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "/", "~"))
        and not Path(text).suffix
        and all(ch.isalnum() or ch in "-_." for part in parts for ch in part)
    )


def build(ctx: AppContext) -> dict[str, Any]:
    """The tab's components and events (inside an open ``gr.Tab``). Returns the page load and tab select events
    as (fn, inputs, outputs), the handlers ("handlers") and the components ("ui"; see
    :func:`open_collection_event` for opening a collection from another tab)."""
    view = gr.State(new_view())
    signature = gr.State(())

    with gr.Row():
        collection = gr.Dropdown([], elem_id="pairs-collection", scale=2)
        search = gr.Textbox(elem_id="pairs-search", scale=3, min_width=180)
        search_run = gr.Button(elem_id="pairs-search-run", scale=0, min_width=80)
        language = gr.Dropdown(LANGUAGE_CHOICES, value=ALL, elem_id="pairs-language", scale=1)
        source = gr.Dropdown([ALL], value=ALL, elem_id="pairs-source", scale=1)
        label_state = gr.Dropdown(
            LABEL_STATE_CHOICES, value="not_mine", elem_id="pairs-label-state", scale=2, min_width=200
        )
        sort = gr.Dropdown(SORT_CHOICES, value="id", elem_id="pairs-sort", scale=2)
        # A custom value is allowed so that choices and value sent together (a collection just opened) are kept: the
        # browser otherwise drops a value that was not among the previous choices. The server checks the name.
        score_name = gr.Dropdown([], allow_custom_value=True, elem_id="pairs-score-name", scale=2)

    with gr.Row():
        with gr.Column(scale=5):
            info = gr.Markdown(elem_id="pairs-pair-info")
            build_guidelines_panel(ctx, collection)
            with gr.Accordion(open=False, elem_id="pairs-context-box"):
                context = gr.Markdown(elem_id="pairs-context", sanitize_html=True)
            gr.Markdown(elem_id="pairs-prompt-heading")
            prompt = gr.Markdown(elem_id="pairs-prompt", elem_classes=["prompt-card"], sanitize_html=True)
            with gr.Row(equal_height=True):
                with gr.Column():
                    gr.Markdown(elem_id="pairs-first-heading")
                    first = gr.Markdown(elem_id="pairs-first", elem_classes=["response-card"], sanitize_html=True)
                with gr.Column():
                    gr.Markdown(elem_id="pairs-second-heading")
                    second = gr.Markdown(elem_id="pairs-second", elem_classes=["response-card"], sanitize_html=True)
            with gr.Row(elem_classes=["vote-row"]):
                vote_buttons = {}
                for verdict, elem, variant in (
                    ("first", "vote-first", "primary"),
                    ("second", "vote-second", "primary"),
                    ("tie", "vote-tie", "secondary"),
                    ("both_bad", "vote-bothbad", "secondary"),
                    ("skip", "vote-skip", "secondary"),
                ):
                    vote_buttons[verdict] = gr.Button(variant=variant, elem_id=elem)
            with gr.Row():
                prev_pair = gr.Button(size="sm", elem_id="pairs-prev", min_width=90)
                next_pair = gr.Button(size="sm", elem_id="pairs-next", min_width=90)
                undo = gr.Button(size="sm", elem_id="pairs-undo", min_width=90)
                reason = gr.Textbox(elem_id="pairs-reason", scale=3, max_lines=2)
            gr.Markdown(elem_id="pairs-keys", elem_classes=["kbd-hint"])
            message = gr.Markdown(elem_id="pairs-message")
            progress = gr.Markdown(elem_id="pairs-progress")
        with gr.Column(scale=4, min_width=420):
            with gr.Row(elem_id="pairs-page-row", equal_height=True):
                prev_page = gr.Button(size="sm", elem_id="pairs-prev-page", scale=0, min_width=70)
                page = gr.Number(
                    value=1,
                    precision=0,
                    minimum=1,
                    elem_id="pairs-page",
                    min_width=60,
                    show_label=False,
                    container=False,
                    scale=1,
                )
                go = gr.Button(size="sm", elem_id="pairs-go", scale=0, min_width=50)
                next_page = gr.Button(size="sm", elem_id="pairs-next-page", scale=0, min_width=70)
            page_info = gr.Markdown(elem_id="pairs-page-info")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                interactive=False,
                wrap=True,
                elem_id="pairs-table",
                max_height=640,
                column_widths=TABLE_WIDTHS,
                datatype="str",
            )
            gr.Markdown(elem_id="pairs-table-legend", elem_classes=["kbd-hint"])

    with gr.Accordion(open=False, elem_id="pairs-edit-box"):
        with gr.Row():
            edit_which = gr.Radio(EDIT_WHICH_CHOICES, value="first", elem_id="pairs-edit-which")
            edit_load = gr.Button(size="sm", elem_id="pairs-edit-load")
        edit_text = gr.Textbox(lines=6, elem_id="pairs-edit-text")
        edit_save = gr.Button(elem_id="pairs-edit-save")

    with gr.Accordion(open=False, elem_id="pairs-add-box"):
        add_collection = gr.Dropdown(
            [HAND_WRITTEN_COLLECTION],
            value=HAND_WRITTEN_COLLECTION,
            allow_custom_value=True,
            elem_id="pairs-add-collection",
        )
        add_system = gr.Textbox(elem_id="pairs-add-system")
        add_prompt = gr.Textbox(lines=2, elem_id="pairs-add-prompt")
        with gr.Row():
            add_chosen = gr.Textbox(lines=4, elem_id="pairs-add-chosen")
            add_rejected = gr.Textbox(lines=4, elem_id="pairs-add-rejected")
        add_save = gr.Button(elem_id="pairs-add-save")
        add_message = gr.Markdown(elem_id="pairs-add-message")

    with gr.Accordion(open=False, elem_id="pairs-stats-box"):
        stats_run = gr.Button(size="sm", elem_id="pairs-stats-run")
        stats = gr.Markdown(elem_id="pairs-stats")

    with gr.Accordion(open=False, elem_id="pairs-import-box"):
        with gr.Row():
            upload = gr.File(
                type="filepath", elem_id="pairs-import-file", file_types=[".json", ".jsonl", ".parquet", ".csv", ".tsv"]
            )
            with gr.Column():
                import_path = gr.Textbox(elem_id="pairs-import-path")
                import_format = gr.Dropdown(["auto", *FORMATS], value="auto", elem_id="pairs-import-format")
                import_collection = gr.Textbox(elem_id="pairs-import-collection")
        import_mapping = gr.Textbox(elem_id="pairs-import-mapping")
        import_abort = gr.Checkbox(elem_id="pairs-import-abort")
        import_run = gr.Button(elem_id="pairs-import-run")
        import_report = gr.Markdown(elem_id="pairs-import-report")

    synth = build_synth_panel(ctx, collection)

    with gr.Accordion(open=False, elem_id="pairs-export-box"):
        with gr.Row():
            export_format = gr.Dropdown(list(EXPORT_FORMATS), value=EXPORT_FORMATS[0], elem_id="pairs-export-format")
            export_run = gr.Button(elem_id="pairs-export-run")
        export_report = gr.Markdown(elem_id="pairs-export-report")
        export_file = gr.File(interactive=False, elem_id="pairs-export-file")

    ui = PairsUI(
        view=view,
        signature=signature,
        collection=collection,
        language=language,
        source=source,
        label_state=label_state,
        sort=sort,
        score_name=score_name,
        search=search,
        info=info,
        context=context,
        prompt=prompt,
        first=first,
        second=second,
        table=table,
        page=page,
        page_info=page_info,
        progress=progress,
        message=message,
        reason=reason,
        add_collection=add_collection,
        add_message=add_message,
        import_report=import_report,
        export_report=export_report,
        export_file=export_file,
    )
    h = PairsHandlers(ctx, ui)
    shown = ui.shown
    fast = {"show_progress": "hidden", "concurrency_limit": None}

    gr.on(
        [
            language.input,
            source.input,
            label_state.input,
            sort.input,
            score_name.input,
            search.submit,
            search_run.click,
        ],
        filtered(h.browse_first_page, 1),
        inputs=[*ui.filters, view],
        outputs=shown,
        **fast,
    )
    # .change, not .input: an import, the poll or another tab sets the dropdown too, and the view must follow.
    collection.change(filtered(h.collection_changed, 1), inputs=[*ui.filters, view], outputs=ui.opened, **fast)
    gr.on(
        [go.click, page.submit],
        filtered(h.browse, 2),
        inputs=[*ui.filters, page, view],
        outputs=shown,
        api_name="pairs_page",
        **fast,
    )
    prev_page.click(bind(h.turn_page, -1), inputs=[view], outputs=shown, **fast)
    next_page.click(bind(h.turn_page, 1), inputs=[view], outputs=shown, **fast)
    table.select(bind(h.open_pair), inputs=[view], outputs=shown, **fast)
    prev_pair.click(bind(h.move, -1), inputs=[view], outputs=shown, **fast)
    next_pair.click(bind(h.move, 1), inputs=[view], outputs=shown, **fast)
    for verdict, button in vote_buttons.items():
        button.click(
            bind(h.vote, verdict), inputs=[view, reason], outputs=[*shown, reason], api_name=f"label_{verdict}", **fast
        )
    undo.click(bind(h.undo), inputs=[view], outputs=[*shown, reason], api_name="label_undo", **fast)
    edit_load.click(bind(h.load_edit), inputs=[view, edit_which], outputs=[edit_text], **fast)
    edit_save.click(bind(h.save_edit), inputs=[view, edit_which, edit_text], outputs=shown, api_name="edit_pair")
    add_save.click(
        bind(h.add_pair),
        inputs=[add_collection, add_system, add_prompt, add_chosen, add_rejected, view],
        outputs=[add_message, collection, *shown],
        api_name="add_pair",
    )
    stats_run.click(bind(h.statistics), inputs=[view], outputs=[stats], api_name="pairs_statistics")
    import_run.click(
        bind(h.import_file),
        inputs=[upload, import_path, import_format, import_mapping, import_collection, import_abort, view],
        outputs=[import_report, *ui.opened],
        concurrency_limit=1,
        api_name="import_pairs",
    )
    export_run.click(
        bind(h.export),
        inputs=[view, export_format],
        outputs=[export_report, export_file],
        concurrency_limit=1,
        api_name="export_collection",
    )
    gr.Timer(POLL_SECONDS).tick(
        bind(h.poll),
        inputs=[collection, signature, view],
        outputs=[collection, progress, signature],
        **fast,
        api_name="pairs_poll",
        api_visibility="undocumented",
    )
    return {
        "load": (bind(h.load), [], [*ui.opened, add_collection]),
        "select": (bind(h.tab_selected), [collection, view], [collection, *shown]),
        # After a switch of language, what the handlers wrote, in the new one: the Pairs view, then the synthesis panel.
        "language": [(bind(h.language_changed), [collection, view], [collection, source, *shown]), synth["language"]],
        "handlers": h,
        "ui": ui,
    }


def open_collection_event(tab: dict[str, Any], name: str) -> tuple[Any, list[Any], list[Any]]:
    """(fn, inputs, outputs) of an event that opens collection ``name`` in the Pairs tab with every pair listed
    (label state "all"); ``tab`` is what :func:`build` returned. For another tab, e.g.::

        fn, inputs, outputs = open_collection_event(pairs, CHAT_VOTES_COLLECTION)
        link.click(lambda: gr.Tabs(selected="pairs"), outputs=tabs).then(fn, inputs, outputs)
    """
    handlers: PairsHandlers = tab["handlers"]
    return bind(handlers.open_collection, name), [], handlers.ui.opened


def standalone(ctx: AppContext) -> PairsHandlers:
    """The tab built in a Blocks of its own, for scripts and tests that call the handlers directly."""
    with gr.Blocks():
        return build(ctx)["handlers"]
