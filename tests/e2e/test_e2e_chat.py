"""Chat on both sides with the embedded model in real Chromium, vote, and find the new pair in the Pairs tab."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningApp, start_app, stop_app, text_of, wait_for_text

pytestmark = pytest.mark.e2e

# Open-ended, so two seeds give two different answers (a one-word answer could repeat).
QUESTION = "Write a two-sentence story about a cat in Paris."


@pytest.fixture
def app(tmp_path: Path, embedded_model_dir: Path) -> Iterator[RunningApp]:
    # The app's data dir gets the already converted embedded model (a link), so it does not convert it again.
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    os.symlink(embedded_model_dir, models / embedded_model_dir.name)
    running = start_app(tmp_path)
    yield running
    stop_app(running)


def assistant_text(page, side: str) -> str:
    bubbles = page.locator(f"#chat-{side} .message.bot, #chat-{side} [data-testid='bot']")
    return bubbles.last.inner_text() if bubbles.count() else ""


def wait_votes_enabled(page, timeout_ms: int = 180_000) -> None:
    page.wait_for_function(
        "() => ['left', 'right', 'tie', 'bothbad'].every(k => { const b = document.getElementById('chat-vote-' + k);"
        " return b && !b.disabled; })",
        timeout=timeout_ms,
    )


def test_chat_both_sides_vote_and_find_the_pair(app: RunningApp, page, artifacts_dir: Path) -> None:
    page.goto(app.url)
    wait_for_text(page, "#pairs-progress", "Mine: 0 /")
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill(QUESTION)
    page.locator("#chat-send").click()
    wait_for_text(page, "#chat-reward-left", "implicit reward", timeout_ms=180_000)
    wait_for_text(page, "#chat-reward-right", "implicit reward", timeout_ms=180_000)
    wait_votes_enabled(page)
    left, right = assistant_text(page, "left"), assistant_text(page, "right")
    assert left and right
    page.screenshot(path=str(artifacts_dir / "chat-answers.png"), full_page=True)

    # Both sides run the embedded model here (no training run yet) with the same seed, so their answers match;
    # a regenerated right side (a new seed) gives the vote two different answers.
    page.locator("#chat-regen-right").click()
    page.wait_for_function("() => document.getElementById('chat-vote-left').disabled", timeout=30_000)
    wait_votes_enabled(page)
    page.locator("#chat-vote-right").click()
    page.wait_for_function(
        "() => /Saved|identical/.test(document.getElementById('chat-tally').innerText)", timeout=30_000
    )
    page.screenshot(path=str(artifacts_dir / "chat-voted.png"), full_page=True)
    assert "Saved" in text_of(page, "#chat-tally") and "1 DPO" in text_of(page, "#chat-tally")

    # The link opens the votes with every pair listed: the default "not labelled by me" would hide one's own vote.
    page.locator("#chat-see-votes").click()
    page.wait_for_function(
        "() => (document.querySelector('#pairs-collection input') || {}).value === 'chat votes'", timeout=30_000
    )
    wait_for_text(page, "#pairs-prompt", "story about a cat")
    page.screenshot(path=str(artifacts_dir / "chat-vote-in-pairs.png"), full_page=True)
    assert "chat" in text_of(page, "#pairs-pair-info")
    assert not page.errors, page.errors


def test_a_run_finished_elsewhere_appears_in_the_open_chat_tab(app: RunningApp, page, embedded_model_dir: Path) -> None:
    """No reload: the tab's timer finds the run (finished by the CLI, another tab or another user) and the DPO side,
    still the SFT model, switches to it; the note follows."""
    page.goto(app.url)
    page.get_by_role("tab", name="Chat").click()
    wait_for_text(page, "#chat-note", "same model")
    final = app.data_dir / "runs" / "elsewhere" / "final"
    final.mkdir(parents=True)
    for item in embedded_model_dir.iterdir():
        if item.is_file():
            os.link(item, final / item.name)
    (final.parent / "status.json").write_text('{"state": "finished"}', encoding="utf-8")
    page.wait_for_function(
        "() => (document.querySelector('#chat-right-model input') || {}).value?.includes('latest finished run')",
        timeout=30_000,
    )
    page.wait_for_function("() => !document.getElementById('chat-note').innerText.includes('same model')")
    assert not page.errors, page.errors
