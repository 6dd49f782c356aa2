"""Hostile text in pairs and in a chat message is shown as text in real Chromium: no script runs, no dialog opens,
and no live <img onerror> or javascript: link reaches the DOM."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store
from tests.e2e.conftest import RunningApp, start_app, stop_app, wait_for_text

pytestmark = pytest.mark.e2e

# Each payload would set window.__pwned and open a dialog if it ever ran.
RUN = "window.__pwned=1;alert(1)"
PAYLOADS = (
    f"<script>{RUN}</script>",
    f'<img src=x onerror="{RUN}">',
    f"[click me](javascript:{RUN})",
    f'<a href="javascript:{RUN}">html link</a>',
    f'<svg onload="{RUN}"></svg>',
    f'<details open ontoggle="{RUN}"><summary>s</summary></details>',
    f'<iframe src="javascript:{RUN}"></iframe>',
    f'**bold** <b onmouseover="{RUN}">md-html</b>\n\n```html\n<script>{RUN}</script>\n```',
)
HOSTILE = "\n".join(PAYLOADS)
LIVE_DOM_CHECK = """() => {
  const bad = [];
  for (const img of document.querySelectorAll('img')) if (img.getAttribute('src') === 'x') bad.push(img.outerHTML);
  for (const a of document.querySelectorAll('a[href], iframe[src]')) {
    const url = (a.getAttribute('href') || a.getAttribute('src') || '').trim().toLowerCase();
    if (url.startsWith('javascript:')) bad.push(a.outerHTML);
  }
  for (const el of document.querySelectorAll('[onerror], [onload], [ontoggle], [onmouseover]')) bad.push(el.outerHTML);
  for (const s of document.querySelectorAll('script')) if (s.textContent.includes('__pwned')) bad.push(s.outerHTML);
  return bad;
}"""


@pytest.fixture
def app(tmp_path: Path, tiny_model_dir: Path) -> Iterator[RunningApp]:
    data_dir = tmp_path / "data"
    model_dir = data_dir / "models" / "tiny-llama"
    shutil.copytree(tiny_model_dir, model_dir)  # a copy: a link out of the data dir is refused, rightly
    store = Store(data_dir / "studio.sqlite")
    store.create_collection("hostile")  # the first collection, so the Pairs tab opens on it
    prompt = user_prompt("PROMPT-MARK " + HOSTILE, system=HOSTILE)
    store.add_pair("hostile", Pair(prompt, chosen="CHOSEN-MARK " + HOSTILE, rejected="REJECTED-MARK " + HOSTILE))
    store.close()
    env = {"CTLLM_SFT_MODEL": str(model_dir), "CTLLM_DPO_MODEL": str(model_dir)}
    running = start_app(tmp_path, env)
    yield running
    stop_app(running)


def assert_nothing_ran(page, dialogs: list[str]) -> None:
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert not dialogs, dialogs
    assert page.evaluate(LIVE_DOM_CHECK) == []


def test_hostile_pairs_and_chat_stay_text(app: RunningApp, page, artifacts_dir: Path) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app.url)
    for mark in ("PROMPT-MARK", "CHOSEN-MARK", "REJECTED-MARK"):
        page.wait_for_function("m => document.body.innerText.includes(m)", arg=mark, timeout=60_000)
    body = page.evaluate("() => document.body.innerText")
    assert "<script>" in body and "onerror=" in body  # shown as text, not dropped
    page.locator("body").hover()
    page.wait_for_timeout(500)
    assert_nothing_ran(page, dialogs)
    page.screenshot(path=str(artifacts_dir / "untrusted-pairs.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("CHAT-MARK " + HOSTILE)
    page.locator("#chat-send").click()
    wait_for_text(page, "#chat-left", "CHAT-MARK", timeout_ms=60_000)
    wait_for_text(page, "#chat-reward-right", "implicit reward", timeout_ms=120_000)
    page.wait_for_timeout(500)
    assert "onerror=" in page.locator("#chat-left").inner_text()
    assert_nothing_ran(page, dialogs)
    page.screenshot(path=str(artifacts_dir / "untrusted-chat.png"), full_page=True)
