"""Pairs tab: browse, search, filter and label a collection; edit, add, import, export; statistics.

The two responses appear in an order fixed per annotator and pair (a hash of both), so a reload shows the
same order and position bias averages out over annotators; each label records which stored side was first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.ui.auth import Role, User, require
from ctllm.ui.context import HAND_WRITTEN_COLLECTION, SAMPLES_COLLECTION, AppContext
from ctllm.ui.handlers import bind
from ctllm.ui.i18n import Translator, t
from ctllm.ui.render import code_block, inert_inline, inert_markdown, last_user_markdown, prompt_context_markdown
from ctllm.ui.synth_panel import build as build_synth_panel

PAGE_SIZE = 20
ALL = "all"
LANGUAGE_CHOICES = [("all", ALL), ("Chinese", "zh"), ("English", "en"), ("other", "other")]
LABEL_STATE_CHOICES = [
    ("all", ALL),
    ("not labelled by me", "not_mine"),
    ("unlabelled (by anyone)", "unlabelled"),
    ("labelled by me", "mine"),
    ("labelled (by anyone)", "labelled"),
    ("disagreement", "disagreement"),
]
SORT_CHOICES = [
    ("import order", "id"),
    ("length difference, chosen shorter first", "length_diff"),
    ("length difference, chosen longer first", "-length_diff"),
    ("run score: lowest margin first", "score"),
]
VERDICT_NAMES = {
    "first": "first better",
    "second": "second better",
    "tie": "tie",
    "both_bad": "both bad",
    "skip": "skipped",
}
TABLE_HEADERS = ["", "id", "lang", "prompt", "Δ len", "mine", "n"]
MAX_SCAN_PAGES = 5  # pages looked through for the next pair to label before falling back to id order


def shown_first(annotator: str, root_id: int) -> str:
    """Which stored side ("chosen" / "rejected") this annotator sees first on this pair: a stable coin flip."""
    digest = hashlib.sha256(f"{annotator}\x00{root_id}".encode()).digest()
    return "chosen" if digest[0] % 2 == 0 else "rejected"


def displayed_verdict(choice: str, first: str) -> str:
    """A label's choice (in stored sides) said in positions as they are shown now (the label may come from
    another screen, e.g. a chat vote, with another order)."""
    if choice in ("chosen", "rejected"):
        return VERDICT_NAMES["first" if choice == first else "second"]
    return VERDICT_NAMES.get(choice, choice)


def new_view(collection: str = "") -> dict[str, Any]:
    return {
        "collection": collection,
        "language": ALL,
        "source": ALL,
        "label_state": "not_mine",
        "text": "",
        "sort": "id",
        "score_name": "",
        "page": 1,
        "page_ids": [],
        "more": False,
        "pair_id": None,
        "shown_first": "chosen",
    }


def pair_query(view: dict[str, Any], annotator: str) -> Any:
    from ctllm.pairs.store import PairQuery

    def pick(key: str) -> str | None:
        value = view.get(key) or ALL
        return None if value == ALL else value

    state = pick("label_state")
    return PairQuery(
        language=pick("language"),
        source=pick("source"),
        label_state=state,
        annotator=annotator if state in ("mine", "not_mine") else None,
        text=(view.get("text") or "").strip() or None,
    )


def _preview(text: str, limit: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class PairView:
    """Everything the pair panel shows."""

    info: str
    context: str
    prompt: str
    first: str
    second: str


EMPTY_VIEW = PairView("No pair to show: pick a collection or change the filters.", "", "", "", "")


class PairsHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @property
    def store(self) -> Any:
        return self.ctx.store

    # --- rendering -------------------------------------------------------------------------------------
    def render_pair(self, pair_id: int | None, annotator: str) -> tuple[PairView, str]:
        """(what the panel shows, which stored side is first) for a pair."""
        if pair_id is None:
            return EMPTY_VIEW, "chosen"
        stored = self.store.get_pair(pair_id)
        pair = stored.pair
        first = shown_first(annotator, stored.root_id)
        texts = (pair.chosen, pair.rejected) if first == "chosen" else (pair.rejected, pair.chosen)
        labels = self.store.labels_for(pair_id)
        mine = next((label for label in labels if label.annotator == annotator), None)
        parts = [f"**Pair {stored.id}**", inert_inline(pair.source or "–"), pair.language]
        if stored.split:
            parts.append(f"split {inert_inline(stored.split)}")
        if stored.parent_id is not None:
            parts.append(f"edited version of {stored.parent_id}")
        if not stored.is_latest:
            parts.append("⚠ an older version")
        parts.append(f"{len(labels)} label(s)")
        if mine is not None:
            parts.append(f"your verdict: **{displayed_verdict(mine.choice, first)}**")
        scores = self.store.scores_for(pair_id)
        if scores:
            parts.append(", ".join(f"{inert_inline(k)} margin {v:+.3f}" for k, v in list(scores.items())[:2]))
        context = prompt_context_markdown(pair.prompt)
        return (
            PairView(
                info=" · ".join(parts),
                context=context or "_(no system prompt or earlier turns)_",
                prompt=last_user_markdown(pair.prompt),
                first=inert_markdown(texts[0]),
                second=inert_markdown(texts[1]),
            ),
            first,
        )

    def progress_text(self, collection: str, annotator: str) -> str:
        if not collection:
            return ""
        p = self.store.progress(collection, annotator)
        share = f"{p.mine / p.total:.0%}" if p.total else "–"
        return (
            f"**Mine: {p.mine:,} / {p.total:,}** ({share}) · everyone: {p.anyone:,} pairs labelled, "
            f"{p.labels:,} labels by {p.annotators} annotator(s)"
        )

    def table_rows(self, ids: list[int], annotator: str, current: int | None) -> list[list[Any]]:
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
                    pair.language,
                    _preview(pair.last_user, 60),
                    len(pair.chosen) - len(pair.rejected),
                    displayed_verdict(mine, shown_now) if mine else "",
                    len(labels),
                ]
            )
        return rows

    def outputs(self, view: dict[str, Any], user: User, message: str = "") -> tuple[Any, ...]:
        """The standard output tuple: view state, the pair panel, table, page info, progress, message."""
        pair_view, first = self.render_pair(view.get("pair_id"), user.name)
        view = {**view, "shown_first": first}
        page_info = f"page {view['page']}" + ("" if view.get("more") else " (last)")
        if not view["page_ids"]:
            page_info = f"page {view['page']}: no pairs match"
            if view.get("label_state") == "not_mine" and view.get("collection") and not view.get("text"):
                page_info += " (the label state “not labelled by me” hides pairs labelled by you)"
        return (
            view,
            pair_view.info,
            pair_view.context,
            pair_view.prompt,
            pair_view.first,
            pair_view.second,
            self.table_rows(view["page_ids"], user.name, view.get("pair_id")),
            view["page"],
            page_info,
            self.progress_text(view["collection"], user.name),
            message,
        )

    # --- paging ----------------------------------------------------------------------------------------
    def _fetch_page(self, view: dict[str, Any], annotator: str, page: int) -> dict[str, Any]:
        result = self.store.page(
            view["collection"],
            pair_query(view, annotator),
            sort=view["sort"],
            score_name=view.get("score_name") or None,
            page=max(1, int(page)),
            size=PAGE_SIZE,
        )
        return {
            **view,
            "page": max(1, int(page)),
            "page_ids": [item.id for item in result.items],
            "more": result.next_cursor is not None,
        }

    def browse(
        self,
        collection: str,
        language: str,
        source: str,
        label_state: str,
        sort: str,
        score_name: str,
        text: str,
        page: float | None,
        view: dict[str, Any],
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """Apply the filters and show a page (the first pair of the page opens)."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not collection:
            return self.outputs(new_view(), user)
        if sort == "score" and not score_name:
            raise gr.Error("Sorting by score needs a run's scores: pick one (python -m ctllm score makes them).")
        view = {
            **(view or new_view()),
            "collection": collection,
            "language": language or ALL,
            "source": source or ALL,
            "label_state": label_state or ALL,
            "sort": sort or "id",
            "score_name": score_name or "",
            "text": text or "",
        }
        try:
            view = self._fetch_page(view, user.name, int(page or 1))
        except UserError as error:
            raise gr.Error(str(error)) from None
        view["pair_id"] = view["page_ids"][0] if view["page_ids"] else None
        return self.outputs(view, user)

    def browse_first_page(
        self,
        collection: str,
        language: str,
        source: str,
        label_state: str,
        sort: str,
        score_name: str,
        text: str,
        view: dict[str, Any],
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """A filter changed: back to page 1."""
        return self.browse(collection, language, source, label_state, sort, score_name, text, 1, view, request)

    def turn_page(self, delta: int, view: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.get("collection"):
            return self.outputs(new_view(), user)
        target = max(1, int(view["page"]) + delta)
        if delta > 0 and not view.get("more"):
            return self.outputs(view, user, "This is the last page.")
        view = self._fetch_page(view, user.name, target)
        view["pair_id"] = view["page_ids"][0] if view["page_ids"] else None
        return self.outputs(view, user)

    def open_pair(self, view: dict[str, Any], evt: gr.SelectData, request: gr.Request | None = None):
        """A click on a table row opens that pair."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not view or not (0 <= int(row) < len(view["page_ids"])):
            return self.outputs(view or new_view(), user)
        return self.outputs({**view, "pair_id": view["page_ids"][int(row)]}, user)

    def move(self, delta: int, view: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """← / →: the previous or next pair in the list, across page boundaries."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.get("page_ids"):
            return self.outputs(view or new_view(), user)
        ids = view["page_ids"]
        index = ids.index(view["pair_id"]) if view.get("pair_id") in ids else -1
        target = index + delta
        if 0 <= target < len(ids):
            return self.outputs({**view, "pair_id": ids[target]}, user)
        if target < 0 and view["page"] > 1:
            view = self._fetch_page(view, user.name, view["page"] - 1)
            return self.outputs({**view, "pair_id": view["page_ids"][-1] if view["page_ids"] else None}, user)
        if target >= len(ids) and view.get("more"):
            view = self._fetch_page(view, user.name, view["page"] + 1)
            return self.outputs({**view, "pair_id": view["page_ids"][0] if view["page_ids"] else None}, user)
        edge = "first" if target < 0 else "last"
        return self.outputs(view, user, f"This is the {edge} pair of the list.")

    # --- labelling -------------------------------------------------------------------------------------
    def vote(
        self, verdict: str, view: dict[str, Any], reason: str, request: gr.Request | None = None
    ) -> tuple[Any, ...]:
        """Record the verdict, then open the next pair this annotator has not labelled."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.get("pair_id") is None:
            raise gr.Error("No pair is open.")
        pair_id = int(view["pair_id"])
        # The side order is derived again here, not trusted from the browser.
        root = self.store.get_pair(pair_id).root_id
        try:
            self.store.add_label(pair_id, user.name, verdict, shown_first(user.name, root), (reason or "").strip())
        except UserError as error:
            raise gr.Error(str(error)) from None
        view = self._next_to_label(view, user.name, pair_id)
        message = f"Pair {pair_id}: {VERDICT_NAMES[verdict]}."
        if view.get("pair_id") == pair_id:
            message += " Every pair in this list has your label."
        return (*self.outputs(view, user, message), "")

    def _next_to_label(self, view: dict[str, Any], annotator: str, after: int) -> dict[str, Any]:
        """The list refreshed, and the first pair after ``after`` (in list order) without this annotator's label."""
        old_ids = list(view["page_ids"])
        index = old_ids.index(after) if after in old_ids else -1
        view = self._fetch_page(view, annotator, view["page"])
        ids = view["page_ids"]
        if view["label_state"] == "not_mine":
            # The labelled pair left the list: the next one moved into its place.
            candidates = [pid for pid in ids if pid not in old_ids[: index + 1]]
            if candidates:
                return {**view, "pair_id": candidates[0]}
            if view["page"] > 1 and not ids:
                view = self._fetch_page(view, annotator, view["page"] - 1)
            if view["page_ids"]:
                return {**view, "pair_id": view["page_ids"][0]}
            return {**view, "pair_id": after}
        position = ids.index(after) + 1 if after in ids else 0
        for _ in range(MAX_SCAN_PAGES):
            for pid in view["page_ids"][position:]:
                if self.store.label_of(pid, annotator) is None:
                    return {**view, "pair_id": pid}
            if not view.get("more"):
                break
            view = self._fetch_page(view, annotator, view["page"] + 1)
            position = 0
        found = self.store.next_unlabelled(
            view["collection"], annotator, after_id=after, query=pair_query(view, annotator)
        )
        return {**view, "pair_id": found.id if found else after}

    def undo(self, view: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """Remove my last label in this collection and open that pair again."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or not view.get("collection"):
            raise gr.Error("Pick a collection first.")
        label = self.store.undo_last_label(user.name, view["collection"])
        if label is None:
            return (*self.outputs(view, user, "Nothing to undo."), gr.skip())
        pair_id = self.store.latest_version(label.pair_id).id
        view = self._fetch_page(view, user.name, view["page"])
        view["pair_id"] = pair_id
        verdict = VERDICT_NAMES.get(label.verdict, label.verdict)
        return (*self.outputs(view, user, f"Undid your “{verdict}” on pair {pair_id}."), label.reason)

    # --- editing and adding ----------------------------------------------------------------------------
    def load_edit(self, view: dict[str, Any], which: str, request: gr.Request | None = None) -> str:
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.get("pair_id") is None:
            raise gr.Error("No pair is open.")
        stored = self.store.get_pair(int(view["pair_id"]))
        side = self._stored_side(user.name, stored.root_id, which)
        return getattr(stored.pair, side)

    @staticmethod
    def _stored_side(annotator: str, root_id: int, which: str) -> str:
        """'first' / 'second' (as displayed) → 'chosen' / 'rejected' (as stored)."""
        first = shown_first(annotator, root_id)
        other = "rejected" if first == "chosen" else "chosen"
        return first if which == "first" else other

    def save_edit(
        self, view: dict[str, Any], which: str, text: str, request: gr.Request | None = None
    ) -> tuple[Any, ...]:
        """Save the edited response as a new version of the pair (the original stays)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not view or view.get("pair_id") is None:
            raise gr.Error("No pair is open.")
        stored = self.store.get_pair(int(view["pair_id"]))
        side = self._stored_side(user.name, stored.root_id, which)
        try:
            new_id = self.store.edit_pair(stored.id, **{side: text}, by=user.name)
        except UserError as error:
            raise gr.Error(str(error)) from None
        view = self._fetch_page(view, user.name, view["page"])
        view["pair_id"] = new_id
        return self.outputs(view, user, f"Saved as pair {new_id}, a new version of pair {stored.id}.")

    def add_pair(
        self,
        collection: str,
        system: str,
        prompt: str,
        chosen: str,
        rejected: str,
        request: gr.Request | None = None,
    ) -> tuple[str, Any]:
        """Add a hand-written pair; returns (message, collection choices update)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        name = (collection or HAND_WRITTEN_COLLECTION).strip()
        for field, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not (value or "").strip():
                raise gr.Error(f"The {field} is empty.")
        if chosen.strip() == rejected.strip():
            raise gr.Error("The two responses are identical.")
        pair = Pair(
            prompt=user_prompt(prompt.strip(), (system or "").strip()),
            chosen=chosen,
            rejected=rejected,
            source="hand-written",
            meta={"author": user.name},
        )
        from ctllm.pairs.store import DuplicatePair

        existing = self.store.find_collection(name)
        if existing is not None and existing.kind == "import" and not user.can(Role.ADMIN):
            raise gr.Error(
                f"Only admins add pairs to the imported collection {name!r}; use {HAND_WRITTEN_COLLECTION!r}."
            )
        target = existing or self.store.ensure_collection(name, "manual")
        try:
            stored = self.store.add_pair(target, pair, by=user.name)
        except DuplicatePair as error:
            raise gr.Error(str(error)) from None
        return f"Added pair {stored.id} to {inert_inline(name)}.", gr.update(choices=self.collection_names())

    # --- statistics ------------------------------------------------------------------------------------
    def statistics(self, view: dict[str, Any], request: gr.Request | None = None) -> str:
        """Progress, agreement (Cohen's / Fleiss' κ, agreement with the source's order), length bias and
        duplicates of the collection, from ``ctllm.pairs.agreement.collection_stats``."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        if not view or not view.get("collection"):
            return "Pick a collection first."
        from ctllm.pairs.agreement import collection_stats

        name = view["collection"]
        stats = collection_stats(self.store, name)
        lengths, dup = stats["lengths"], stats["duplicates"]
        languages = ", ".join(f"{k or '?'} {v:,}" for k, v in stats["by_language"].items())
        splits = ", ".join(f"{inert_inline(k or 'none')} {v:,}" for k, v in stats["by_split"].items())
        share = lengths["chosen_longer_share"]
        lines = [
            f"### {inert_inline(name)}",
            self.progress_text(name, user.name),
            "",
            f"- pairs: {stats['pairs']:,} · labelled: {stats['labelled']:,} · disagreements: "
            f"{stats['disagreements']:,} · edited: {stats['edited']:,}",
            f"- languages: {languages} · splits: {splits}",
            f"- agreement: {inert_inline(str(stats['agreement']))}",
            f"- length bias: chosen is the longer response in {share:.0%} of pairs ({lengths['equal']:,} equal); "
            f"mean characters chosen {lengths['mean_chosen']:,.0f} vs rejected {lengths['mean_rejected']:,.0f}"
            if share is not None
            else "- length bias: no pairs",
            f"- duplicates: {dup['prompts_in_several_pairs']:,} prompts appear in more than one pair "
            f"({dup['pairs_sharing_a_prompt']:,} pairs); {dup['pairs_also_in_other_collections']:,} pairs are also "
            f"in another collection; {dup['skipped_at_import']:,} skipped at import",
        ]
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
        request: gr.Request | None = None,
    ) -> tuple[str, Any]:
        """Import an uploaded file, a server path inside the allowed roots, or a hub dataset id (admin)."""
        user = require(request, Role.ADMIN, self.ctx.settings)
        from ctllm.pairs.importer import import_pairs
        from ctllm.paths import safe_resolve

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
            raise gr.Error("Upload a file or type a path / hub id.")
        mapping = None
        if (mapping_text or "").strip():
            try:
                mapping = json.loads(mapping_text)
            except json.JSONDecodeError as error:
                raise gr.Error(f"The column mapping is not valid JSON: {error}") from None
            if not isinstance(mapping, dict):
                raise gr.Error('The column mapping must be a JSON object such as {"prompt": "question"}.')
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
            report = "Nothing was imported.\n\n" + code_block(str(error)[:4000])
            return report, gr.skip()
        report = f"**Imported into {inert_inline(summary.collection)}** (format {summary.format}).\n\n"
        report += code_block(summary.report())
        return report, gr.update(choices=self.collection_names(), value=summary.collection)

    def export(self, view: dict[str, Any], fmt: str, request: gr.Request | None = None) -> tuple[str, Any]:
        """Export the collection (labels resolved into chosen / rejected) and offer the file (admin)."""
        require(request, Role.ADMIN, self.ctx.settings)
        if not view or not view.get("collection"):
            raise gr.Error("Pick a collection first.")
        from ctllm.pairs.export import export_collection

        out_dir = self.ctx.settings.exports_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = export_collection(self.store, view["collection"], out_dir, fmt)
        except UserError as error:
            raise gr.Error(str(error)) from None
        path = Path(getattr(result, "path", result))
        summary = getattr(result, "report", None)
        text = summary() if callable(summary) else f"Wrote {path.name}."
        return inert_markdown(text), str(path)

    # --- page load -------------------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return [c.name for c in self.store.list_collections()]

    def refresh_collections(self, current: str | None, request: gr.Request | None = None) -> Any:
        """The collection list again (chat votes or imports may have added one since the page loaded)."""
        require(request, Role.VIEWER, self.ctx.settings)
        names = self.collection_names()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def collection_filters(self, collection: str, request: gr.Request | None = None) -> tuple[Any, Any]:
        """Source and run-score choices for a collection."""
        require(request, Role.VIEWER, self.ctx.settings)
        if not collection:
            return gr.update(choices=[ALL], value=ALL), gr.update(choices=[], value=None)
        sources = list(self.store.counts(collection)[0]["by_source"])
        scores = [name for name, _ in self.store.score_names(collection)]
        return (
            gr.update(choices=[ALL, *sources], value=ALL),
            gr.update(choices=scores, value=scores[0] if scores else None),
        )

    def load(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Page load: the collection list, the first collection's first page, and who is labelling."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        self.ctx.wait_until_ready()
        names = self.collection_names()
        collection = SAMPLES_COLLECTION if SAMPLES_COLLECTION in names else (names[0] if names else "")
        view = new_view(collection)
        if collection:
            view = self._fetch_page(view, user.name, 1)
            view["pair_id"] = view["page_ids"][0] if view["page_ids"] else None
        source, score = self.collection_filters(collection, request)
        return (
            gr.update(choices=names, value=collection or None),
            source,
            score,
            gr.update(choices=[*names] or [HAND_WRITTEN_COLLECTION], value=HAND_WRITTEN_COLLECTION),
            *self.outputs(view, user),
        )


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "/", "~"))
        and not Path(text).suffix
        and all(ch.isalnum() or ch in "-_." for part in parts for ch in part)
    )


def build(ctx: AppContext, tr: Translator) -> dict[str, Any]:
    """The tab's components and events (inside an open ``gr.Tab``); returns what the page load must run."""
    from ctllm.pairs.formats import FORMATS
    from ctllm.pairs.writers import EXPORT_FORMATS

    h = PairsHandlers(ctx)
    view = gr.State(new_view())

    with gr.Row():
        collection = tr.bind(
            gr.Dropdown([], label=t("pairs.collection"), elem_id="pairs-collection", scale=2), "pairs.collection"
        )
        search = tr.bind(gr.Textbox(label=t("pairs.search"), elem_id="pairs-search", scale=3), "pairs.search")
        language = tr.bind(
            gr.Dropdown(LANGUAGE_CHOICES, value=ALL, label=t("pairs.language"), elem_id="pairs-language", scale=1),
            "pairs.language",
        )
        source = tr.bind(
            gr.Dropdown([ALL], value=ALL, label=t("pairs.source"), elem_id="pairs-source", scale=1), "pairs.source"
        )
        label_state = tr.bind(
            gr.Dropdown(
                LABEL_STATE_CHOICES,
                value="not_mine",
                label=t("pairs.label_state"),
                elem_id="pairs-label-state",
                scale=2,
            ),
            "pairs.label_state",
        )
        sort = tr.bind(
            gr.Dropdown(SORT_CHOICES, value="id", label=t("pairs.sort"), elem_id="pairs-sort", scale=2), "pairs.sort"
        )
        score_name = tr.bind(
            gr.Dropdown([], label=t("pairs.score_run"), elem_id="pairs-score-name", scale=2), "pairs.score_run"
        )

    with gr.Row():
        with gr.Column(scale=5):
            info = gr.Markdown(elem_id="pairs-pair-info")
            with gr.Accordion(t("pairs.context"), open=False) as context_box:
                tr.bind(context_box, "pairs.context")
                context = gr.Markdown(elem_id="pairs-context", sanitize_html=True)
            prompt = gr.Markdown(elem_id="pairs-prompt", elem_classes=["prompt-card"], sanitize_html=True)
            with gr.Row(equal_height=True):
                with gr.Column():
                    tr.bind(gr.Markdown(f"#### {t('pairs.first')}"), "pairs.first", "value", "#### {}")
                    first = gr.Markdown(elem_id="pairs-first", elem_classes=["response-card"], sanitize_html=True)
                with gr.Column():
                    tr.bind(gr.Markdown(f"#### {t('pairs.second')}"), "pairs.second", "value", "#### {}")
                    second = gr.Markdown(elem_id="pairs-second", elem_classes=["response-card"], sanitize_html=True)
            with gr.Row(elem_classes=["vote-row"]):
                vote_buttons = {}
                for verdict, key, elem, variant in (
                    ("first", "pairs.vote_first", "vote-first", "primary"),
                    ("second", "pairs.vote_second", "vote-second", "primary"),
                    ("tie", "pairs.vote_tie", "vote-tie", "secondary"),
                    ("both_bad", "pairs.vote_bothbad", "vote-bothbad", "secondary"),
                    ("skip", "pairs.vote_skip", "vote-skip", "secondary"),
                ):
                    vote_buttons[verdict] = tr.bind(gr.Button(t(key), variant=variant, elem_id=elem), key, "value")
            with gr.Row():
                prev_pair = tr.bind(gr.Button(t("pairs.prev"), size="sm", elem_id="pairs-prev"), "pairs.prev", "value")
                next_pair = tr.bind(gr.Button(t("pairs.next"), size="sm", elem_id="pairs-next"), "pairs.next", "value")
                undo = tr.bind(gr.Button(t("pairs.undo"), size="sm", elem_id="pairs-undo"), "pairs.undo", "value")
                reason = tr.bind(
                    gr.Textbox(label=t("pairs.reason"), elem_id="pairs-reason", scale=3, max_lines=2), "pairs.reason"
                )
            tr.bind(gr.Markdown(t("pairs.keys"), elem_classes=["kbd-hint"]), "pairs.keys", "value")
            message = gr.Markdown(elem_id="pairs-message")
            progress = gr.Markdown(elem_id="pairs-progress")
        with gr.Column(scale=3):
            with gr.Row(elem_id="pairs-page-row"):
                prev_page = tr.bind(
                    gr.Button(t("pairs.prev_page"), size="sm", elem_id="pairs-prev-page"), "pairs.prev_page", "value"
                )
                page = tr.bind(
                    gr.Number(
                        value=1,
                        precision=0,
                        minimum=1,
                        label=t("pairs.page"),
                        elem_id="pairs-page",
                        min_width=70,
                        show_label=False,
                        container=False,
                        scale=1,
                    ),
                    "pairs.page",
                )
                go = tr.bind(gr.Button(t("pairs.go"), size="sm", elem_id="pairs-go"), "pairs.go", "value")
                next_page = tr.bind(
                    gr.Button(t("pairs.next_page"), size="sm", elem_id="pairs-next-page"), "pairs.next_page", "value"
                )
            page_info = gr.Markdown(elem_id="pairs-page-info")
            table = tr.bind(
                gr.Dataframe(
                    headers=TABLE_HEADERS,
                    interactive=False,
                    wrap=True,
                    elem_id="pairs-table",
                    label=t("pairs.table"),
                    max_height=640,
                    column_widths=["5%", "9%", "8%", "50%", "9%", "12%", "7%"],
                    datatype="str",
                ),
                "pairs.table",
            )

    with gr.Accordion(t("pairs.edit"), open=False) as edit_box:
        tr.bind(edit_box, "pairs.edit")
        with gr.Row():
            edit_which = tr.bind(
                gr.Radio(
                    [("Response 1", "first"), ("Response 2", "second")],
                    value="first",
                    label=t("pairs.edit_which"),
                    elem_id="pairs-edit-which",
                ),
                "pairs.edit_which",
            )
            edit_load = tr.bind(
                gr.Button(t("pairs.edit_load"), size="sm", elem_id="pairs-edit-load"), "pairs.edit_load", "value"
            )
        edit_text = tr.bind(
            gr.Textbox(label=t("pairs.edit_text"), lines=6, elem_id="pairs-edit-text"), "pairs.edit_text"
        )
        edit_save = tr.bind(gr.Button(t("pairs.edit_save"), elem_id="pairs-edit-save"), "pairs.edit_save", "value")

    with gr.Accordion(t("pairs.add"), open=False) as add_box:
        tr.bind(add_box, "pairs.add")
        add_collection = tr.bind(
            gr.Dropdown(
                [HAND_WRITTEN_COLLECTION],
                value=HAND_WRITTEN_COLLECTION,
                allow_custom_value=True,
                label=t("pairs.add_collection"),
                elem_id="pairs-add-collection",
            ),
            "pairs.add_collection",
        )
        add_system = tr.bind(gr.Textbox(label=t("pairs.add_system"), elem_id="pairs-add-system"), "pairs.add_system")
        add_prompt = tr.bind(
            gr.Textbox(label=t("pairs.add_prompt"), lines=2, elem_id="pairs-add-prompt"), "pairs.add_prompt"
        )
        with gr.Row():
            add_chosen = tr.bind(
                gr.Textbox(label=t("pairs.add_chosen"), lines=4, elem_id="pairs-add-chosen"), "pairs.add_chosen"
            )
            add_rejected = tr.bind(
                gr.Textbox(label=t("pairs.add_rejected"), lines=4, elem_id="pairs-add-rejected"), "pairs.add_rejected"
            )
        add_save = tr.bind(gr.Button(t("pairs.add_save"), elem_id="pairs-add-save"), "pairs.add_save", "value")
        add_message = gr.Markdown(elem_id="pairs-add-message")

    with gr.Accordion(t("pairs.stats"), open=False) as stats_box:
        tr.bind(stats_box, "pairs.stats")
        stats_run = tr.bind(
            gr.Button(t("pairs.stats_refresh"), size="sm", elem_id="pairs-stats-run"), "pairs.stats_refresh", "value"
        )
        stats = gr.Markdown(elem_id="pairs-stats")

    with gr.Accordion(t("pairs.import"), open=False) as import_box:
        tr.bind(import_box, "pairs.import")
        with gr.Row():
            upload = tr.bind(
                gr.File(
                    label=t("pairs.import_file"),
                    type="filepath",
                    elem_id="pairs-import-file",
                    file_types=[".json", ".jsonl", ".parquet", ".csv", ".tsv"],
                ),
                "pairs.import_file",
            )
            with gr.Column():
                import_path = tr.bind(
                    gr.Textbox(label=t("pairs.import_path"), elem_id="pairs-import-path"), "pairs.import_path"
                )
                import_format = tr.bind(
                    gr.Dropdown(
                        ["auto", *FORMATS], value="auto", label=t("pairs.import_format"), elem_id="pairs-import-format"
                    ),
                    "pairs.import_format",
                )
                import_collection = tr.bind(
                    gr.Textbox(label=t("pairs.import_collection"), elem_id="pairs-import-collection"),
                    "pairs.import_collection",
                )
        import_mapping = tr.bind(
            gr.Textbox(label=t("pairs.import_mapping"), elem_id="pairs-import-mapping"), "pairs.import_mapping"
        )
        import_abort = tr.bind(
            gr.Checkbox(label=t("pairs.import_abort"), elem_id="pairs-import-abort"), "pairs.import_abort"
        )
        import_run = tr.bind(gr.Button(t("pairs.import_run"), elem_id="pairs-import-run"), "pairs.import_run", "value")
        import_report = gr.Markdown(elem_id="pairs-import-report")

    build_synth_panel(ctx, tr, collection)

    with gr.Accordion(t("pairs.export"), open=False) as export_box:
        tr.bind(export_box, "pairs.export")
        with gr.Row():
            export_format = tr.bind(
                gr.Dropdown(
                    list(EXPORT_FORMATS),
                    value=EXPORT_FORMATS[0],
                    label=t("pairs.export_format"),
                    elem_id="pairs-export-format",
                ),
                "pairs.export_format",
            )
            export_run = tr.bind(
                gr.Button(t("pairs.export_run"), elem_id="pairs-export-run"), "pairs.export_run", "value"
            )
        export_report = gr.Markdown(elem_id="pairs-export-report")
        export_file = tr.bind(
            gr.File(label=t("pairs.export_file"), interactive=False, elem_id="pairs-export-file"), "pairs.export_file"
        )

    shown = [view, info, context, prompt, first, second, table, page, page_info, progress, message]
    filters = [collection, language, source, label_state, sort, score_name, search]
    fast = {"show_progress": "hidden", "concurrency_limit": None}

    gr.on(
        [language.input, source.input, label_state.input, sort.input, score_name.input, search.submit],
        bind(h.browse_first_page),
        inputs=[*filters, view],
        outputs=shown,
        **fast,
    )
    collection.input(h.collection_filters, inputs=[collection], outputs=[source, score_name], **fast).then(
        bind(h.browse_first_page), inputs=[*filters, view], outputs=shown, **fast
    )
    gr.on(
        [go.click, page.submit], h.browse, inputs=[*filters, page, view], outputs=shown, api_name="pairs_page", **fast
    )
    prev_page.click(bind(h.turn_page, -1), inputs=[view], outputs=shown, **fast)
    next_page.click(bind(h.turn_page, 1), inputs=[view], outputs=shown, **fast)
    table.select(h.open_pair, inputs=[view], outputs=shown, **fast)
    prev_pair.click(bind(h.move, -1), inputs=[view], outputs=shown, **fast)
    next_pair.click(bind(h.move, 1), inputs=[view], outputs=shown, **fast)
    for verdict, button in vote_buttons.items():
        button.click(
            bind(h.vote, verdict), inputs=[view, reason], outputs=[*shown, reason], api_name=f"label_{verdict}", **fast
        )
    undo.click(h.undo, inputs=[view], outputs=[*shown, reason], api_name="label_undo", **fast)
    edit_load.click(h.load_edit, inputs=[view, edit_which], outputs=[edit_text], **fast)
    edit_save.click(h.save_edit, inputs=[view, edit_which, edit_text], outputs=shown, api_name="edit_pair")
    add_save.click(
        h.add_pair,
        inputs=[add_collection, add_system, add_prompt, add_chosen, add_rejected],
        outputs=[add_message, collection],
        api_name="add_pair",
    )
    stats_run.click(h.statistics, inputs=[view], outputs=[stats], api_name="pairs_statistics")
    import_run.click(
        h.import_file,
        inputs=[upload, import_path, import_format, import_mapping, import_collection, import_abort],
        outputs=[import_report, collection],
        concurrency_limit=1,
        api_name="import_pairs",
    )
    export_run.click(
        h.export,
        inputs=[view, export_format],
        outputs=[export_report, export_file],
        concurrency_limit=1,
        api_name="export_collection",
    )
    return {
        "load": (h.load, [], [collection, source, score_name, add_collection, *shown]),
        "select": (h.refresh_collections, [collection], [collection]),
    }
