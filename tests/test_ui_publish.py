"""The Publish panel's handlers on a real finished tiny run: the card shown, edited and saved, written again,
published offline as folders; everyone but an admin is refused on the server."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from huggingface_hub import ModelCard

from ctllm.dpo.config import TrainConfig
from ctllm.dpo.train import train
from ctllm.settings import Settings
from ctllm.ui.context import AppContext
from ctllm.ui.handlers import bind
from ctllm.ui.publish_panel import PublishHandlers
from tests.conftest import MODEL_CACHE, REPO

TOKEN = "hf_ui_publish_token_never_written"


@pytest.fixture(scope="module")
def run_settings(tmp_path_factory, tiny_model_dir: Path) -> Settings:
    root = tmp_path_factory.mktemp("ui-publish")
    settings = Settings(data_dir=root / "data", allowed_roots=(root, MODEL_CACHE, REPO / "assets")).ensure_dirs()
    config = TrainConfig(model=str(tiny_model_dir), data=str(REPO / "assets" / "pairs" / "sample_pairs.jsonl"),
                         run_name="ui-run", languages=["en"], max_steps=1, max_length=48, batch_size=4,
                         report_to="none", final_eval=False)
    assert train(config, settings, show_progress=False).state == "finished"
    return settings


def test_an_admin_edits_the_card_and_publishes_offline(run_settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    h = PublishHandlers(AppContext(run_settings))  # local mode: the one user is the admin
    shown = h.show("ui-run")
    assert shown["message"] == "" and shown["card"].startswith("---\n") and "# ui-run" in shown["card"]
    edited = shown["card"].replace("## Training data", "## Training data\n\nReviewed by a person.")
    assert "Card saved to" in h.save("ui-run", edited)["message"]
    assert "Reviewed by a person." in h.show("ui-run")["card"]  # kept, not regenerated
    assert "Reviewed by a person." not in h.regenerate("ui-run")["card"]
    with pytest.raises(gr.Error, match="YAML metadata cannot be read"):  # as the page gets it (bind)
        bind(h.save)("ui-run", "---\ntags: [dpo\n---\n")
    result = h.publish("ui-run", "someone/ui-run", True, True, False, TOKEN)["message"]
    assert "Not uploaded: the hub is off (offline mode)" in result
    out = run_settings.exports_dir / "publish-ui-run"
    assert "model/model.safetensors" in result and "dataset/data/train.parquet" in result
    assert ModelCard.load(out / "model" / "README.md").data.datasets == ["someone/ui-run-pairs"]
    assert not any(TOKEN.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())
    with pytest.raises(gr.Error, match="OWNER/NAME"):
        bind(h.publish)("ui-run", "no slash", False, False, False, "")


def test_only_an_admin_sees_edits_or_publishes(run_settings: Settings) -> None:
    settings = run_settings.with_(auth=("ann:1", "boss:2"), admins=("boss",))
    h = PublishHandlers(AppContext(settings))
    annotator = gr.Request(username="ann")
    shown = h.show("ui-run", annotator)
    assert shown == {"card": "", "preview": "", "message": "Publishing needs the admin role."}
    for call in (lambda: h.save("ui-run", "---\ntags: [x]\n---\n", annotator),
                 lambda: h.regenerate("ui-run", annotator),
                 lambda: h.publish("ui-run", "someone/x", False, False, False, "", annotator)):
        with pytest.raises(gr.Error, match="admin"):
            call()
    assert "# ui-run" in h.show("ui-run", gr.Request(username="boss"))["card"]
