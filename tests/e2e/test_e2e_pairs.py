"""Label three pairs with the keyboard in real Chromium and see the progress change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningApp, start_app, stop_app, text_of, wait_for_text

pytestmark = pytest.mark.e2e

SAMPLES_FILE = Path(__file__).resolve().parents[2] / "assets" / "pairs" / "sample_pairs.jsonl"
SAMPLES = len(SAMPLES_FILE.read_text().splitlines())


@pytest.fixture
def app(tmp_path: Path) -> Iterator[RunningApp]:
    running = start_app(tmp_path)
    yield running
    stop_app(running)


def test_label_three_pairs_with_the_keyboard(app: RunningApp, page, artifacts_dir: Path) -> None:
    page.goto(app.url)
    wait_for_text(page, "#pairs-progress", f"Mine: 0 / {SAMPLES}")  # the shipped samples were imported on first start
    page.screenshot(path=str(artifacts_dir / "pairs-before.png"), full_page=True)
    first_pair = text_of(page, "#pairs-pair-info")

    for count, key in enumerate(("1", "2", "4"), start=1):
        page.keyboard.press(key)
        wait_for_text(page, "#pairs-progress", f"Mine: {count} / {SAMPLES}")
    assert text_of(page, "#pairs-pair-info") != first_pair  # the next unlabelled pair came up each time
    page.screenshot(path=str(artifacts_dir / "pairs-after-three-labels.png"), full_page=True)

    # Typing a reason must not vote: keys go to the text box.
    page.locator("#pairs-reason textarea, #pairs-reason input").first.fill("")
    page.locator("#pairs-reason textarea, #pairs-reason input").first.type("12")
    page.wait_for_timeout(500)
    assert f"Mine: 3 / {SAMPLES}" in text_of(page, "#pairs-progress")

    page.locator("body").click(position={"x": 5, "y": 5})  # leave the text box
    page.keyboard.press("u")
    wait_for_text(page, "#pairs-progress", f"Mine: 2 / {SAMPLES}")
    assert "Undid" in text_of(page, "#pairs-message")
    assert not page.errors, page.errors
