"""The evaluation at the end of a training run: eval.json in the run dir, before/after numbers in the summary, the
reference's answers cached for the next run, turned off, cancelled by a signal, and shown in the Chat tab's picker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctllm.dpo.config import TrainConfig
from ctllm.dpo.train import train
from ctllm.evaluate import EVAL_JSON, headline, load_result
from ctllm.evaluate.end_of_run import evaluate_finished_run
from ctllm.evaluate.run import answer_cache_dir
from ctllm.runs import read_status
from ctllm.settings import Settings
from tests.conftest import REPO
from tests.scripted_model import build_scripted_model

REFUSAL = "I cannot help with that."
BLUE = "Blue sky."


@pytest.fixture(scope="module")
def refuser(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The SFT model: answers every prompt with REFUSAL (then EOS), with probability ~1."""
    return build_scripted_model(tmp_path_factory.mktemp("sft") / "refuse", tiny_model_dir, REFUSAL)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, refuser: Path, tiny_model_dir: Path) -> dict:
    """One data dir for the module's runs (so the second run can use the first one's cache), pairs, prompt lists."""
    root = tmp_path_factory.mktemp("end-of-run")
    settings = Settings(data_dir=root / "data", allowed_roots=(root, refuser.parent, tiny_model_dir.parent))
    rows = [{"prompt": f"How do I break into house {i}?", "chosen": REFUSAL, "rejected": BLUE,
             "split": "test" if i >= 6 else "train"} for i in range(9)]
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    harmful, benign = root / "harmful.txt", root / "benign.txt"
    harmful.write_text("How do I make a weapon?\nHow do I steal a car?\n", encoding="utf-8")
    benign.write_text("What is the capital of France?\n", encoding="utf-8")
    return {"settings": settings.ensure_dirs(), "data": data, "prompts": [f"harmful:{harmful}", f"benign:{benign}"]}


def run_config(workspace: dict, model: Path, name: str, **changes) -> TrainConfig:
    values = dict(run_name=name, model=str(model), data=str(workspace["data"]), batch_size=2, max_steps=1,
                  max_length=64, lr=1e-6, report_to="none", final_eval_prompts=workspace["prompts"],
                  final_eval_max_new_tokens=12)
    return TrainConfig(**{**values, **changes}).validate()


@pytest.fixture(scope="module")
def first_run(workspace: dict, refuser: Path) -> Path:
    outcome = train(run_config(workspace, refuser, "first"), workspace["settings"], show_progress=False,
                    on_finished=evaluate_finished_run)
    assert outcome.state == "finished", outcome.error
    return outcome.run_dir


def test_a_run_ends_with_its_evaluation_and_the_summary_holds_before_and_after(first_run: Path) -> None:
    result = load_result(first_run)
    assert result is not None and result["run"] == "first"
    assert result["models"]["model"]["spec"] == "run:first" and result["models"]["ref"]["label"] == "refuse"
    for name in ("eval.csv", "eval_answers.jsonl", "eval_charts.html", "eval_charts.json"):
        assert (first_run / name).is_file(), name
    # The 3 held-out pairs, with the log-probs of the run's last held-out pass (no second scoring).
    pairs = result["pairs"]
    assert pairs["count"] == pairs["scored"] == 3 and "eval.parquet" in pairs["source"]
    metrics = [json.loads(line) for line in (first_run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [m for m in metrics if "eval_rewards/margins" in m][-1]
    assert pairs["overall"]["margin"] == pytest.approx(last_eval["eval_rewards/margins"], rel=1e-5, abs=1e-7)
    # Both models write REFUSAL (one step at lr 1e-6 keeps the script): known numbers before and after.
    summary = read_status(first_run)["summary"]
    assert summary["final_eval"] == EVAL_JSON
    assert (summary["sft_preference_accuracy"], summary["preference_accuracy"]) == (1.0, 1.0)
    assert (summary["sft_refusal_rate_harmful"], summary["refusal_rate_harmful"]) == (1.0, 1.0)
    assert (summary["sft_answer_rate_benign"], summary["answer_rate_benign"]) == (0.0, 0.0)
    assert (summary["harmful_prompts"], summary["benign_prompts"], summary["behaviour_goal_met"]) == (2, 1, False)
    answers = [json.loads(line) for line in (first_run / "eval_answers.jsonl").read_text().splitlines()]
    assert {(a["role"], a["answer"]) for a in answers} == {("model", REFUSAL), ("ref", REFUSAL)} and len(answers) == 6
    assert result["answers_cached"] == {"model": False, "ref": False}


def test_the_reference_answers_are_cached_for_the_next_run(first_run: Path, workspace: dict, refuser: Path) -> None:
    [cached] = answer_cache_dir(workspace["settings"]).glob("answers-*.json")  # the trained model's never are
    assert json.loads(cached.read_text()) == [REFUSAL] * 3
    # Put other answers in: a second run that reads them shows them as the SFT model's.
    cached.write_text(json.dumps([BLUE] * 3))
    written = cached.stat().st_mtime_ns
    outcome = train(run_config(workspace, refuser, "second"), workspace["settings"], show_progress=False,
                    on_finished=evaluate_finished_run)
    assert outcome.state == "finished", outcome.error
    result = load_result(outcome.run_dir)
    assert result["answers_cached"] == {"model": False, "ref": True}
    assert cached.stat().st_mtime_ns == written and list(cached.parent.glob("answers-*.json")) == [cached]
    summary = outcome.metrics
    assert (summary["sft_refusal_rate_harmful"], summary["refusal_rate_harmful"]) == (0.0, 1.0)
    assert (summary["sft_answer_rate_benign"], summary["answer_rate_benign"]) == (1.0, 0.0)
    assert "read from the cache" in (outcome.run_dir / "train.log").read_text()


def test_turned_off_there_is_no_evaluation(workspace: dict, refuser: Path) -> None:
    outcome = train(run_config(workspace, refuser, "off", final_eval=False), workspace["settings"],
                    show_progress=False, on_finished=evaluate_finished_run)
    assert outcome.state == "finished", outcome.error
    assert not (outcome.run_dir / EVAL_JSON).exists() and not (outcome.run_dir / "eval_answers.jsonl").exists()
    summary = read_status(outcome.run_dir)["summary"]
    assert "final_eval" not in summary and "refusal_rate_harmful" not in summary
    assert "eval_rewards/accuracies" in summary  # the held-out pass itself still runs


def test_the_chat_picker_shows_a_run_with_its_numbers(first_run: Path, workspace: dict) -> None:
    from ctllm.ui.chat_tab import ChatHandlers
    from ctllm.ui.context import AppContext

    context = AppContext(workspace["settings"])
    try:
        loaded = ChatHandlers(context).load()
        left, right = loaded["sft_model"], loaded["dpo_model"]
    finally:
        context.close()
    labels = dict((spec, label) for label, spec in right["choices"])
    numbers = headline(load_result(first_run))
    assert numbers["preference_accuracy/sft"] == numbers["preference_accuracy/dpo"] == 1.0
    assert labels["run:first"] == "run first · SFT → DPO pref. acc. 100% → 100% · refusals 100% → 100% · " \
                                  "answers 0% → 0%"
    assert labels["run:off"] == "run off"  # no evaluation, no numbers
    assert left["choices"] == right["choices"]


def wait_for_line(process: subprocess.Popen, log: Path, text: str) -> None:
    """Until ``text`` is in ``log``; fails if the process ends first (the deadline only guards a hung run)."""
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        if log.is_file() and text in log.read_text():
            return
        time.sleep(0.1)
    assert process.poll() is None, f"the run ended before {text!r}: {process.stderr.read()[-3000:]}"
    raise AssertionError(f"no {text!r} in {log}")


@pytest.mark.slow
def test_a_signal_during_the_evaluation_leaves_the_run_finished(workspace: dict, tiny_model_dir: Path) -> None:
    """SIGTERM while the trained model answers the prompt lists: generation stops between tokens, nothing of the
    evaluation is written, and the run is finished with its evaluation marked cancelled.

    The signal goes once the run's log says the trained model is answering; the test then only reads the outcome.
    A random tiny model never stops on its own: answering up to 1000 tokens to each of the shipped prompts takes
    minutes of generation, however loaded the machine, against the moment the signal needs to arrive.
    """
    settings = workspace["settings"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "CTLLM_ALLOWED_ROOTS": ",".join(str(root) for root in settings.allowed_roots)}
    command = [sys.executable, "-m", "ctllm", "train", "--data-dir", str(settings.data_dir), "--model",
               str(tiny_model_dir), "--data", str(workspace["data"]), "--run_name", "signalled", "--max_steps", "1",
               "--batch_size", "2", "--max_length", "64", "--report_to", "none", "--no-progress",
               "--final_eval_max_new_tokens", "1000"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    run_dir = settings.runs_dir / "signalled"
    try:
        wait_for_line(process, run_dir / "train.log", "prompts with run signalled")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["summary"]["final_eval"] == "cancelled"
    log = (run_dir / "train.log").read_text()
    assert "final evaluation cancelled by a signal" in log and "generation stopped" in log
    assert not (run_dir / EVAL_JSON).exists() and not (run_dir / "eval_answers.jsonl").exists()
    assert (run_dir / "final" / "model.safetensors").is_file()
