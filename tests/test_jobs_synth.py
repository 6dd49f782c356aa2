"""Synthesis as a background job: checked before it starts (models, paths, file size, answers), then a real
``python -m ctllm synth`` process through the JobManager in its own folder under ``synth-jobs/``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctllm.errors import UserError
from ctllm.jobs import JobManager
from ctllm.pairs.store import Store
from ctllm.runs import list_runs
from ctllm.settings import Settings
from ctllm.synth import SynthOptions, jobs_dir, preflight, start_synth_job
from ctllm.synth.job import new_job_dir
from tests.scripted_model import build_scripted_model

WEAK_ANSWER = "Blue sky."


@pytest.fixture(scope="module")
def weak_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose answer to every prompt is "Blue sky." (then EOS): never cut off, never empty."""
    return build_scripted_model(tmp_path_factory.mktemp("weak") / "blue", tiny_model_dir, WEAK_ANSWER)


@pytest.fixture
def env(tmp_path: Path, weak_model: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", allowed_roots=(tmp_path, weak_model.parent)).ensure_dirs()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_preflight_refuses_what_would_fail_and_describes_the_rest(env: Settings, weak_model: Path, tmp_path: Path):
    good = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Name a colour.", "output": "Red."},
        {"instruction": "Name a fruit."},
        {"output": "no instruction"},  # a bad row: skipped and counted
    ])
    checked = preflight(SynthOptions(str(good), "c", weak=str(weak_model)), env)
    assert (checked.prompts, checked.with_answer, checked.bad_rows) == (2, 1, 1)
    assert "2 prompts (1 with an answer of their own, 1 bad rows skipped)" in checked.describe()

    bare = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": "Hello?"}])
    with pytest.raises(UserError, match="bare.jsonl: no prompt has an answer of its own"):
        preflight(SynthOptions(str(bare), "c", weak=str(weak_model)), env)
    outside = tmp_path.parent / "elsewhere-model"
    with pytest.raises(UserError, match="weak model: .*outside the allowed folders"):
        preflight(SynthOptions(str(good), "c", weak=str(outside)), env)
    with pytest.raises(UserError, match="strong model: unknown model"):
        preflight(SynthOptions(str(good), "c", weak=str(weak_model), strong="no-such-model"), env)
    with pytest.raises(UserError, match="over this server's limit of 1024"):
        preflight(SynthOptions(str(good), "c", weak=str(weak_model), max_new_tokens=5000), env)
    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        preflight(SynthOptions(str(good), "c", weak=str(weak_model), batch_size=0), env)
    big = tmp_path / "big.txt"
    big.write_text("Say something.\n" * 80_000, encoding="utf-8")  # 1.2 MB
    with pytest.raises(UserError, match=r"big.txt is 1.1 MB, over the limit of 1 MB"):
        preflight(SynthOptions(str(big), "c", weak=str(weak_model), strong=str(weak_model)), env, max_bytes=1 << 20)


def test_job_folders_are_named_for_the_collection_outside_the_training_runs(env: Settings) -> None:
    first = new_job_dir(env, "my pairs/../x")
    assert first.parent == jobs_dir(env) == env.data_dir / "synth-jobs"
    assert first.name.startswith("synth-my-pairs-x-20")
    assert new_job_dir(env, "synth-web").name.startswith("synth-web-20")
    first.mkdir(parents=True)
    assert new_job_dir(env, "my pairs/../x") != first


def test_a_synth_job_reads_its_own_copy_of_an_upload(env: Settings, weak_model: Path, tmp_path: Path) -> None:
    upload = write_jsonl(tmp_path / "gradio-upload" / "questions.jsonl", [
        {"instruction": f"Question {i}?", "output": f"A full answer to question {i}."} for i in range(3)
    ])
    options = SynthOptions(str(upload), "from-upload", weak=str(weak_model), batch_size=2, max_new_tokens=8,
                           seed=3, threads=1)
    manager = JobManager(env)
    job = start_synth_job(manager, options, env, owner="boss", copy_prompts=True)
    upload.unlink()  # the upload's temporary folder may be cleaned at any time: the job has its own copy
    assert job.kind == "synth" and job.owner == "boss" and job.run_dir.parent == jobs_dir(env)
    argv = list(job.argv)
    assert argv[1:4] == ["-m", "ctllm", "synth"]
    assert argv[argv.index("--prompts") + 1] == str(job.run_dir / "questions.jsonl")

    job = manager.wait(job.id, timeout=300)
    view = manager.watch(job.id)
    assert job.state == "finished", view.log_tail
    assert view.status["kind"] == "synth" and view.status["collection"] == "from-upload"
    assert (view.status["step"], view.status["total_steps"]) == (3, 3)
    assert view.status["summary"]["added"] == 3 and view.status["summary"]["state"] == "finished"
    with Store(env.db_path) as store:
        pairs = list(store.iter_pairs("from-upload"))
        assert store.get_collection("from-upload").kind == "synth"
    assert sorted(p.pair.rejected for p in pairs) == [WEAK_ANSWER] * 3
    assert {p.pair.source for p in pairs} == {"synth:questions"}
    assert list_runs(env.runs_dir) == []  # not offered as a training run anywhere
    with pytest.raises(UserError, match="is taken"):
        start_synth_job(manager, options, env, run_dir=job.run_dir)
