"""Guidelines per collection, beside the pair in the Pairs tab: Markdown an admin writes (saved in the collection's
``meta`` as ``guidelines``), shown to everyone who labels it. Saving is for admins, checked on the server. The text is
user text: it is rendered as inert Markdown (every HTML construct shown as text), never as live HTML."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ctllm.ui.auth import Role, require
from ctllm.ui.context import AppContext
from ctllm.ui.handlers import bind, keyed
from ctllm.ui.i18n import t
from ctllm.ui.render import inert_inline, inert_markdown

META_KEY = "guidelines"
MAX_CHARS = 20_000
OUTPUTS = ("shown", "editor", "save", "message")


class GuidelinesHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def text(self, collection: str) -> str:
        found = self.ctx.store.find_collection(collection) if collection else None
        value = found.meta.get(META_KEY) if found is not None else None
        return value if isinstance(value, str) else ""

    def show(self, collection: str | None, request: gr.Request | None = None) -> dict[str, Any]:
        """The collection's guidelines, rendered; the editor holds them (and is usable) for an admin only."""
        user = require(request, Role.VIEWER, self.ctx.settings)
        text = self.text(collection or "")
        admin = user.can(Role.ADMIN)
        return {
            "shown": inert_markdown(text) if text.strip() else t("guidelines.none"),
            "editor": gr.update(value=text if admin else "", interactive=admin, visible=admin),
            "save": gr.update(interactive=admin and bool(collection), visible=admin),
            "message": "",
        }

    def save(self, collection: str | None, text: str, request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        if not collection:
            raise gr.Error(t("guidelines.pick"))
        text = (text or "").replace("\r\n", "\n")
        if len(text) > MAX_CHARS:
            raise gr.Error(t("guidelines.too_long").format(chars=len(text), limit=MAX_CHARS))
        self.ctx.store.update_collection_meta(collection, **{META_KEY: text})
        return {**self.show(collection, request),
                "message": t("guidelines.saved").format(collection=inert_inline(collection))}


def build(ctx: AppContext, collection: Any) -> GuidelinesHandlers:
    """The accordion, where it is built (beside the pair); ``collection`` is the tab's collection dropdown."""
    h = GuidelinesHandlers(ctx)
    ui: dict[str, Any] = {}
    with gr.Accordion(open=False, elem_id="pairs-guidelines-box"):
        ui["shown"] = gr.Markdown(elem_id="pairs-guidelines", sanitize_html=True)
        ui["editor"] = gr.Textbox(lines=6, max_lines=30, visible=False, elem_id="pairs-guidelines-editor")
        ui["save"] = gr.Button(size="sm", visible=False, elem_id="pairs-guidelines-save")
        ui["message"] = gr.Markdown(elem_id="pairs-guidelines-message")
    outputs = [ui[name] for name in OUTPUTS]
    collection.change(keyed(bind(h.show), ui), inputs=[collection], outputs=outputs, api_name="guidelines_show")
    ui["save"].click(keyed(bind(h.save), ui), inputs=[collection, ui["editor"]], outputs=outputs,
                     api_name="guidelines_save")
    return h
