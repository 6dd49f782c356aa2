"""Guidelines per collection: an admin saves Markdown into the collection (real SQLite store), an annotator sees it
rendered inert beside the pair and cannot save; HTML in the text stays text."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from ctllm.pairs.store import Store
from ctllm.settings import Settings
from ctllm.ui.context import AppContext
from ctllm.ui.guidelines_panel import MAX_CHARS, GuidelinesHandlers
from ctllm.ui.handlers import bind

GUIDE = "## How to judge\n\n- Prefer the **refusal** for harmful asks.\n<script>alert(1)</script>\n<b>bold?</b>"


@pytest.fixture
def ctx(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", auth=("ann:1", "boss:2"), admins=("boss",)).ensure_dirs()
    context = AppContext(settings)
    context.store.create_collection("team", kind="manual")
    yield context
    context.close()


def test_admin_saves_annotator_sees_and_cannot_save(ctx: AppContext) -> None:
    h = GuidelinesHandlers(ctx)
    admin, annotator = gr.Request(username="boss"), gr.Request(username="ann")
    before = h.show("team", annotator)
    assert before["shown"] == "No guidelines for this collection yet."
    assert before["editor"]["visible"] is False and before["save"]["visible"] is False

    saved = h.save("team", GUIDE, admin)
    assert saved["message"] == "Guidelines of team saved." and saved["editor"]["value"] == GUIDE
    assert ctx.store.get_collection("team").meta["guidelines"] == GUIDE  # in the store, read back from SQLite
    other = Store(ctx.settings.db_path)  # another connection to the same file, as another process would open it
    assert other.get_collection("team").meta["guidelines"] == GUIDE
    other.close()

    seen = h.show("team", annotator)
    assert "How to judge" in seen["shown"] and "**refusal**" in seen["shown"]
    assert "<script>" not in seen["shown"] and "<b>" not in seen["shown"]  # inert: HTML shown as text
    assert "script" in seen["shown"] and seen["editor"]["value"] == "" and seen["editor"]["interactive"] is False

    with pytest.raises(gr.Error, match="admin"):
        h.save("team", "overwritten", annotator)
    assert ctx.store.get_collection("team").meta["guidelines"] == GUIDE
    with pytest.raises(gr.Error, match=f"at most {MAX_CHARS}"):
        bind(h.save)("team", "x" * (MAX_CHARS + 1), admin)
    with pytest.raises(gr.Error, match="Pick a collection"):
        bind(h.save)("", "text", admin)
