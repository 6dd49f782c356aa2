"""The whole app: a header (language switch, who you are), the Pairs, Train and Chat tabs and a help panel.

``build_app(settings)`` returns the ``gr.Blocks``; ``launch_options(settings)`` what goes to ``launch()``
(in Gradio 6 theme, css and head are launch arguments). ``app.py`` at the repository root starts it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ctllm.paths import ASSETS_DIR
from ctllm.settings import Settings
from ctllm.ui import chat_tab, leaderboard_panel, pairs_tab, plots, train_tab
from ctllm.ui.auth import Role, login_button, require
from ctllm.ui.context import CHAT_VOTES_COLLECTION, AppContext
from ctllm.ui.i18n import LANGUAGE_CHOICES, Translator, remember_language, t

ASSETS = ASSETS_DIR / "ui"
DEFAULT_CONCURRENCY = 4


def _head() -> str:
    script = (ASSETS / "shortcuts.js").read_text(encoding="utf-8")
    return f"<script>\n{script}\n</script>{plots.plotly_preload()}"


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch()`` besides host and port."""
    options: dict[str, Any] = {
        "theme": gr.themes.Soft(),
        "css": (ASSETS / "style.css").read_text(encoding="utf-8"),
        "head": _head(),
        "max_file_size": f"{settings.max_upload_mb}mb",
        "footer_links": ["api", "settings"],
    }
    users = [entry.split(":", 1) for entry in settings.auth if ":" in entry]
    if users:
        options["auth"] = [(name, password) for name, password in users]
    return options


def build_app(settings: Settings, ctx: AppContext | None = None) -> gr.Blocks:
    """The Blocks app. ``ctx`` is created from ``settings`` when not given (tests pass their own)."""
    ctx = ctx or AppContext(settings)
    tr = Translator()
    tabs: list[tuple[str, dict[str, Any]]] = []  # (API name of the tab's page-load handler, what build returned)
    with gr.Blocks(title=t("app.title", "en")) as demo:
        with gr.Row(equal_height=True):
            with gr.Column(scale=4):
                gr.Markdown(elem_id="app-title")
                gr.Markdown(elem_id="app-subtitle")
            with gr.Column(scale=1, min_width=200):
                lang = gr.Radio(LANGUAGE_CHOICES, value="en", elem_id="ui-lang")
                who = gr.Markdown(elem_id="ui-user")
                login_button(settings)  # on a Space: "Sign in with Hugging Face"; the page reloads signed in
        with gr.Tabs(elem_id="main-tabs") as main_tabs:
            with gr.Tab(id="pairs", elem_id="pairs-tab") as tab:
                pairs = pairs_tab.build(ctx)
                tabs.append(("load", pairs))
            fn, inputs, outputs = pairs["select"]
            tab.select(fn, inputs=inputs, outputs=outputs, show_progress="hidden")
            with gr.Tab(id="train", elem_id="train-tab"):
                tabs.append(("train_load", train_tab.build(ctx)))
            with gr.Tab(id="chat", elem_id="chat-tab") as tab:
                chat = chat_tab.build(ctx)
                tabs.append(("chat_load", chat))
                see_votes = gr.Button(size="sm", elem_id="chat-see-votes")
                board = leaderboard_panel.build(ctx)
            # Your votes, all of them: the Pairs tab's default filter ("not labelled by me") would hide them. One event
            # switches the tab and opens the collection, so the tab's own select handler reads the new view.
            open_votes, _, opened = pairs_tab.open_collection_event(pairs, CHAT_VOTES_COLLECTION)

            def see_votes_in_pairs(request: gr.Request | None = None) -> dict[Any, Any]:
                return {main_tabs: gr.Tabs(selected="pairs"), **open_votes(request=request)}

            see_votes.click(see_votes_in_pairs, outputs=[main_tabs, *opened], show_progress="hidden")
            fn, inputs, outputs = chat["select"]
            tab.select(fn, inputs=inputs, outputs=outputs, show_progress="hidden")
            with gr.Tab(id="help", elem_id="help-tab"):
                gr.Markdown(elem_id="help-text")

        def whoami(request: gr.Request | None = None) -> str:
            user = require(request, Role.VIEWER, settings)
            return f"{t('app.user')}: **{user.name}** ({t('app.role.' + user.role.name.lower())})"

        def switch_language(value: str, request: gr.Request | None = None) -> list[Any]:
            remember_language(request, value)
            require(request, Role.VIEWER, settings)
            return [*tr.updates(value), whoami(request)]

        tr.localize(demo)
        switched = lang.change(
            switch_language, inputs=[lang], outputs=[*tr.components, who], show_progress="hidden", api_name="language"
        )
        demo.load(whoami, outputs=[who], show_progress="hidden")
        fn, inputs, outputs = board["language"]
        switched.then(fn, inputs=inputs, outputs=outputs, show_progress="hidden")
        for api_name, entry in tabs:
            fn, inputs, outputs = entry["load"]
            demo.load(fn, inputs=inputs, outputs=outputs, show_progress="hidden", api_name=api_name)
            # What the handlers wrote (status lines, pair info, notes) again, in the new language (one event or more).
            events = entry["language"] if isinstance(entry["language"], list) else [entry["language"]]
            for fn, inputs, outputs in events:
                switched.then(fn, inputs=inputs, outputs=outputs, show_progress="hidden")
    demo.ctllm_context = ctx  # type: ignore[attr-defined]  # for tests and app.py
    demo.ctllm_translator = tr  # type: ignore[attr-defined]  # for tests
    return demo
