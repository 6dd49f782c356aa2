"""Synthesize panel handlers: an admin starts a real synthesis job (a scripted tiny model), its progress shows,
the pairs land in the named collection where an annotator reviews them through the Pairs tab's handlers; cancel
and resume; a viewer and an annotator are refused with nothing started."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pytest

from ctllm.jobs import processes
from ctllm.jobs.table import Job
from ctllm.pairs.store import Store
from ctllm.settings import Settings
from ctllm.synth import jobs_dir
from ctllm.ui.context import AppContext
from ctllm.ui.pairs_tab import PairFilters, standalone
from ctllm.ui.synth_panel import SynthHandlers, progress_markdown
from ctllm.ui.train_tab import TrainHandlers
from tests.scripted_model import build_scripted_model

WEAK_ANSWER = "Blue sky."
ADMIN, ANNOTATOR, VIEWER = gr.Request(username="boss"), gr.Request(username="ann"), gr.Request(username="view")
POLL = ("status", "log", "cancel", "resume", "timer", "picker", "known")


@pytest.fixture(scope="module")
def weak_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose answer to every prompt is "Blue sky." (then EOS)."""
    return build_scripted_model(tmp_path_factory.mktemp("weak") / "blue", tiny_model_dir, WEAK_ANSWER)


@pytest.fixture
def ctx(tmp_path: Path, weak_model: Path) -> AppContext:
    """Signed-in users: boss (admin), ann (annotator), view (viewer)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        allowed_roots=(tmp_path, weak_model.parent),
        auth=("boss:1", "ann:2", "view:3"),
        admins=("boss",),
        annotators=("ann",),
    ).ensure_dirs()
    context = AppContext(settings)
    yield context
    for job in context.jobs.list_jobs():  # no job outlives its test
        if not job.final:
            context.jobs.cancel(job.id, wait=True, force=True)
    context.close()


def prompts_file(folder: Path, rows: list[dict], name: str = "questions.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def form(upload: Path | None, collection: str, weak: Path, path: str = "", **changes) -> dict:
    """The panel's form in the order of ``SynthHandlers.start``'s parameters."""
    values = {
        "upload": str(upload) if upload else None, "path": path, "collection": collection, "weak": str(weak),
        "strong": "", "max_new_tokens": 16, "batch_size": 2, "limit": 0, "temperature": 0.7, "top_p": 0.9,
        "seed": 5, "near_threshold": 0.1, "split": "train", "threads": 1, "devices": "cpu",
    }
    values.update(changes)
    return values


def poll(h: SynthHandlers, job_id: int, known=None, request=ADMIN) -> dict:
    return dict(zip(POLL, h.poll(job_id, known, request=request), strict=True))


def poll_until_over(h: SynthHandlers, job_id: int, timeout: float = 300) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = poll(h, job_id)
        seen.append(result["status"])
        if not result["timer"]["active"]:
            return result, seen
        time.sleep(0.3)
    pytest.fail(f"job {job_id} still running: {seen[-1]}")


def test_admin_synthesizes_a_collection_that_annotators_review(ctx: AppContext, weak_model: Path, tmp_path: Path):
    h = SynthHandlers(ctx)
    upload = prompts_file(tmp_path / "upload", [
        {"instruction": "Name a colour.", "output": "Red is a warm colour."},
        {"instruction": "What colour is the sky?", "output": " blue SKY. "},  # = the weak answer: near-identical
        {"instruction": "Name a fruit.", "output": "An apple, crisp and sweet."},
        {"instruction": "Name a tree.", "output": "The oak, which lives for centuries."},
    ])
    loaded = h.load(request=ADMIN)
    assert loaded[0]["visible"] is True and loaded[4] is None and loaded[5]["active"] is False

    job_id, message, timer, picker = h.start(*form(upload, "synth-review", weak_model).values(), request=ADMIN)
    assert isinstance(job_id, int), message
    assert "Started synthesis job" in message and "4 prompts (4 with an answer of their own)" in message
    assert "python -m ctllm synth" in message and "--collection synth-review" in message
    assert timer["active"] is True and picker["value"] == job_id

    result, seen = poll_until_over(h, job_id)
    assert "**running**" in seen[0] and "elapsed" in seen[0]  # its process imports torch for seconds
    status = result["status"]
    assert "**finished**" in status and "prompts 4 / 4 (100%)" in status, seen
    assert "pairs added: **3**" in status and "dropped 1 (" in status and "near-identical 1" in status, status
    assert "prompts/min" in status and "seed 5" in status
    assert "synth: 100%" in result["log"]
    assert result["resume"]["interactive"] is False and result["cancel"]["interactive"] is False
    assert "synth-review" in result["picker"]["choices"]  # the Pairs tab's collection picker
    assert "choices" not in poll(h, job_id, known=result["known"])["picker"]  # an unchanged list is not resent
    assert h.load(request=ADMIN)[4] == job_id  # a page opened later shows this job
    train = TrainHandlers(ctx)  # the Train tab lists training jobs only
    assert train.job_choices() == [] and train.current_job() is None and train.history(request=ADMIN) == []

    # The annotator finds the collection in the Pairs tab and reviews its pairs.
    pairs = standalone(ctx)
    assert "synth-review" in pairs.refresh_collections(None, request=ANNOTATOR)["choices"]
    shown = pairs.browse(PairFilters("synth-review", label_state="all"), 1, None, request=ANNOTATOR)
    view, table = shown[pairs.ui.view], shown[pairs.ui.table]["data"]
    assert sorted(row[3] for row in table) == ["Name a colour.", "Name a fruit.", "Name a tree."]
    first_pair = view.pair_id
    voted = pairs.vote("first", view, "", request=ANNOTATOR)
    assert f"Pair {first_pair}:" in voted[pairs.ui.message]
    with Store(ctx.settings.db_path) as store:
        assert store.get_collection("synth-review").kind == "synth"
        assert [label.annotator for label in store.labels_for(first_pair)] == ["ann"]
        stored = list(store.iter_pairs("synth-review"))
    assert {s.pair.rejected for s in stored} == {WEAK_ANSWER}
    assert {(s.pair.meta["seed"], s.pair.meta["max_new_tokens"]) for s in stored} == {(5, 16)}


def test_cancel_stops_the_job_and_resume_finishes_it_without_duplicates(
    ctx: AppContext, weak_model: Path, tmp_path: Path
) -> None:
    h = SynthHandlers(ctx)
    rows = [{"instruction": f"Question {i}?", "output": f"A full answer to question {i}."} for i in range(4)]
    prompts_file(ctx.settings.data_dir / "incoming", rows)
    values = form(None, "cancelled-run", weak_model, path="data/incoming/questions.jsonl", batch_size=1, seed=-1)
    job_id, message, *_ = h.start(*values.values(), request=ADMIN)
    assert isinstance(job_id, int), message
    # While it still loads it stops at the latest after one batch; a process that was not up yet (a busy machine)
    # ends at once and the job reads cancelled already.
    assert re.search(r"cancelling|cancelled", h.cancel(job_id, request=ADMIN))
    job = ctx.jobs.wait(job_id, timeout=120, until_group_gone=True)
    assert job.state == "cancelled" and not processes.is_running(job.pid, job.pid_start)
    result = poll(h, job_id)
    assert "**cancelled**" in result["status"] and "Resume continues" in result["status"]
    assert result["resume"]["interactive"] is True and result["timer"]["active"] is False
    with pytest.raises(gr.Error, match="already cancelled"):
        h.cancel(job_id, request=ADMIN)
    with Store(ctx.settings.db_path) as store:
        before = len(list(store.iter_pairs("cancelled-run"))) if store.find_collection("cancelled-run") else 0
    assert before <= 1

    new_id, message, timer, _ = h.resume(job_id, request=ADMIN)
    assert new_id != job_id and "Resumed" in message and timer["active"] is True
    result, _ = poll_until_over(h, new_id)
    assert "**finished**" in result["status"] and "prompts 4 / 4" in result["status"], result["log"]
    with Store(ctx.settings.db_path) as store:
        stored = list(store.iter_pairs("cancelled-run"))
    assert len(stored) == 4 and len({s.pair.content_hash() for s in stored}) == 4
    assert len({s.pair.meta["seed"] for s in stored}) == 1 and stored[0].pair.meta["seed"] >= 0  # -1: drawn once


@pytest.mark.parametrize("request_, role", [(VIEWER, "viewer"), (ANNOTATOR, "annotator")])
def test_viewers_and_annotators_are_refused_and_nothing_starts(
    ctx: AppContext, weak_model: Path, tmp_path: Path, request_: gr.Request, role: str
) -> None:
    h = SynthHandlers(ctx)
    upload = prompts_file(tmp_path / "upload", [{"instruction": "Hi?", "output": "Hello there, friend."}])
    name = request_.username
    refused = f"needs the admin role; {name} is {role}"
    with pytest.raises(gr.Error, match=refused):
        h.start(*form(upload, "intruder", weak_model).values(), request=request_)
    for call in (h.cancel, h.resume, h.poll, h.select_job):
        args = (1, None) if call == h.poll else (1,)
        with pytest.raises(gr.Error, match=refused):
            call(*args, request=request_)
    hidden = h.load(request=request_)
    assert hidden[0]["visible"] is False and hidden[5]["active"] is False
    assert ctx.jobs.list_jobs() == [] and not jobs_dir(ctx.settings).exists()
    assert ctx.store.find_collection("intruder") is None


def test_bad_input_starts_nothing_and_says_why(ctx: AppContext, weak_model: Path, tmp_path: Path) -> None:
    h = SynthHandlers(ctx)
    outside = prompts_file(tmp_path.parent / f"{tmp_path.name}-outside", [{"instruction": "Hi?", "output": "Hi."}])
    cases = {
        "outside the allowed folders": form(None, "x", weak_model, path=str(outside)),
        "Upload a prompts file or type a path": form(None, "x", weak_model),
        "max new tokens = 1.5 must be a whole number": form(None, "x", weak_model, path="a.txt", max_new_tokens=1.5),
        "devices: 'gpu' is neither": form(None, "x", weak_model, path="a.txt", devices="gpu"),
    }
    for expected, values in cases.items():
        job_id, message, timer, picker = h.start(*values.values(), request=ADMIN)
        assert not isinstance(job_id, int), message
        assert message.startswith("⚠ Nothing started") and expected in message, message
    assert ctx.jobs.list_jobs() == []


def test_progress_shows_prompts_eta_speed_and_filter_counts() -> None:
    now = time.time()
    job = Job(1, "synth", "synth-x", ("python", "-m", "ctllm", "synth", "--collection", "x"), "", "", "cpu",
              Path("/tmp/x"), "running", now - 100, started=now - 95)
    written = datetime.fromtimestamp(int(now), timezone.utc)
    status = {"collection": "x", "step": 2, "total_steps": 8, "eta_s": 90.0, "updated": written.isoformat(),
              "phase": "generating", "pairs_per_minute": 4.0, "added": 1, "duplicates": 0,
              "filtered": {"empty": 0, "cut_off": 1, "wrong_language": 0, "near_identical": 0, "too_long": 0}}
    text = progress_markdown(job, status, written.timestamp() + 30)
    assert "**running**" in text and "prompts 2 / 8 (25%)" in text and "ETA 1:00" in text
    assert "4.0 prompts/min" in text and "pairs added: **1**" in text and "dropped 1 (empty 0, cut off 1" in text
    loading = progress_markdown(job, {"step": 0, "total_steps": 8, "phase": "loading models"}, now)
    assert "prompts 0 / 8 (0%)" in loading and "loading models…" in loading and "ETA" not in loading
    hostile = progress_markdown(job, {"collection": "<img src=x onerror=alert(1)>"}, now)
    assert "<img" not in hostile
