"""The whole loop in one open page, never reloaded: import a file, label with keys, train a tiny run to the end, chat
with it (it appears on the right by itself), vote and follow the link to the vote, score the pairs with the run and
sort by that score. A screenshot of each stage lands in tests/artifacts/loop-*.png."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, REPO
from tests.e2e.conftest import RunningApp, start_app, stop_app, text_of, wait_for_text
from tests.test_ui_i18n import english_words

pytestmark = pytest.mark.e2e

PAIRS = 12
GUARD_MS = 300_000  # the longest any one step may take on a loaded 2-core machine (training, scoring, a chat turn)
QUESTION = "Say something kind."
REWARD = re.compile(r"=\s*([+-]?\d+\.\d+)")
# What a user reads as a label: component labels, buttons, tab names, table headers, accordion titles (visible only).
LABELS = """() => [...document.querySelectorAll(
  '[data-testid="block-info"], button, [role="tab"], th, .label-wrap span, label span')]
  .filter(el => el.offsetParent !== null).map(el => el.innerText.trim()).filter(Boolean)"""
# Gradio's own frontend strings follow the browser's locale, not the app's switch; "English" names itself.
GRADIO_CHROME = {"English", "Drop File Here\n- or -\nClick to Upload", "Use via API", "Settings"}
SHOWN = "ids => Object.fromEntries(ids.map(id => [id, (document.getElementById(id) || {}).innerText || '']))"


@pytest.fixture
def app(tmp_path: Path, tiny_model_dir: Path) -> Iterator[RunningApp]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    with (incoming / "loop.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(PAIRS):
            pair = {"prompt": f"Loop question {i}: how do I say thank you?", "chosen": f"Say thank you warmly ({i}).",
                    "rejected": f"Do not bother ({i})."}
            handle.write(json.dumps(pair) + "\n")
    roots = ",".join(str(p) for p in (tmp_path / "data", incoming, MODEL_CACHE, REPO / "assets"))
    running = start_app(tmp_path, extra_env={"CTLLM_ALLOWED_ROOTS": roots, "CTLLM_SFT_MODEL": str(tiny_model_dir)})
    running.incoming = incoming  # type: ignore[attr-defined]
    yield running
    stop_app(running)


def wait_text(page, selector: str, needle: str) -> None:
    """Wait for text on the page; the guard is generous because a busy machine is the normal machine."""
    wait_for_text(page, selector, needle, timeout_ms=GUARD_MS)


def fill(page, elem_id: str, value: str, enter: bool = False) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    box.press("Enter" if enter else "Tab")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option").filter(has_text=option).first.click()  # a label may add a count: "loop (12)"


def input_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input").first.input_value()


def wait_value(page, elem_id: str, needle: str, timeout_ms: int = GUARD_MS) -> None:
    page.wait_for_function(
        "([id, needle]) => { const el = document.querySelector('#' + id + ' input');"
        " return !!el && el.value.includes(needle); }",
        arg=[elem_id, needle],
        timeout=timeout_ms,
    )


VOTES_ON = "() => !document.getElementById('chat-vote-left').disabled"
NEW_ANSWER_VOTES_ON = """before => {
  const bots = document.querySelectorAll('#chat-right .message.bot, #chat-right [data-testid="bot"]');
  const last = bots.length ? bots[bots.length - 1].innerText : '';
  return last !== before && !document.getElementById('chat-vote-left').disabled; }"""


def answer(page, side: str) -> str:
    bubbles = page.locator(f"#chat-{side} .message.bot, #chat-{side} [data-testid='bot']")
    return bubbles.last.inner_text() if bubbles.count() else ""


def reward_of(page, side: str) -> float:
    found = REWARD.search(text_of(page, f"#chat-reward-{side}"))
    assert found, text_of(page, f"#chat-reward-{side}")
    return float(found.group(1))


def test_the_whole_loop_in_one_open_page(app: RunningApp, page, artifacts_dir: Path, tiny_model_dir: Path) -> None:
    stage = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts_dir / f"loop-{next(stage)}-{name}.png"), full_page=True)

    page.set_default_timeout(GUARD_MS)
    page.goto(app.url)
    wait_text(page, "#pairs-progress", "Mine: 0 /")
    try:
        # 1. Import a file: the view opens the new collection (pair, table, page info, progress).
        page.locator("#pairs-import-box").get_by_text("Import", exact=True).first.click()
        fill(page, "pairs-import-path", str(app.incoming / "loop.jsonl"))  # type: ignore[attr-defined]
        fill(page, "pairs-import-collection", "loop")
        page.locator("#pairs-import-run").click()
        wait_value(page, "pairs-collection", "loop")
        wait_text(page, "#pairs-prompt", "Loop question")
        wait_text(page, "#pairs-page-info", f"{PAIRS} pairs")
        wait_text(page, "#pairs-progress", f"Mine: 0 / {PAIRS}")
        shot("imported")

        # 2. Label with keys (1 = first better), focus outside any text box.
        for done in (1, 2, 3):
            page.locator("#pairs-prompt").click()
            page.keyboard.press("1")
            wait_text(page, "#pairs-progress", f"Mine: {done} / {PAIRS}")
        shot("labelled")

        # 3. Train a tiny run on that collection, to the end.
        page.get_by_role("tab", name="Train").click()
        fill(page, "train-model", str(tiny_model_dir), enter=True)
        fill(page, "train-data", "loop", enter=True)
        fill(page, "train-epochs", "1")
        fill(page, "train-lr", "0.01")  # a tiny model moves far enough in 6 steps for rewards to show (3 decimals)
        fill(page, "train-batch-size", "2")
        fill(page, "train-max-length", "64")
        page.get_by_text("More settings").click()
        fill(page, "train-run-name", "loop-run")
        page.locator("#train-final-eval input").uncheck()
        page.locator("#train-start").click()
        wait_text(page, "#train-message", "Started job")
        wait_text(page, "#train-status", "finished")
        wait_text(page, "#train-history", "finished")
        shot("trained")

        # 4. Chat: the finished run is on the right without a reload, the SFT model on the left.
        page.get_by_role("tab", name="Chat").click()
        wait_value(page, "chat-right-model", "loop-run")  # "latest finished run (loop-run)"
        assert input_value(page, "chat-left-model") == str(tiny_model_dir)
        fill(page, "chat-input", QUESTION)
        page.locator("#chat-send").click()
        wait_text(page, "#chat-reward-left", "implicit reward")
        wait_text(page, "#chat-reward-right", "implicit reward")
        assert reward_of(page, "right") != 0.0 or reward_of(page, "left") != 0.0, "the run is still the SFT model"
        page.wait_for_function(VOTES_ON, timeout=GUARD_MS)
        for _ in range(3):  # a tiny model may say the same on both sides; a new seed on the right (as a user would)
            before = answer(page, "right")
            if answer(page, "left") != before:
                break
            page.locator("#chat-regen-right").click()
            # The new answer is the event (the disabled votes in between may come and go between two polls).
            page.wait_for_function(NEW_ANSWER_VOTES_ON, arg=before, timeout=GUARD_MS)
        shot("chat")

        # 5. Vote, then the link opens the vote among all pairs (the default filter would hide one's own votes).
        page.locator("#chat-vote-left").click()
        wait_text(page, "#chat-tally", "Saved")
        page.locator("#chat-see-votes").click()
        wait_value(page, "pairs-collection", "chat votes")
        wait_text(page, "#pairs-prompt", QUESTION)
        assert input_value(page, "pairs-label-state") == "all"
        shot("vote-in-pairs")

        # 6. Score the collection's pairs with the run (a background job), then sort the Pairs tab by that score.
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-history").get_by_text("loop-run", exact=True).filter(visible=True).first.click()
        wait_text(page, "#train-score-target", "loop-run")
        choose(page, "train-score-collection", "loop")
        page.locator("#train-score").click()
        wait_text(page, "#train-score-status", "finished")
        shot("scored")
        page.get_by_role("tab", name="Pairs").click()
        choose(page, "pairs-collection", "loop")
        wait_text(page, "#pairs-prompt", "Loop question")
        wait_text(page, "#pairs-pair-info", "loop-run margin")  # the run's score reached the open page
        wait_value(page, "pairs-score-name", "loop-run")
        choose(page, "pairs-sort", "run score: lowest margin first")
        wait_value(page, "pairs-sort", "run score")
        wait_text(page, "#pairs-page-info", f"{PAIRS} pairs")
        assert "error" not in text_of(page, "#pairs-message").lower(), text_of(page, "#pairs-message")
        shot("score-in-pairs")

        # 7. 中文: no English label, button, tab or table header left on any tab.
        page.locator("#ui-lang").get_by_text("中文").click()
        page.get_by_role("tab", name="训练").wait_for(timeout=GUARD_MS)
        for tab in ("偏好对", "训练", "对话"):
            page.get_by_role("tab", name=tab).click()
            labels = page.evaluate(LABELS)
            left = {text: words for text in labels if (words := english_words(text)) and text not in GRADIO_CHROME}
            assert not left, f"English left on the {tab} tab: {left}"
            shot(f"zh-{tab}")
    except Exception as error:  # say what the page and the app showed
        shown = page.evaluate(SHOWN, ["pairs-message", "pairs-page-info", "pairs-progress", "train-message",
                                      "train-status", "train-score-status", "chat-note", "chat-tally"])
        shot("failed")
        raise AssertionError(f"{shown}\n{app.log()[-3000:]}") from error
    assert not page.errors, page.errors
