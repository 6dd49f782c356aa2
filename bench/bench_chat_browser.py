"""Time to first token in a real browser: click on Send → first character of each answer on screen (issue 4).

    python bench/bench_chat_browser.py                  # this checkout's app, 3 rounds
    python bench/bench_chat_browser.py --app-repo DIR   # another checkout's app (an older commit, for a baseline)

Starts ``app.py`` as tests/e2e/conftest.py does (a subprocess on a free port, an isolated data dir with the
converted embedded model linked in), opens the Chat tab in headless Chromium and, per round, measures from the
click a fresh turn (after Clear) and a turn with one earlier exchange: when the user's message shows in the pane
and when each side's first answer character does (a MutationObserver in the page; no polling, no sleeps). Beside
them, the same turns through the Chat tab's handlers in this process (no browser, no queue): the baseline the
browser figures are compared with. Goals on the 2-core machine: <= 1 s fresh, <= 1.5 s with history.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, RunningApp, start_app, stop_app  # noqa: E402

MAX_NEW_TOKENS = 64
QUESTIONS = ("Write a short story about a lighthouse keeper.", "Now make it funnier.")

# Resolves with ms from the click to: the user's message in the left pane, the first answer character per side.
MEASURE_JS = """
() => new Promise(resolve => {
  const all = (side, who) => document.querySelectorAll(`#chat-${side} [data-testid='${who}']`);
  const base = {user: all('left', 'user').length, left: all('left', 'bot').length, right: all('right', 'bot').length};
  const times = {};
  const t0 = performance.now();
  const check = () => {
    const now = performance.now() - t0;
    if (times.echo === undefined && all('left', 'user').length > base.user) times.echo = now;
    for (const side of ['left', 'right']) {
      const bots = all(side, 'bot');
      if (times[side] === undefined && bots.length > base[side] && bots[bots.length - 1].innerText.trim())
        times[side] = now;
    }
    if (['echo', 'left', 'right'].every(k => times[k] !== undefined)) { observer.disconnect(); resolve(times); }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  document.querySelector('#chat-send').click();
})
"""
VOTES_READY_JS = "() => !document.getElementById('chat-vote-left').disabled"


def model_cache() -> Path:
    return Path(os.environ.get("CTLLM_TEST_MODEL_CACHE", REPO / ".cache" / "test-models"))


def start(app_repo: Path, tmp: Path) -> RunningApp:
    from ctllm.models.embedded import embedded_folder

    data_dir = tmp / "data"
    (data_dir / "models").mkdir(parents=True)
    folder = embedded_folder(data_dir / "models")
    cached = model_cache() / folder.name
    if cached.exists():  # the converted model: the app does not convert it again
        os.symlink(cached, folder)
    return start_app(tmp, repo=app_repo)


def browser_rounds(app: RunningApp, rounds: int) -> list[dict[str, dict[str, float]]]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app.url)
        page.get_by_role("tab", name="Chat").click()
        page.wait_for_selector("#chat-send")
        page.get_by_text("Sampling (shared by both sides)").click()
        tokens = page.locator("#chat-max-new-tokens input[type='number']")
        tokens.fill(str(MAX_NEW_TOKENS))
        tokens.press("Enter")
        for index in range(rounds + 1):  # the first round warms the models up and is not counted
            page.locator("#chat-clear").click()
            page.wait_for_function("() => !document.querySelector(\"#chat-left [data-testid='user']\")")
            measured = {}
            for name, question in zip(("fresh", "history"), QUESTIONS, strict=True):
                page.locator("#chat-input textarea").fill(question)
                measured[name] = page.evaluate(MEASURE_JS)
                page.wait_for_function(VOTES_READY_JS, timeout=300_000)
            if index:
                results.append(measured)
        browser.close()
    return results


def handler_rounds(rounds: int) -> list[dict[str, float]]:
    """The same two turns through the Chat tab's handlers here: seconds to each side's first character."""
    from ctllm.models.embedded import embedded_folder
    from ctllm.settings import Settings
    from ctllm.ui.chat_tab import ChatHandlers, Side, Turn, TurnSettings
    from ctllm.ui.context import AppContext

    root = Path(tempfile.mkdtemp(prefix="bench-chat-handlers-"))  # left for the OS to clean, like /tmp's others
    settings = Settings(data_dir=root / "data", allowed_roots=(root, model_cache())).ensure_dirs()
    folder = embedded_folder(settings.models_dir)
    if (model_cache() / folder.name).exists():
        os.symlink(model_cache() / folder.name, folder)
    h = ChatHandlers(AppContext(settings))
    results = []
    for index in range(rounds + 1):
        turn, left, right = Turn(), Side(), Side()
        measured = {}
        for name, question in zip(("fresh", "history"), QUESTIONS, strict=True):
            started = time.perf_counter()
            form = TurnSettings("embedded", "embedded", False, 0.1, 0.7, 0.9, MAX_NEW_TOKENS, -1)
            updates = h.send(question, turn, left, right, form)
            for update in updates:
                turn, left, right = update.get("turn", turn), update.get("left", left), update.get("right", right)
                if name not in measured and left.answer and right.answer:
                    measured[name] = time.perf_counter() - started
                    if name == "history":  # nothing follows it: stop generating
                        updates.close()
        if index:
            results.append(measured)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app-repo", type=Path, default=REPO, help="the checkout whose app.py to start")
    parser.add_argument("--no-handlers", action="store_true", help="skip the in-process handler baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chat-browser-") as tmp:
        app = start(args.app_repo.resolve(), Path(tmp))
        try:
            browser = browser_rounds(app, args.rounds)
        finally:
            stop_app(app)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"app from {args.app_repo.resolve()}; {args.rounds} rounds, {MAX_NEW_TOKENS} new tokens [load {load}]")
    for name, goal in (("fresh", 1.0), ("history", 1.5)):
        echo = statistics.median(r[name]["echo"] / 1000 for r in browser)
        first = statistics.median(max(r[name]["left"], r[name]["right"]) / 1000 for r in browser)
        print(
            f"{name:8s} browser: message shown {echo:.2f} s, first character on both sides {first:.2f} s "
            f"(goal <= {goal:g} s: {'ok' if first <= goal else 'MISSED'})",
            flush=True,
        )
    if not args.no_handlers:
        handlers = handler_rounds(args.rounds)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        for name in ("fresh", "history"):
            first = statistics.median(r[name] for r in handlers)
            print(
                f"{name:8s} handler-level (this process, no browser): first character on both sides {first:.2f} s "
                f"[load {load}]"
            )


if __name__ == "__main__":
    main()
