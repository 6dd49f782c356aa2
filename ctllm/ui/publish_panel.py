"""The Publish panel of the Train tab's run view (admin only, checked on the server): the run's model card to read,
edit and save, and ``publish`` (``ctllm.publish``: the folders written, uploaded when a token is given and the hub
is on). The token lives only in the request that uses it: it is never stored, logged or sent back to the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from ctllm.models.registry import hub_offline
from ctllm.ui.auth import Role, identify, require
from ctllm.ui.context import AppContext
from ctllm.ui.handlers import bind, keyed
from ctllm.ui.i18n import t
from ctllm.ui.render import code_block, inert_inline

OUTPUTS = ("card", "preview", "message")


class PublishHandlers:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def _run_dir(self, run: str | None) -> Path:
        run = (run or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run) or ".." in run:
            raise gr.Error(t("publish.pick_run"))
        run_dir = self.ctx.settings.runs_dir / run
        if not (run_dir / "final").is_dir():
            raise gr.Error(t("publish.no_model").format(run=run))
        return run_dir

    def show(self, run: str | None, request: gr.Request | None = None) -> dict[str, Any]:
        """The run's card (written first when it has none) for an admin; others see why the panel is empty."""
        if not identify(request, self.ctx.settings).can(Role.ADMIN):
            require(request, Role.VIEWER, self.ctx.settings)  # sets the session's language for t()
            return {"card": "", "preview": "", "message": t("publish.admin_only")}
        require(request, Role.ADMIN, self.ctx.settings)
        if not (run or "").strip():
            return {"card": "", "preview": "", "message": ""}
        # Lazy: huggingface_hub and pyarrow take seconds to import; the app's start does not need them.
        from ctllm.publish.card import write_card

        text = write_card(self._run_dir(run)).read_text(encoding="utf-8")
        return {"card": text, "preview": text, "message": ""}

    def save(self, run: str | None, text: str, request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        from ctllm.publish.card import save_card_text  # lazy, as in show()

        path = save_card_text(self._run_dir(run), text or "")
        return {"preview": text, "message": t("publish.saved").format(path=inert_inline(str(path)))}

    def regenerate(self, run: str | None, request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        from ctllm.publish.card import write_card  # lazy, as in show()

        text = write_card(self._run_dir(run), overwrite=True).read_text(encoding="utf-8")
        return {"card": text, "preview": text, "message": t("publish.regenerated")}

    def publish(self, run: str | None, repo: str, private: bool, with_data: bool, merged: bool, token: str,
                request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.ADMIN, self.ctx.settings)
        # Lazy: the publish code loads models (merged LoRA) and the hub client.
        from ctllm.publish.run_model import run_spec
        from ctllm.publish.upload import prepare_folders, upload

        settings = self.ctx.settings
        run_dir = self._run_dir(run)
        out = settings.exports_dir / f"publish-{run_dir.name}"
        folders = prepare_folders(run_spec(run_dir.name, settings), settings, repo or "", out, with_data=with_data,
                                  merged=merged, private=private)
        listing = code_block("\n".join(folders.files()))
        token = (token or "").strip()
        if hub_offline(settings) or not token:
            why = t("publish.offline") if hub_offline(settings) else t("publish.no_token")
            head = t("publish.not_uploaded").format(why=why, out=inert_inline(str(out)))
        else:
            upload(folders, token)
            head = t("publish.uploaded").format(urls=", ".join(inert_inline(u) for u in folders.urls))
        return {"message": f"{head}\n\n{listing}"}


def build(ctx: AppContext, run_picker: Any) -> PublishHandlers:
    """The panel, under the run view; ``run_picker`` is the view's run dropdown, whose run it shows."""
    h = PublishHandlers(ctx)
    ui: dict[str, Any] = {}
    with gr.Accordion(open=False, elem_id="train-publish-box"):
        gr.Markdown(elem_id="train-publish-explain", elem_classes=["explain-box"])
        with gr.Tabs():
            with gr.Tab(elem_id="train-publish-edit-tab"):
                ui["card"] = gr.Code(language="markdown", interactive=True, lines=18, max_lines=40,
                                     elem_id="train-publish-card")
            with gr.Tab(elem_id="train-publish-preview-tab"):
                ui["preview"] = gr.Markdown(sanitize_html=True, elem_id="train-publish-preview")
        with gr.Row():
            save = gr.Button(elem_id="train-publish-save")
            regenerate = gr.Button(elem_id="train-publish-regenerate")
        with gr.Row():
            repo = gr.Textbox(elem_id="train-publish-repo", scale=2)
            token = gr.Textbox(type="password", elem_id="train-publish-token", scale=2)
            private = gr.Checkbox(value=True, elem_id="train-publish-private")
            with_data = gr.Checkbox(value=False, elem_id="train-publish-with-data")
            merged = gr.Checkbox(value=False, elem_id="train-publish-merged")
        publish = gr.Button(variant="primary", elem_id="train-publish-go")
        ui["message"] = gr.Markdown(elem_id="train-publish-message")

    outputs = [ui[name] for name in OUTPUTS]

    def wire(method: Any) -> Any:
        return keyed(bind(method), ui)

    run_picker.change(wire(h.show), inputs=[run_picker], outputs=outputs, api_name="publish_card")
    save.click(wire(h.save), inputs=[run_picker, ui["card"]], outputs=outputs, api_name="publish_save")
    regenerate.click(wire(h.regenerate), inputs=[run_picker], outputs=outputs, api_name="publish_regenerate")
    publish.click(wire(h.publish), inputs=[run_picker, repo, private, with_data, merged, token], outputs=outputs,
                  concurrency_limit=1, api_name="publish_run")
    return h
