"""FSDP2 sharding (``distributed: fsdp``) on 2 CPU processes (gloo): the same training as 1 process with the same
global batch, half the parameter and optimizer bytes per process, and a SIGTERM survived from sharded state.

The 1-process run uses what an FSDP run uses (precomputed reference log-probs, the model's own forward), so the two
differ only in the sharding. The plan ends on a 3-pair step and the held-out set on an odd batch, so one process runs
a forward more than it has pairs for (FSDP forwards are collective) and the numbers must still agree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from ctllm.dpo.config import TrainConfig
from ctllm.errors import UserError
from ctllm.runs import read_metrics, read_status
from ctllm.settings import Settings
from tests.test_dpo_multiprocess import REPO, run_train, train_command
from tests.test_dpo_train import assert_same_weights, train_records, weights, write_pairs

PAIRS, HELD_OUT, STEPS = 67, 5, 17  # 16 steps of 4 pairs and one of 3
KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
        "grad_norm", "learning_rate", "epoch")
ONE_PROCESS = ["--precompute_ref", "true", "--share_prompt", "false", "--lean_activations", "false"]


def common_args(model: Path, data: Path) -> list[str]:
    return ["--model", str(model), "--data", str(data), "--max_length", "48", "--lr", "1e-3", "--eval_every", "8",
            "--eval_batch_size", "2", "--report_to", "none", "--seed", "5", "--final_eval", "false"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """The 1-process run and the 2-process FSDP run (batch 2 x accumulation 2 against 1 x 2 x 2 processes)."""
    tmp_path = tmp_path_factory.mktemp("fsdp")
    settings = Settings(data_dir=tmp_path / "data").ensure_dirs()
    data = write_pairs(tmp_path / "pairs.jsonl", count=PAIRS, held_out=HELD_OUT)
    common = common_args(tiny_model_dir, data)
    one = run_train([*common, *ONE_PROCESS, "--run_name", "one", "--batch_size", "2", "--grad_accum", "2"],
                    settings, tiny_model_dir, tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train([*common, "--distributed", "fsdp", "--run_name", "two", "--batch_size", "1", "--grad_accum", "2"],
                    settings, tiny_model_dir, tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    return settings, data, tmp_path


def assert_same_records(a: list[dict], b: list[dict]) -> float:
    """Every logged step and evaluation of ``b`` as ``a`` within 1e-5; returns the largest loss difference."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        for key in KEYS + tuple(f"eval_{k}" for k in KEYS[:6]):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-5), (x["step"], key)
        for key in ("loss", "eval_loss"):
            if key in x:
                worst = max(worst, abs(x[key] - y[key]))
    return worst


@pytest.mark.slow
def test_two_sharded_processes_match_one_and_hold_half_each(runs, tiny_model_dir):
    settings, _, _ = runs
    one_dir, two_dir = settings.runs_dir / "one", settings.runs_dir / "two"
    status = read_status(two_dir)
    assert status["state"] == "finished" and status["world_size"] == 2 and status["step"] == STEPS
    config = yaml.safe_load((two_dir / "config.yaml").read_text())
    assert config["distributed"] == "fsdp" and config["precompute_ref"] is True
    assert config["resolved"]["global_batch"] == 4
    log = (two_dir / "train.log").read_text()
    assert "FSDP2 full sharding over 2 processes" in log

    worst = assert_same_records(read_metrics(one_dir), read_metrics(two_dir))
    assert_same_weights(one_dir / "final", two_dir / "final", atol=1e-5)
    a, b = weights(one_dir / "final"), weights(two_dir / "final")
    weight_gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    AutoModelForCausalLM.from_pretrained(two_dir / "final")  # a plain model folder

    whole = read_status(one_dir)["bytes_per_process"]
    held = status["bytes_per_process"]
    assert len(whole) == 1 and len(held) == 2
    total, optimizer = whole[0]["parameters"], whole[0]["optimizer"]
    assert whole[0]["parameters_total"] == total == held[0]["parameters_total"]
    for share in held:
        assert 0.45 * total <= share["parameters"] <= 0.55 * total
        assert 0.45 * optimizer <= share["optimizer"] <= 0.55 * optimizer
    assert sum(share["parameters"] for share in held) >= total  # every weight is held somewhere
    print(f"\n1 process: parameters {total} B, optimizer state {optimizer} B; FSDP on 2: "
          + "; ".join(f"process {r}: parameters {s['parameters']} B ({s['parameters'] / total:.1%}), optimizer "
                      f"{s['optimizer']} B ({s['optimizer'] / optimizer:.1%})" for r, s in enumerate(held))
          + f"; largest loss difference {worst:.2e}, largest final weight difference {weight_gap:.2e}")


# What the README shows: FSDP chosen by the accelerate config file alone (the run's config says ddp).
ACCELERATE_FSDP = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
dynamo_config:
  dynamo_backend: 'NO'
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: SHARDED_STATE_DICT
"""


@pytest.mark.slow
def test_a_sharded_run_survives_sigterm_and_resumes(runs, tiny_model_dir):
    """Started with an accelerate FSDP config file, stopped by SIGTERM, resumed with ``--distributed fsdp``."""
    settings, data, tmp_path = runs
    accelerate_config = tmp_path / "fsdp.yaml"
    accelerate_config.write_text(ACCELERATE_FSDP, encoding="utf-8")
    args = [*common_args(tiny_model_dir, data), "--run_name", "cut", "--batch_size", "1", "--grad_accum", "2"]
    command, env = train_command(args, settings, tiny_model_dir, tmp_path, 2, accelerate_config)
    # Its own process group, signalled as a whole, as the app's job manager stops a run.
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    run_dir = settings.runs_dir / "cut"
    deadline = time.time() + 300
    while time.time() < deadline and not train_records(run_dir) and process.poll() is None:
        time.sleep(0.1)  # polls for the first logged step
    assert process.poll() is None, process.stdout.read()
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    status = read_status(run_dir)
    assert status["state"] == "cancelled" and "checkpoint saved" in status["error"], output[-3000:]
    assert 1 <= status["step"] < STEPS and status["world_size"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["distributed"] == "fsdp"
    checkpoint = run_dir / "checkpoints" / f"step-{status['step']:06d}"
    shards = sorted((checkpoint / "sharded").glob("*.distcp"))
    assert len(shards) == 2 and (checkpoint / "trainer_state.json").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # no process gathered the whole model
    sizes = [path.stat().st_size for path in shards]
    assert min(sizes) >= 0.8 * max(sizes), sizes  # each process wrote its own half

    resumed = run_train([*args, "--distributed", "fsdp", "--resume"], settings, tiny_model_dir, tmp_path, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_status(run_dir)["state"] == "finished"
    assert f"resumed from {checkpoint}" in (run_dir / "train.log").read_text()
    records = train_records(run_dir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # nothing logged twice, nothing missing
    worst = assert_same_records(train_records(settings.runs_dir / "one"), records)
    assert_same_weights(settings.runs_dir / "one" / "final", run_dir / "final", atol=1e-5)
    print(f"\nstopped after step {status['step']}, checkpoint shards {sizes} B; resumed to step {STEPS}: largest "
          f"loss difference to 1 process {worst:.2e}")


@pytest.mark.slow
def test_lora_under_fsdp_matches_one_process_and_saves_the_adapter(runs, tiny_model_dir):
    settings, data, tmp_path = runs
    lora = [*common_args(tiny_model_dir, data), "--lora", "true", "--lora_r", "4", "--lr", "1e-2", "--max_steps", "4",
            "--save_every", "2"]
    one = run_train([*lora, *ONE_PROCESS, "--run_name", "lora-one", "--batch_size", "4"], settings, tiny_model_dir,
                    tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train([*lora, "--distributed", "fsdp", "--run_name", "lora-two", "--batch_size", "2"], settings,
                    tiny_model_dir, tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    one_dir, two_dir = settings.runs_dir / "lora-one", settings.runs_dir / "lora-two"
    worst = assert_same_records(read_metrics(one_dir), read_metrics(two_dir))
    final = two_dir / "final"
    assert (final / "adapter_model.safetensors").is_file() and not (final / "model.safetensors").exists()
    assert_same_weights(one_dir / "final", final, atol=1e-5)
    assert (two_dir / "checkpoints" / "step-000002" / "sharded").is_dir()
    held = read_status(two_dir)["bytes_per_process"]
    assert all(0.45 <= h["parameters"] / h["parameters_total"] <= 0.55 for h in held)  # the frozen base too
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, final)  # a plain adapter folder
    print(f"\nLoRA under FSDP: largest loss difference {worst:.2e}; parameters per process "
          f"{[h['parameters'] for h in held]} B of {held[0]['parameters_total']} B")


def test_the_distributed_field_is_checked_by_name():
    assert TrainConfig(model="m", data="d").distributed == "ddp"
    TrainConfig(model="m", data="d", distributed="fsdp").validate()
    with pytest.raises(UserError, match="config field 'distributed' = 'zero3' must be one of ddp, fsdp"):
        TrainConfig(model="m", data="d", distributed="zero3").validate()
