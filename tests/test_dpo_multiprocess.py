"""The unchanged train command under ``accelerate launch``: 2 CPU processes (gloo) match 1 with the same global batch.

``--multi_gpu`` is what starts 2 gloo processes on a CPU-only machine (``--cpu --num_processes 2`` silently runs
one), so the test asserts the world size the run really had.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctllm.runs import read_metrics, read_status
from tests.test_dpo_train import write_pairs

REPO = Path(__file__).resolve().parent.parent
KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
        "logps/rejected", "logits/chosen", "logits/rejected", "grad_norm", "learning_rate", "epoch")


def train_command(args: list[str], settings, tiny_model_dir: Path, tmp_path: Path, processes: int,
                  accelerate_config: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of ``ctllm train`` on ``processes`` CPU processes (accelerate launch when > 1, with
    ``accelerate_config`` as its config file when given)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "CTLLM_ALLOWED_ROOTS": f"{settings.data_dir},{tiny_model_dir.parent},{tmp_path}"}
    how = ["--config_file", str(accelerate_config)] if accelerate_config else [
        "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *how, "--main_process_port", "0", "-m",
                "ctllm"] if processes > 1 else [sys.executable, "-m", "ctllm"]
    return [*launcher, "train", "--data-dir", str(settings.data_dir), "--no-progress", *args], env


def run_train(args: list[str], settings, tiny_model_dir: Path, tmp_path: Path,
              processes: int) -> subprocess.CompletedProcess:
    command, env = train_command(args, settings, tiny_model_dir, tmp_path, processes)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(settings, tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", count=20, held_out=6)
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--max_length", "48", "--lr", "1e-3",
              "--max_steps", "3", "--eval_every", "2", "--report_to", "none", "--seed", "5", "--final_eval", "false"]
    one = run_train([*common, "--run_name", "one", "--batch_size", "4"], settings, tiny_model_dir, tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train([*common, "--run_name", "two", "--batch_size", "2"], settings, tiny_model_dir, tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]

    one_dir, two_dir = settings.runs_dir / "one", settings.runs_dir / "two"
    assert read_status(two_dir)["world_size"] == 2 and read_status(one_dir)["world_size"] == 1
    resolved = yaml.safe_load((two_dir / "config.yaml").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["global_batch"] == 4
    assert read_status(two_dir)["state"] == "finished"

    records_one, records_two = read_metrics(one_dir), read_metrics(two_dir)
    # Only the main process writes: one line per logging step and per evaluation, none twice.
    assert [r["step"] for r in records_two] == [r["step"] for r in records_one] == [1, 2, 2, 3, 3]
    for a, b in zip(records_one, records_two, strict=True):
        for key in KEYS + tuple(f"eval_{k}" for k in KEYS[:9]):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert two.stderr.count("run directory:") == 1
