"""The Chat tab's leaderboard in real Chromium: it opens on the stored votes, follows a vote stored while it is
open (by another process, as another annotator's would be) and switches to Chinese."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctllm.pairs.store import Store
from tests.e2e.conftest import RunningApp, start_app, stop_app, text_of, wait_for_text
from tests.test_arena import add_vote, vote_pair

pytestmark = pytest.mark.e2e


@pytest.fixture
def app(tmp_path: Path, embedded_model_dir: Path) -> Iterator[RunningApp]:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    os.symlink(embedded_model_dir, models / embedded_model_dir.name)
    store = Store(tmp_path / "data" / "studio.sqlite")
    for i in range(3):
        add_vote(store, vote_pair(f"Question {i}?", f"Good answer {i}.", f"Bad answer {i}.", "run:r1", "embedded",
                                  "left better"))
    add_vote(store, vote_pair("Question 3?", "Fine.", "Poor.", "embedded", "run:r1", "right better"))
    store.close()
    running = start_app(tmp_path)
    yield running
    stop_app(running)


def test_the_leaderboard_opens_on_the_votes_and_follows_a_new_one(app: RunningApp, page, artifacts_dir: Path) -> None:
    page.goto(app.url)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-leaderboard-box").get_by_text("Leaderboard: ratings from the votes").click()
    wait_for_text(page, "#chat-leaderboard-summary", "4 votes")
    table = text_of(page, "#chat-leaderboard-table")
    assert table.index("run:r1") < table.index("embedded") and "3-1-0" in table
    page.wait_for_selector("#chat-leaderboard-chart .main-svg")
    page.wait_for_selector("#chat-leaderboard-matrix .main-svg")
    page.locator("#chat-leaderboard-box").screenshot(path=str(artifacts_dir / "leaderboard.png"))

    store = Store(app.data_dir / "studio.sqlite")
    add_vote(store, vote_pair("Question 4?", "Yes.", "No.", "run:r1", "embedded", "left better", annotator="bob"))
    store.close()
    wait_for_text(page, "#chat-leaderboard-summary", "5 votes")  # the open panel's poll found it
    assert "4-1-0" in text_of(page, "#chat-leaderboard-table")

    page.locator("#ui-lang").get_by_text("中文").click()
    wait_for_text(page, "#chat-leaderboard-summary", "评分依据")
    wait_for_text(page, "#chat-leaderboard-table", "胜-负-平")
    page.locator("#chat-leaderboard-box").screenshot(path=str(artifacts_dir / "leaderboard-zh.png"))
    assert not page.errors, page.errors
