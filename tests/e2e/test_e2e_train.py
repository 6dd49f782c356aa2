"""Pick a loss (its own fields and paper line appear), then start a tiny training job in real Chromium, watch the
loss plot gain points and the log follow its end, cancel it (two clicks) and see the page follow it to "cancelled"
without a Refresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, REPO
from tests.e2e.conftest import RunningApp, start_app, stop_app, text_of, wait_for_text

pytestmark = pytest.mark.e2e

LOSS_POINTS = """() => {
  const plot = document.querySelector('#train-plot-loss .js-plotly-plot');
  if (!plot || !plot.data) return 0;
  return plot.data.reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0);
}"""
LOG_BOX = """() => {
  const box = document.querySelector('#train-log textarea');
  return box && [box.value.split('\\n').length, box.scrollTop, box.clientHeight, box.scrollHeight];
}"""
LOG_AT_END = """() => {
  const box = document.querySelector('#train-log textarea');
  return !!box && box.scrollHeight > box.clientHeight && box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
}"""


@pytest.fixture
def app(tmp_path: Path, tiny_model_dir: Path) -> Iterator[RunningApp]:
    roots = ",".join(str(p) for p in (tmp_path / "data", MODEL_CACHE, REPO / "assets"))
    running = start_app(tmp_path, extra_env={"CTLLM_ALLOWED_ROOTS": roots})
    yield running
    stop_app(running)


def explain(page, app: RunningApp) -> str:
    shown = {sel: text_of(page, sel)[-1500:] for sel in ("#train-message", "#train-status", "#train-log")}
    shown["log box"] = str(page.evaluate(LOG_BOX))
    return "\n".join(f"{sel}: {text}" for sel, text in shown.items()) + "\napp log:\n" + app.log()[-3000:]


def set_field(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.fill(value)
    box.press("Tab")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option").filter(has_text=option).first.click()


def test_start_watch_and_cancel_a_tiny_run(app: RunningApp, page, artifacts_dir: Path, tiny_model_dir: Path) -> None:
    page.goto(app.url)
    wait_for_text(page, "#pairs-progress", "Mine: 0 /")
    page.get_by_role("tab", name="Train").click()
    wait_for_text(page, "#train-status", "No job yet")

    # The loss picker: a reference-free loss shows its γ and a link to its paper, and hides what it does not use.
    page.wait_for_selector("#train-rpo-alpha input", state="visible", timeout=30_000)
    assert not page.locator("#train-simpo-gamma input").is_visible()
    choose(page, "train-loss-type", "Reference-free · orpo")
    wait_for_text(page, "#train-loss-paper", "odds-ratio")
    page.wait_for_selector("#train-orpo-lambda input", state="visible", timeout=30_000)
    page.wait_for_selector("#train-rpo-alpha input", state="hidden", timeout=30_000)  # orpo has its own NLL
    page.wait_for_selector("#train-beta input", state="hidden", timeout=30_000)  # and its own λ instead of β
    choose(page, "train-loss-type", "Reference-free · simpo")
    wait_for_text(page, "#train-loss-paper", "SimPO")
    page.wait_for_selector("#train-simpo-gamma input", state="visible", timeout=30_000)
    page.wait_for_selector("#train-orpo-lambda input", state="hidden", timeout=30_000)
    assert page.locator('#train-loss-paper a[href="https://arxiv.org/abs/2405.14734"]').count() == 1
    page.locator("#train-hyper-box").screenshot(path=str(artifacts_dir / "train-loss-picker.png"))
    choose(page, "train-loss-type", "Reference · sigmoid")  # back to the preset's loss for the run below
    wait_for_text(page, "#train-loss-paper", "DPO: logistic")
    page.wait_for_selector("#train-simpo-gamma input", state="hidden", timeout=30_000)
    page.wait_for_function(
        "() => { const p = document.querySelector('#train-plot-loss .js-plotly-plot');"
        " return !!p && !!p.layout && (p.layout.annotations || []).some(a => a.text.includes('Start a run')); }",
        timeout=30_000,
    )
    assert page.evaluate(LOSS_POINTS) == 0

    model = page.locator("#train-model input").first
    model.fill(str(tiny_model_dir))
    model.press("Enter")
    set_field(page, "train-epochs", "50")
    set_field(page, "train-batch-size", "1")
    set_field(page, "train-max-length", "64")
    page.get_by_text("More settings").click()
    page.locator("#train-precompute-ref input").uncheck()  # a pass over every pair first: slow here
    page.locator("#train-show-command").click()
    page.wait_for_function(
        "() => document.querySelector('#train-command').innerText.includes('--epochs 50')", timeout=30_000
    )
    assert str(tiny_model_dir) in text_of(page, "#train-command")

    try:
        page.locator("#train-start").click()
        wait_for_text(page, "#train-message", "Started job", timeout_ms=60_000)
        wait_for_text(page, "#train-status", "running", timeout_ms=60_000)
        page.wait_for_function(f"() => ({LOSS_POINTS})() >= 2", timeout=240_000)
        first = page.evaluate(LOSS_POINTS)
        page.wait_for_function(f"() => ({LOSS_POINTS})() >= {first + 2}", timeout=120_000)  # it keeps growing
        page.screenshot(path=str(artifacts_dir / "train-running.png"), full_page=True)
        status = text_of(page, "#train-status")
        assert "step" in status and "pairs/s" in status and "reference model" in status
        assert text_of(page, "#train-log").strip()
        page.wait_for_function(LOG_AT_END, timeout=30_000)  # the newest log line is in view

        page.locator("#train-cancel").click()
        page.wait_for_function(
            "() => document.querySelector('#train-cancel').innerText.includes('Confirm cancel')", timeout=30_000
        )
        assert "cancelled" not in text_of(page, "#train-status")  # one click only asks
        page.locator("#train-cancel").click()
        wait_for_text(page, "#train-status", "cancelled", timeout_ms=120_000)
        wait_for_text(page, "#train-history", "cancelled", timeout_ms=30_000)  # the timer, no Refresh
        page.wait_for_function(  # "Run shown" says so too
            "() => document.querySelector('#train-job input').value.includes('cancelled')", timeout=30_000
        )
        page.screenshot(path=str(artifacts_dir / "train-cancelled.png"), full_page=True)
    except Exception as error:  # a slow or failed job: say what the page and the app showed
        raise AssertionError(explain(page, app)) from error
    assert not page.errors, page.errors
