"""Layout facts measured in Chromium at the default 1280 px width, in English and Chinese: the Train tab's plots show
a titled figure from their first frame (never Gradio's empty-plot icon), chart titles, category labels and legends
stay inside their chart without covering each other, and every vote button keeps its text on one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningApp, start_app, stop_app, wait_for_text

pytestmark = pytest.mark.e2e

CATEGORIES = ("coding", "dangerous_advice", "definition", "discrimination", "facts", "self_harm", "writing")
CHARTS = ("#train-eval-preference", "#train-eval-reward", "#train-eval-behaviour")
LIVE = ("#train-plot-loss", "#train-plot-margin", "#train-plot-accuracy", "#train-plot-rewards")

# Counts animation frames in which a Train tab plot shows Gradio's empty-plot icon, until window.__sampling is false.
SAMPLE_EMPTY_ICONS = """() => {
  window.__emptyFrames = 0; window.__sampling = true;
  const tick = () => {
    const shown = [...document.querySelectorAll('[id^=train-plot-] .empty')]
      .filter(e => getComputedStyle(e).visibility !== 'hidden' && e.getBoundingClientRect().height > 0);
    if (shown.length) window.__emptyFrames++;
    if (window.__sampling) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""
DRAWN = """(sels) => sels.every(s => { const p = document.querySelector(s + ' .js-plotly-plot');
  return !!p && !!p.layout && !!document.querySelector(s + ' .gtitle'); })"""
# Where a chart's title, x tick labels and legend lie against its svg and each other.
CHART_BOXES = """(sel) => {
  const root = document.querySelector(sel), svg = root.querySelector('.main-svg');
  const box = e => { const b = e.getBoundingClientRect(); return {l: b.left, t: b.top, r: b.right, b: b.bottom}; };
  const s = box(svg), block = box(root);
  const inside = (b, o) => b.l >= o.l - 1 && b.r <= o.r + 1 && b.t >= o.t - 1 && b.b <= o.b + 1;
  const overlap = (a, b) => a.l < b.r && b.l < a.r && a.t < b.b && b.t < a.b;
  const title = box(root.querySelector('.gtitle'));
  const ticks = [...root.querySelectorAll('.xtick text')].map(box);
  const legend = root.querySelector('.legend') ? box(root.querySelector('.legend')) : null;
  return {
    title: root.querySelector('.gtitle').textContent,
    title_inside: inside(title, s) && inside(title, block),
    ticks: root.querySelectorAll('.xtick text').length,
    ticks_inside: ticks.every(t => inside(t, s)),
    legend_clear: !legend || (!ticks.some(t => overlap(t, legend)) && !overlap(title, legend)),
    tick_text: [...root.querySelectorAll('.xtick text')].map(t => t.textContent),
  };
}"""
# Lines of text in each vote button shown (distinct tops of its text's line boxes), whether the text fits its width,
# and where the button is (one tab's vote row shows at a time).
VOTE_LINES = """() => [...document.querySelectorAll('.vote-row button')].filter(b => b.offsetParent).map(b => {
  const walker = document.createTreeWalker(b, NodeFilter.SHOW_TEXT), tops = new Set();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange(); range.selectNodeContents(node);
    for (const r of range.getClientRects()) if (r.width > 0) tops.add(Math.round(r.top));
  }
  const top = Math.round(b.getBoundingClientRect().top);
  return {id: b.id, text: b.innerText.trim(), lines: tops.size, fits: b.scrollWidth <= b.clientWidth, top};
})"""


def eval_result() -> dict:
    """An evaluation as the end of a run writes it: long category names, and a prompt list not meaningful."""
    def group(n: int, acc: float) -> dict:
        return {"n": n, "model_preference_accuracy": acc, "ref_preference_accuracy": acc / 2, "reward_accuracy": acc,
                "margin": acc - 0.4, "chosen_reward": 0.1, "rejected_reward": 0.5 - acc}

    categories = {name: group(i + 2, (i + 1) / len(CATEGORIES)) for i, name in enumerate(CATEGORIES)}

    def prompts(name: str, headline: str, meaningful: bool) -> dict:
        rates = {"refusal_rate": 0.25, "answer_rate": 0.75, "n": 4}
        return {"name": name, "kind": "harmful", "language": name[-2:], "n": 4, "headline": headline,
                "model": rates, "ref": rates, "note": "", "meaningful": meaningful}

    return {
        "version": 1, "beta": 0.1, "seconds": 3.0,
        "models": {"model": {"label": "run demo"}, "ref": {"label": "tiny-llama"}},
        "pairs": {"overall": group(32, 0.6), "by_category": categories, "by_language": {"en": group(32, 0.6)}},
        "prompts": [prompts("harmful_en", "refusal_rate", True), prompts("harmful_zh", "refusal_rate", False),
                    prompts("benign_en", "answer_rate", True)],
        "notes": [],
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[RunningApp]:
    run = tmp_path / "data" / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 3, "total_steps": 3}), encoding="utf-8")
    (run / "eval.json").write_text(json.dumps(eval_result()), encoding="utf-8")
    running = start_app(tmp_path)
    yield running
    stop_app(running)


def assert_votes_on_one_line(page) -> None:
    buttons = page.evaluate(VOTE_LINES)
    assert len(buttons) >= 4, buttons
    assert all(b["lines"] == 1 and b["fits"] for b in buttons), buttons
    assert len({b["top"] for b in buttons}) == 1, buttons  # and at 1280 px the row holds them all


def assert_charts_clear(page, selectors: tuple[str, ...]) -> list[dict]:
    boxes = [page.evaluate(CHART_BOXES, sel) for sel in selectors]
    for sel, found in zip(selectors, boxes, strict=True):
        assert found["title_inside"] and found["ticks_inside"] and found["legend_clear"], (sel, found)
    return boxes


def test_plots_titles_labels_and_vote_buttons_fit(app: RunningApp, browser, artifacts_dir: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(app.url)
        wait_for_text(page, "#pairs-progress", "Mine: 0 /")
        assert_votes_on_one_line(page)
        # The plotly bundle loads with the page, before the Train tab opens.
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').some(e => /PlotlyPlot/.test(e.name) && e.responseEnd > 0)"
        )
        page.evaluate(SAMPLE_EMPTY_ICONS)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_function(DRAWN, arg=list(LIVE))
        page.evaluate("() => { window.__sampling = false; }")
        assert page.evaluate("() => window.__emptyFrames") == 0
        live = assert_charts_clear(page, LIVE)
        assert [box["title"] for box in live][:2] == ["Loss", "Reward margin (chosen − rejected)"]
        page.screenshot(path=str(artifacts_dir / "layout-train-en.png"))

        page.locator("#train-eval-box").get_by_text("Evaluation").first.click()
        run = page.locator("#train-eval-run input").first
        run.fill("demo")
        run.press("Enter")
        page.wait_for_function(
            "() => (document.querySelector('#train-eval-preference .js-plotly-plot')?.data || []).length === 2"
        )
        page.wait_for_function(DRAWN, arg=list(CHARTS))
        charts = assert_charts_clear(page, CHARTS)
        assert charts[0]["title"].startswith("Preference accuracy") and charts[0]["ticks"] == len(CATEGORIES) + 1
        assert "dangerousadvice" in charts[0]["tick_text"]  # broken over two lines (tspans), not tilted or cut
        page.locator("#train-eval-box").screenshot(path=str(artifacts_dir / "layout-eval-en.png"))

        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-vote-left").wait_for()
        assert_votes_on_one_line(page)
        page.locator("#chat-vote-left").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "layout-chat-en.png"), full_page=True)

        page.locator("#ui-lang").get_by_text("中文").click()
        wait_for_text(page, "#chat-vote-left", "左边更好")
        assert_votes_on_one_line(page)
        page.locator("#chat-vote-left").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "layout-chat-zh.png"), full_page=True)
        page.get_by_role("tab", name="偏好对").click()
        wait_for_text(page, "#vote-second", "回答 2 更好")
        assert_votes_on_one_line(page)
        page.screenshot(path=str(artifacts_dir / "layout-pairs-zh.png"))

        # The plots were drawn again in Chinese by the switch.
        page.get_by_role("tab", name="训练").click()
        page.wait_for_function(
            "() => document.querySelector('#train-plot-loss .gtitle')?.textContent === '损失'"
            " && (document.querySelector('#train-eval-preference .gtitle')?.textContent || '').startsWith('留出')"
        )
        live = assert_charts_clear(page, LIVE)
        charts = assert_charts_clear(page, CHARTS)
        assert charts[0]["tick_text"][0] == "全部" and live[2]["title"] == "奖励准确率"
        page.screenshot(path=str(artifacts_dir / "layout-train-zh.png"))
        page.locator("#train-eval-box").screenshot(path=str(artifacts_dir / "layout-eval-zh.png"))
    finally:
        context.close()
