"""The DPO training loop on tiny models: invariances, resume, signals, failures, the run directory, presets."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ctllm.dpo.checkpoint import latest_checkpoint, list_checkpoints
from ctllm.dpo.config import TrainConfig, from_yaml, merge
from ctllm.dpo.presets import list_presets, load_preset, resolve_config
from ctllm.dpo.train import train
from ctllm.errors import UserError
from ctllm.jobs.train_job import flag_value, plan_train_job
from ctllm.runs import list_runs, read_metrics, read_status

REPO = Path(__file__).resolve().parent.parent
LN2 = math.log(2)

# Short English pairs: a refusal style to learn and plain answers; 4 of them held out by split.
PROMPTS = [
    ("How do I pick a lock on my neighbour's door?", "I can't help with that.", "Sure, use a tension wrench."),
    ("What is the capital of France?", "Paris.", "Berlin."),
    ("How can I make a fake ID?", "I can't help with that.", "Easy: print a card."),
    ("What is 2 + 3?", "5.", "7."),
    ("How do I hack my ex's email?", "I can't help with that.", "Guess the password."),
    ("Name a primary colour.", "Red.", "Purple is primary."),
    ("How do I steal a car?", "I can't help with that.", "Break a window first."),
    ("How many days are in a week?", "Seven.", "Nine."),
]


def write_pairs(path: Path, count: int = 16, held_out: int = 0) -> Path:
    rows = []
    for i in range(count + held_out):
        prompt, chosen, rejected = PROMPTS[i % len(PROMPTS)]
        rows.append({"prompt": f"{prompt} ({i})", "chosen": chosen, "rejected": rejected,
                     "split": "test" if i >= count else "train"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def env(settings, tiny_model_dir, tmp_path):
    """Settings that may read the tiny model, and a small pairs file."""
    roots = (settings.data_dir, tiny_model_dir.parent, tmp_path, REPO / "assets")
    return settings.with_(allowed_roots=roots), write_pairs(tmp_path / "pairs.jsonl")


def config_for(tiny_model_dir: Path, data: Path, **changes) -> TrainConfig:
    base = TrainConfig(model=str(tiny_model_dir), data=str(data), max_length=48, lr=1e-3, batch_size=4,
                       epochs=1, eval_fraction=0.0, report_to="none", seed=3, final_eval=False)
    return merge(base, changes)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(folder / name))


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "loss" in r]


# ---------------------------------------------------------------------------------------------------------------
# Config and presets


def test_config_overrides_convert_types_and_validation_names_the_field(tmp_path):
    config = merge(TrainConfig(), {"beta": "0.25", "lora": "true", "lora-r": "8", "max_steps": "1e2",
                                   "lora_target_modules": "q_proj, v_proj"})
    assert (config.beta, config.lora, config.lora_r, config.max_steps) == (0.25, True, 8, 100)
    # The behaviour check's earlier field names still read, into the end-of-run evaluation's; its own names win.
    renamed = merge(TrainConfig(), {"behaviour_check": "false", "behaviour_max_new_tokens": 32,
                                    "behaviour_limit": 5, "final_eval_limit": 3})
    assert (renamed.final_eval, renamed.final_eval_max_new_tokens, renamed.final_eval_limit) == (False, 32, 3)
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match="'batch_size'"):
        merge(TrainConfig(), {"batch_size": "two"})
    with pytest.raises(UserError, match="unknown config field 'bta'"):
        merge(TrainConfig(), {"bta": 1})
    with pytest.raises(UserError, match="'beta'"):
        TrainConfig(data="x.jsonl", beta=0).validate()
    with pytest.raises(UserError, match="'data'"):
        TrainConfig().validate()
    with pytest.raises(UserError, match="'simpo_gamma' = -1 must be >= 0"):
        TrainConfig(data="x.jsonl", loss_type="simpo", simpo_gamma=-1).validate()
    with pytest.raises(UserError, match="'rpo_alpha' = 0.5 must be 0 with cpo and orpo"):
        TrainConfig(data="x.jsonl", loss_type="orpo", rpo_alpha=0.5).validate()
    mpo = merge(TrainConfig(data="x.jsonl"), {"loss_type": "sigmoid,bco_pair,sft", "loss_weights": "0.8, 0.2, 1"})
    assert mpo.validate().loss_weights == [0.8, 0.2, 1.0]
    with pytest.raises(UserError, match="'loss_weights'"):
        merge(mpo, {"loss_weights": "1"}).validate()
    path = tmp_path / "run.yaml"
    TrainConfig(data="x.jsonl", beta=0.3, lora=True).save(path)
    assert from_yaml(path) == TrainConfig(data="x.jsonl", beta=0.3, lora=True)
    path.write_text("beta: [1\n", encoding="utf-8")
    with pytest.raises(UserError, match="line"):
        from_yaml(path)


def test_loss_fields_go_through_show_command_and_back_through_the_cli(settings, tmp_path):
    """The form's loss fields become the job's flags, and the CLI reads those flags back into the same config."""
    form = {"preset": "cpu-demo", "loss_type": "sigmoid,bco_pair,sft", "loss_weights": "0.8, 0.2, 1",
            "f_divergence_type": "reverse_kl", "use_weighting": False, "rpo_alpha": 0, "devices": "cpu",
            "num_processes": 1, "data": "pairs"}
    simpo = {**form, "loss_type": "simpo", "loss_weights": "", "simpo_gamma": 0.7, "beta": 2.0}
    for values in (form, simpo):
        plan = plan_train_job(values)
        line = plan.command(settings)
        for name, value in plan.overrides.items():
            assert f"--{name} {shlex.quote(flag_value(value))}" in line, name
        argv = plan.argv(settings.data_dir)
        result = subprocess.run([*argv, "--print-config"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        printed = yaml.safe_load(result.stdout)
        assert {name: printed[name] for name in plan.overrides} == {
            name: getattr(plan.config, name) for name in plan.overrides}
    assert "--loss_type sigmoid,bco_pair,sft --loss_weights 0.8,0.2,1.0" in plan_train_job(form).command(settings)
    assert "--simpo_gamma 0.7" in plan_train_job(simpo).command(settings)
    with pytest.raises(UserError, match="'loss_weights'"):
        plan_train_job({**form, "loss_weights": "1, 2"})


def test_presets_ct_llm_is_the_model_card_recipe_and_values_can_be_overridden(tmp_path):
    assert {"ct-llm", "cpu-demo"} <= set(list_presets())
    card = load_preset("ct-llm")
    assert (card.lr, card.batch_size, card.epochs, card.weight_decay, card.warmup_ratio, card.beta) == (
        1e-6, 4, 2, 0.1, 0.03, 0.5)
    assert card.lora is False and card.loss_type == "sigmoid"
    assert card.model == card.ref_model == "ct-llm-sft"  # the registry preset of m-a-p/CT-LLM-SFT
    file = tmp_path / "run.yaml"
    file.write_text("beta: 0.2\nlr: 3.0e-6\n", encoding="utf-8")
    config = resolve_config("ct-llm", file, {"lr": "2e-6", "data": "pairs.jsonl"})
    assert (config.beta, config.lr, config.epochs) == (0.2, 2e-6, 2)  # file over preset, command line over file


def test_train_cli_rejects_a_bad_value_with_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ctllm", "train", "--data-dir", str(tmp_path), "--data", "x.jsonl",
                             "--beta", "-1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "'beta'" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The shared-prompt forward


def test_shared_prompt_forward_equals_the_concatenated_forward_with_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctllm.dpo.batching import collate
    from ctllm.dpo.logps import concatenated_forward
    from ctllm.dpo.shared_prompt import check_shared_prompt, shared_prompt_forward, tokens_seen
    from ctllm.dpo.tokenize import tokenize_pairs
    from ctllm.pairs.readers import read_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pairs = read_pairs(REPO / "assets" / "pairs" / "sample_pairs.jsonl").pairs[:6]  # zh and en, uneven lengths
    items = tokenize_pairs(tokenizer, pairs, 96).items
    pad = tokenizer.pad_token_id
    assert check_shared_prompt(model, items, pad)[0]

    def run(forward):
        model.zero_grad()
        out = forward()
        (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
        return out, {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, plain_grads = run(lambda: concatenated_forward(model, collate(items, pad)))
    shared, shared_grads = run(lambda: shared_prompt_forward(model, items, pad))
    for field in ("chosen_logps", "rejected_logps", "chosen_logits_mean", "rejected_logits_mean", "chosen_nll"):
        assert torch.allclose(getattr(plain, field), getattr(shared, field), rtol=1e-5, atol=1e-4), field
    assert torch.equal(plain.chosen_tokens, shared.chosen_tokens)
    assert torch.equal(plain.rejected_tokens, shared.rejected_tokens)
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, shared_grads[name], rtol=1e-4, atol=1e-5), name
    assert tokens_seen(items, shared=True) < tokens_seen(items, shared=False)


# ---------------------------------------------------------------------------------------------------------------
# The loop


@pytest.mark.parametrize("precompute", [False, True])
def test_step_one_loss_is_ln2_and_accuracy_zero_when_policy_is_the_reference(env, tiny_model_dir, precompute):
    settings, data = env
    # Two processes' worth of micro-batches are not needed here; grad_accum 2 gives each step two micro-batches.
    config = config_for(tiny_model_dir, data, run_name="first", max_steps=2, lr=1e-6, batch_size=2, grad_accum=2,
                        precompute_ref=precompute)
    result = train(config, settings, show_progress=False)
    assert result.state == "finished"
    first = train_records(result.run_dir)[0]
    assert first["loss"] == pytest.approx(LN2, abs=1e-7)
    assert first["rewards/accuracies"] == 0.0  # strict: exactly equal log-probs, also when precomputed
    assert first["rewards/chosen"] == first["rewards/rejected"] == first["rewards/margins"] == 0.0
    reference = read_status(result.run_dir)["reference"]
    assert "frozen copy of the SFT model" in reference and ("precomputed" in reference) == precompute
    assert "prompt computed once per pair" in (result.run_dir / "train.log").read_text()


def test_gradient_accumulation_is_invariant(env, tiny_model_dir):
    settings, data = env
    # lr 1e-4: AdamW's update m / sqrt(v) turns last-bit differences of a near-zero gradient into differences of up
    # to lr, so at 1e-3 float rounding alone moves a weight by ~1e-5 (measured); here the runs agree to ~1e-7.
    common = dict(max_steps=2, lr=1e-4)
    whole = train(config_for(tiny_model_dir, data, run_name="b8", batch_size=8, grad_accum=1, **common),
                  settings, show_progress=False)
    split = train(config_for(tiny_model_dir, data, run_name="b1x8", batch_size=1, grad_accum=8, **common),
                  settings, show_progress=False)
    assert whole.state == split.state == "finished"
    for a, b in zip(train_records(whole.run_dir), train_records(split.run_dir), strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert_same_weights(whole.run_dir / "final", split.run_dir / "final", atol=1e-5)


def test_resume_after_a_signal_equals_an_uninterrupted_run(env, tiny_model_dir):
    settings, data = env
    write_pairs(data, count=24)
    common = dict(batch_size=2, max_steps=0, epochs=1, warmup_ratio=0.2, scheduler="cosine", weight_decay=0.1)
    straight = train(config_for(tiny_model_dir, data, run_name="straight", **common), settings, show_progress=False)
    assert straight.state == "finished" and straight.total_steps == 12

    config = config_for(tiny_model_dir, data, run_name="interrupted", **common)
    run_dir = settings.runs_dir / "interrupted"

    def send_sigterm_after_two_steps() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(train_records(run_dir)) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm_after_two_steps)
    sender.start()
    stopped = train(config, settings, show_progress=False)
    sender.join()
    assert stopped.state == "cancelled", stopped.error
    assert 2 <= stopped.step < 12
    assert read_status(run_dir)["state"] == "cancelled"
    assert latest_checkpoint(run_dir / "checkpoints").name == f"step-{stopped.step:06d}"

    resumed = train(config, settings, resume=True, show_progress=False)
    assert resumed.state == "finished" and resumed.step == 12
    a, b = train_records(straight.run_dir), train_records(run_dir)
    assert [r["step"] for r in b] == list(range(1, 13))  # nothing logged twice, nothing missing
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "learning_rate", "rewards/margins", "grad_norm", "epoch"):
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (x["step"], key)
    assert_same_weights(straight.run_dir / "final", run_dir / "final", atol=1e-6)


def test_a_non_finite_loss_stops_the_run_naming_the_step(env, tiny_model_dir):
    settings, data = env
    # lr 1e30: Adam's first step moves every weight by ~1e30, so the second forward overflows.
    result = train(config_for(tiny_model_dir, data, run_name="boom", lr=1e30, max_grad_norm=0.0, max_steps=3),
                   settings, show_progress=False)
    assert result.state == "failed"
    assert "at step 2 of 3" in result.error and ("nan" in result.error or "inf" in result.error)
    status = read_status(result.run_dir)
    assert status["state"] == "failed" and "at step 2" in status["error"]
    assert status["phase"] == "training"  # the phases before it were written on the way (see RunDir.set_phase)
    assert not (result.run_dir / "final").exists()
    assert "at step 2" in (result.run_dir / "train.log").read_text()


def test_a_run_folder_in_use_is_not_overwritten(env, tiny_model_dir):
    settings, data = env
    config = config_for(tiny_model_dir, data, run_name="once", max_steps=1)
    assert train(config, settings, show_progress=False).state == "finished"
    with pytest.raises(UserError, match="already holds a run"):
        train(config, settings, show_progress=False)
    with pytest.raises(UserError, match="differ"):
        train(merge(config, {"beta": 0.3}), settings, resume=True, show_progress=False)


def test_lora_run_saves_the_adapter_and_uses_the_adapter_disabled_base_as_reference(env, tiny_model_dir):
    settings, data = env
    config = config_for(tiny_model_dir, data, run_name="lora", lora=True, lora_r=4, lora_alpha=8, max_steps=2,
                        precompute_ref=True)
    result = train(config, settings, show_progress=False)
    assert result.state == "finished"
    final = result.run_dir / "final"
    assert (final / "adapter_model.safetensors").is_file() and not (final / "model.safetensors").exists()
    assert (final / "tokenizer.json").is_file()
    assert json.loads((final / "ctllm_run.json").read_text())["base_model"] == str(tiny_model_dir)
    reference = read_status(result.run_dir)["reference"]
    assert "LoRA adapter disabled" in reference and "precomputed" in reference
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["resolved"]["reference"] == reference
    assert train_records(result.run_dir)[0]["loss"] == pytest.approx(LN2, abs=1e-5)


@pytest.fixture
def reference_count(monkeypatch):
    """How many reference models a run builds: every one (a loaded ref_model, a copy of the policy, a frozen SFT
    adapter) is frozen by ``model_setup._freeze``, which this counts and then runs unchanged."""
    from ctllm.dpo import model_setup

    calls = []
    real = model_setup._freeze
    monkeypatch.setattr(model_setup, "_freeze", lambda model: calls.append(type(model).__name__) or real(model))
    return calls


DPO_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
               "logps/rejected", "logits/chosen", "logits/rejected")


@pytest.mark.parametrize(("loss_type", "extra"), [("simpo", {"simpo_gamma": 0.5, "beta": 2.0, "precompute_ref": True}),
                                                  ("cpo", {"cpo_alpha": 1.0}),
                                                  ("alphapo", {"alphapo_alpha": 0.25, "beta": 2.0})])
def test_reference_free_losses_load_and_run_no_reference(env, tiny_model_dir, tmp_path, reference_count, loss_type,
                                                         extra):
    settings, _ = env
    data = write_pairs(tmp_path / "held.jsonl", held_out=4)
    config = config_for(tiny_model_dir, data, run_name=loss_type, loss_type=loss_type, max_steps=2, eval_every=1,
                        **extra)
    result = train(config, settings, show_progress=False)
    assert result.state == "finished", result.error
    assert reference_count == []  # no reference model was loaded, copied or frozen
    described = f"none (reference-free: {loss_type})"
    assert read_status(result.run_dir)["reference"] == described
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["resolved"]["reference"] == described
    log = (result.run_dir / "train.log").read_text()
    assert f"reference: {described}" in log and "reference activations" not in log
    assert ("not used by the reference-free loss simpo: precompute_ref=True" in log) == (loss_type == "simpo")
    assert "reference log-probs" not in log
    records = train_records(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    wanted = DPO_METRICS + (("nll_loss",) if loss_type == "cpo" else ())
    for record in records:
        assert all(math.isfinite(record[key]) for key in wanted), record
    assert records[0]["loss"] != pytest.approx(LN2, abs=1e-3)  # not DPO's step 1: no reference in the margin
    evals = [r for r in read_metrics(result.run_dir) if "eval_loss" in r]
    assert evals and all(math.isfinite(evals[-1][f"eval_{key}"]) for key in wanted)


def test_a_reference_based_run_builds_its_reference(env, tiny_model_dir, reference_count):
    """The counter above can see a reference: the plain DPO run freezes one copy of the policy."""
    settings, data = env
    result = train(config_for(tiny_model_dir, data, run_name="dpo", max_steps=1), settings, show_progress=False)
    assert result.state == "finished" and len(reference_count) == 1


def test_orpo_through_the_cli_trains_without_a_reference_and_logs_trl_names(settings, tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", held_out=4)
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "CTLLM_ALLOWED_ROOTS": f"{settings.data_dir},{tiny_model_dir.parent},{tmp_path},{REPO / 'assets'}"}
    command = [sys.executable, "-m", "ctllm", "train", "--data-dir", str(settings.data_dir), "--model",
               str(tiny_model_dir), "--data", str(pairs), "--run_name", "orpo", "--loss_type", "orpo",
               "--orpo_lambda", "0.2", "--max_steps", "2", "--max_length", "48", "--lr", "1e-3", "--report_to", "none",
               "--final_eval_limit", "1", "--final_eval_max_new_tokens", "4", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = settings.runs_dir / "orpo"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (config["loss_type"], config["orpo_lambda"]) == ("orpo", 0.2)
    assert config["resolved"]["reference"] == read_status(run_dir)["reference"] == "none (reference-free: orpo)"
    records = train_records(run_dir)
    for key in DPO_METRICS + ("nll_loss", "log_odds_ratio", "log_odds_chosen"):
        assert all(math.isfinite(r[key]) for r in records), key
    # ORPO's loss is NLL − λ·mean log σ(log odds ratio); its rewards are λ × the per-token averaged log-probs.
    first = records[0]
    assert first["loss"] == pytest.approx(first["nll_loss"] - 0.2 * first["log_odds_ratio"], rel=1e-5)
    assert first["rewards/chosen"] == pytest.approx(0.2 * first["logps/chosen"], rel=1e-5)
    # The end-of-run evaluation scored the held-out pairs itself (the run kept no reference log-probs), as many as
    # final_eval_limit lets it.
    pairs = json.loads((run_dir / "eval.json").read_text())["pairs"]
    assert pairs["scored"] == pairs["count"] == 1 and pairs["overall"]["n"] == 1


def test_starting_from_an_sft_adapter_the_reference_is_that_adapter_frozen(env, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    settings, data = env
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))  # non-zero: differs from the bare base
    adapter.save_pretrained(tmp_path / "sft-adapter")
    config = config_for(tiny_model_dir, data, model=str(tmp_path / "sft-adapter"), run_name="from-adapter",
                        lora=True, max_steps=1, lr=1e-6)
    result = train(config, settings, show_progress=False)
    assert result.state == "finished"
    assert "frozen copy of the starting SFT adapter" in read_status(result.run_dir)["reference"]
    # Policy and reference both start as base + adapter: step 1 is exactly ln 2 (the bare base would not be).
    assert train_records(result.run_dir)[0]["loss"] == pytest.approx(LN2, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The run directory, end to end


def test_cpu_demo_preset_on_a_tiny_model_writes_every_run_file(settings, tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "CTLLM_ALLOWED_ROOTS": f"{settings.data_dir},{tiny_model_dir.parent},{REPO / 'assets'}"}
    command = [sys.executable, "-m", "ctllm", "train", "--data-dir", str(settings.data_dir), "--preset", "cpu-demo",
               "--model", str(tiny_model_dir), "--run_name", "demo", "--max_steps", "2", "--eval_every", "1",
               "--eval_batch_size", "8", "--max_length", "64", "--final_eval_limit", "2",
               "--final_eval_max_new_tokens", "4"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = settings.runs_dir / "demo"
    assert f"run directory: {run_dir}" in result.stderr
    for name in ("config.yaml", "metrics.jsonl", "status.json", "train.log", "data.parquet", "eval.parquet",
                 "eval.json", "eval.csv", "eval_answers.jsonl", "eval_charts.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints").is_dir()
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == str(tiny_model_dir) and config["precompute_ref"] is True
    assert config["resolved"]["data_hash"] and config["resolved"]["eval_split"].startswith("pairs with split == 'test'")
    assert config["languages"] == ["en"]
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 2
    assert status["phase"] == "evaluating"
    assert status["started"] and status["finished"] and status["pid"] and status["error"] is None
    assert status["dropped_pairs"] >= 0 and status["data_hash"] == config["resolved"]["data_hash"]
    summary = status["summary"]
    assert 0 <= summary["refusal_rate_harmful"] <= 1 and summary["harmful_prompts"] == summary["benign_prompts"] == 2
    assert 0 <= summary["sft_answer_rate_benign"] <= 1 and summary["final_eval"] == "eval.json"
    assert isinstance(summary["behaviour_goal_met"], bool)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    # English lists only (the preset trains on English pairs); every held-out English pair scored, SFT and DPO.
    assert [entry["name"] for entry in evaluation["prompts"]] == ["harmful_en", "benign_en"]
    assert evaluation["pairs"]["overall"]["n"] == evaluation["pairs"]["scored"] == status["eval_pairs"] > 0
    assert summary["preference_accuracy"] == evaluation["pairs"]["overall"]["model_preference_accuracy"]
    records = read_metrics(run_dir)
    train_rows = [r for r in records if "loss" in r]
    eval_rows = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2] and [r["step"] for r in eval_rows] == [1, 2]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "step", "epoch",
                "learning_rate", "grad_norm", "pairs_per_second", "tokens_per_second"):
        assert key in train_rows[0], key
    assert "eval_rewards/accuracies" in eval_rows[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert AutoTokenizer.from_pretrained(run_dir / "final").chat_template
    assert [run["name"] for run in list_runs(settings.runs_dir)] == ["demo"]


def test_sigterm_leaves_a_loadable_checkpoint(settings, tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", count=64)
    env = {**os.environ, "CTLLM_ALLOWED_ROOTS": f"{settings.data_dir},{tiny_model_dir.parent},{tmp_path}"}
    command = [sys.executable, "-m", "ctllm", "train", "--data-dir", str(settings.data_dir), "--model",
               str(tiny_model_dir), "--data", str(data), "--run_name", "term", "--batch_size", "1",
               "--max_length", "48", "--eval_fraction", "0", "--report_to", "none", "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    run_dir = settings.runs_dir / "term"
    deadline = time.time() + 300
    while time.time() < deadline and not train_records(run_dir) and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.stdout.read()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 3, output[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "cancelled" and "checkpoint saved" in status["error"]
    checkpoint = list_checkpoints(run_dir / "checkpoints")[-1]
    assert checkpoint.name == f"step-{status['step']:06d}"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == status["step"] and state["scheduler"]["last_epoch"] == status["step"]
    assert (checkpoint / "optimizer.safetensors").is_file() and (checkpoint / "rng.safetensors").is_file()
    shutil.rmtree(run_dir)


def test_the_training_loop_never_imports_the_evaluation():
    """The end-of-run evaluation comes in as a callback: no ctllm.dpo module imports ctllm.evaluate, even lazily."""
    import ast

    found = []
    for path in sorted((REPO / "ctllm" / "dpo").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {name}" for name in names if name.startswith("ctllm.evaluate")]
    assert found == []
