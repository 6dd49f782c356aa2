"""Label three pairs with the keyboard in real Chromium and see the progress change (and then in 中文)."""

from __future__ import annotations

import json
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

    # 中文: what the handlers wrote is written again in Chinese, without a reload (the pair, progress, run status).
    page.locator("#ui-lang").get_by_text("中文").click()
    wait_for_text(page, "#pairs-progress", f"我的：2 / {SAMPLES}")
    wait_for_text(page, "#pairs-pair-info", "偏好对")
    page.get_by_role("tab", name="训练").click()
    wait_for_text(page, "#train-status", "还没有任务")
    page.screenshot(path=str(artifacts_dir / "pairs-train-in-chinese.png"), full_page=True)
    assert not page.errors, page.errors


def test_the_page_follows_imports_new_collections_searches_and_page_jumps(
    app: RunningApp, page, artifacts_dir: Path
) -> None:
    from ctllm.pairs.schema import Pair, user_prompt
    from ctllm.pairs.store import Store
    from ctllm.settings import Settings

    page.goto(app.url)
    wait_for_text(page, "#pairs-page-info", f"Page 1 of {-(-SAMPLES // 20)} · {SAMPLES} pairs match")

    # Another user (here: another process) adds a collection: it shows up without a reload.
    with Store(Settings(data_dir=app.data_dir).db_path) as store:
        store.create_collection("elsewhere")
        store.add_pairs("elsewhere", [Pair(user_prompt("Made elsewhere?"), "Yes.", "No.")])
    collection = page.locator("#pairs-collection input").first
    collection.click()
    page.wait_for_selector("ul[role='listbox'] >> text=elsewhere", timeout=30_000)  # the poll brings it
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})

    # An import opens the new collection: dropdown, pair, table and progress all show it.
    fresh = app.data_dir / "fresh.jsonl"
    rows = [{"prompt": f"Fresh question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(3)]
    fresh.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    page.locator("#pairs-import-box").get_by_text("Import", exact=True).first.click()
    page.locator("#pairs-import-path textarea, #pairs-import-path input").first.fill(str(fresh))
    page.locator("#pairs-import-collection textarea, #pairs-import-collection input").first.fill("fresh")
    page.locator("#pairs-import-run").click()
    wait_for_text(page, "#pairs-progress", "Mine: 0 / 3")
    assert "Fresh question" in text_of(page, "#pairs-prompt")
    assert "Fresh question" in text_of(page, "#pairs-table") and "Page 1 of 1 · 3 pairs match" in text_of(
        page, "#pairs-page-info"
    )
    assert collection.input_value() == "fresh"

    # Search with the button: a count, and the match highlighted (as a <mark>, the text itself inert).
    search = page.locator("#pairs-search textarea, #pairs-search input").first
    search.fill("Fresh")
    page.locator("#pairs-search-run").click()
    wait_for_text(page, "#pairs-page-info", "3 pairs match “Fresh”")
    assert page.locator("#pairs-prompt mark").first.inner_text() == "Fresh"

    # A page past the end says how many pages there are.
    page.locator("#pairs-page input").first.fill("999")
    page.locator("#pairs-go").click()
    wait_for_text(page, "#pairs-message", "There are only 1 page(s)")
    page.screenshot(path=str(artifacts_dir / "pairs-search-and-pages.png"), full_page=True)
    assert not page.errors, page.errors
