"""DPO training throughput: this engine vs TRL 1.16 ``DPOTrainer``, same pairs, same machine, one run.

Embedded SmolLM2-135M-Instruct, fp32 on the CPU, batch 4, max_length 256, the first ``4 x steps`` training
pairs of ``assets/pairs/sample_pairs.jsonl`` for both. Each engine runs in its own subprocess (so peak RSS is
its own); the first step of each is a warm-up and not timed. Prints pairs/s and tokens/s of both, the ratio
(goal >= 1.5x), step-1 ``logps/chosen`` / ``logps/rejected`` of this engine's log-prob code against TRL's on
TRL's first batch (goal: relative difference <= 1e-4), step-1 loss (goal ln 2), and peak RSS of full
fine-tuning (goal <= 3 GB) and LoRA (goal <= 2 GB; its forwards cut at 512 tokens: ``max_forward_tokens``).

TRL is needed only here, never at run time: ``pip install trl==1.16.0``.

    python bench/train_throughput.py [--steps 4] [--skip-trl]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH = 4
MAX_LENGTH = 256
BETA = 0.1
LR = 5e-6
THREADS = 2
GOALS = {"ratio": 1.5, "logps_rel": 1e-4, "rss_full_gb": 3.0, "rss_lora_gb": 2.0}
# LoRA's gradients are a few MB, so splitting a step's forwards bounds its memory at no gradient cost (same steps of
# BATCH pairs, same gradient); full fine-tuning would keep 0.5 GB of gradients across the pieces, so it runs whole.
LORA_FORWARD_TOKENS = 512


def bench_pairs(count: int) -> list:
    from ctllm.pairs.readers import read_pairs

    pairs = read_pairs(REPO / "assets" / "pairs" / "sample_pairs.jsonl").pairs
    return [p for p in pairs if p.meta.get("split") != "test"][:count]


def model_dir() -> Path:
    from ctllm.models.embedded import ensure_embedded
    from ctllm.settings import Settings

    cache = os.environ.get("CTLLM_TEST_MODEL_CACHE")
    return ensure_embedded(Path(cache) if cache else Settings.from_env().models_dir)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # ru_maxrss is in KiB on Linux


def real_tokens(pairs: list, folder: Path) -> int:
    """Non-padding tokens of both rows of each pair, as both engines tokenize them (TRL's rules)."""
    from transformers import AutoTokenizer

    from ctllm.dpo.tokenize import tokenize_pairs

    items = tokenize_pairs(AutoTokenizer.from_pretrained(folder), pairs, MAX_LENGTH).items
    return sum(2 * len(i.prompt_ids) + len(i.chosen_ids) + len(i.rejected_ids) for i in items)


# ---------------------------------------------------------------------------------------------------------------
# Workers (each in its own process)


def worker_trl(steps: int) -> dict:
    import torch

    try:
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        return {"error": "TRL is not installed: pip install trl==1.16.0 (benchmark only)"}
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(THREADS)
    folder = model_dir()
    pairs = bench_pairs(BATCH * steps)
    rows = [{"prompt": [dict(m) for m in p.prompt], "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if not step_ends:
                step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=BATCH, max_length=MAX_LENGTH, max_steps=steps,
            learning_rate=LR, beta=BETA, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
            bf16=False, gradient_checkpointing=False, train_sampling_strategy="sequential", seed=0,
            disable_tqdm=True, dataloader_num_workers=0,
        )
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=AutoTokenizer.from_pretrained(folder), callbacks=[Clock()])
        trainer.train()
    first = next(r for r in trainer.state.log_history if r.get("step") == 1 and "loss" in r)
    durations = [b - a for a, b in zip(step_ends, step_ends[1:], strict=False)]
    return {"step_seconds": durations, "loss_1": first["loss"], "logps_chosen_1": first["logps/chosen"],
            "logps_rejected_1": first["logps/rejected"], "peak_rss_gb": peak_rss_gb()}


def worker_engine(steps: int, lora: bool, forward_tokens: int = 0) -> dict:
    import torch

    from ctllm.dpo.config import TrainConfig
    from ctllm.dpo.snapshot import write_snapshot
    from ctllm.dpo.train import train
    from ctllm.runs import read_metrics
    from ctllm.settings import Settings

    torch.set_num_threads(THREADS)
    folder = model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.parquet"
        write_snapshot(bench_pairs(BATCH * steps), data)
        settings = Settings(data_dir=Path(tmp) / "data", device="cpu", dtype="float32",
                            allowed_roots=(Path(tmp), folder.parent)).ensure_dirs()
        config = TrainConfig(model=str(folder), data=str(data), batch_size=BATCH, max_length=MAX_LENGTH, lr=LR,
                             beta=BETA, max_steps=steps, eval_fraction=0.0, precompute_ref=True, lora=lora,
                             report_to="none", seed=0, run_name="bench", max_forward_tokens=forward_tokens,
                             final_eval=False)  # training only: the end-of-run evaluation loads the reference again
        started = time.perf_counter()
        result = train(config, settings, show_progress=False)
        total = time.perf_counter() - started
        log = (result.run_dir / "train.log").read_text()
        records = [r for r in read_metrics(result.run_dir) if "loss" in r]
    reference_seconds = sum(float(line.split(" ready in ")[1].split(" s")[0])
                            for line in log.splitlines() if " ready in " in line)
    seconds = [BATCH / r["pairs_per_second"] for r in records]  # every step holds BATCH pairs here
    tokens = [r["tokens_per_second"] * s for r, s in zip(records, seconds, strict=True)]
    return {"step_seconds": seconds, "step_tokens": tokens,
            "loss_1": records[0]["loss"], "reference_seconds": reference_seconds, "wall_seconds": total,
            "state": result.state, "peak_rss_gb": peak_rss_gb()}


def worker_logps(steps: int) -> dict:
    """This engine's log-prob code on TRL's first batch (the first 4 pairs: TRL samples them in order)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctllm.dpo.batching import collate
    from ctllm.dpo.lean_model import make_lean
    from ctllm.dpo.logps import concatenated_forward
    from ctllm.dpo.tokenize import tokenize_pairs

    torch.set_num_threads(THREADS)
    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    items = tokenize_pairs(tokenizer, bench_pairs(BATCH), MAX_LENGTH).items
    make_lean(model)  # the engine trains with lean activations: check the numbers of that forward
    with torch.no_grad():
        out = concatenated_forward(model, collate(items, tokenizer.pad_token_id))
    return {"logps_chosen_1": float(out.chosen_logps.mean()), "logps_rejected_1": float(out.rejected_logps.mean())}


def run_worker(name: str, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(steps)], cwd=REPO,
                            env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": f"worker {name} failed (exit {result.returncode}): {result.stderr[-2000:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------------------------
# Report


def rate(pairs: int, tokens: int, seconds: float) -> tuple[float, float]:
    return pairs / seconds, tokens / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="steps per engine; the first is a warm-up")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--worker", choices=("trl", "engine-full", "engine-lora", "logps"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        workers = {"trl": lambda: worker_trl(args.steps), "engine-full": lambda: worker_engine(args.steps, False),
                   "engine-lora": lambda: worker_engine(args.steps, True, LORA_FORWARD_TOKENS),
                   "logps": lambda: worker_logps(args.steps)}
        print(json.dumps(workers[args.worker]()))
        return 0

    steps = args.steps
    folder = model_dir()
    pairs = bench_pairs(BATCH * steps)
    timed_pairs = pairs[BATCH:]  # step 1 is the warm-up
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; torch threads {THREADS}")
    print(f"pairs: the first {len(pairs)} training pairs of sample_pairs.jsonl, batch {BATCH}, max_length "
          f"{MAX_LENGTH}, fp32, {steps} steps (first untimed)\n")

    results = {"engine-full": run_worker("engine-full", steps), "engine-lora": run_worker("engine-lora", steps)}
    if not args.skip_trl:
        results["trl"] = run_worker("trl", steps)
        results["logps"] = run_worker("logps", steps)
    for name, value in results.items():
        if "error" in value:
            print(f"{name}: {value['error']}")
    print(f"{'engine':<26}{'s/step':>9}{'pairs/s':>10}{'tokens/s':>10}{'peak RSS':>10}")

    # Both engines train on the same pairs, but this engine groups them into steps by length, so its timed steps
    # (all but the first) hold other pairs than TRL's: tokens/s is the like-for-like figure, pairs/s is printed too.
    def row(label: str, seconds: float, count: int, tokens: int, rss: float | None) -> tuple[float, float]:
        pairs_s, tokens_s = rate(count, tokens, seconds)
        rss_text = f"{rss:.2f} GB" if rss is not None else ""
        print(f"{label:<26}{seconds / (count / BATCH):>9.2f}{pairs_s:>10.3f}{tokens_s:>10.1f}{rss_text:>10}")
        return pairs_s, tokens_s

    trl_tokens = real_tokens(timed_pairs, folder)
    measured = {}
    for name in ("trl", "engine-full", "engine-lora"):
        value = results.get(name, {})
        if "step_seconds" not in value:
            continue
        seconds = sum(value["step_seconds"][1:])
        timed_tokens = round(sum(value["step_tokens"][1:])) if "step_tokens" in value else trl_tokens
        label = {"trl": "TRL 1.16 DPOTrainer (full)", "engine-full": "this engine, full FT",
                 "engine-lora": f"this engine, LoRA (fwd {LORA_FORWARD_TOKENS})"}[name]
        measured[name] = row(label, seconds, len(timed_pairs), timed_tokens, value.get("peak_rss_gb"))
        if name != "trl":
            share = value["reference_seconds"] * len(timed_pairs) / len(pairs)
            measured[name + "+ref"] = row("  + its reference pass", seconds + share, len(timed_pairs), timed_tokens,
                                          None)

    print()
    if "trl" in measured and "engine-full" in measured:
        for label, key in (("training steps", "engine-full"), ("with the one-off reference pass", "engine-full+ref")):
            pairs_ratio = measured[key][0] / measured["trl"][0]
            tokens_ratio = measured[key][1] / measured["trl"][1]
            verdict = "OK" if tokens_ratio >= GOALS["ratio"] else "MISSED"
            print(f"speed ratio, full FT, {label}: {tokens_ratio:.2f}x TRL in tokens/s, {pairs_ratio:.2f}x in pairs/s "
                  f"(goal >= {GOALS['ratio']}x) {verdict}")
    if "logps" in results and "logps_chosen_1" in results.get("trl", {}):
        trl, ours = results["trl"], results["logps"]
        for key in ("logps_chosen_1", "logps_rejected_1"):
            rel = abs(ours[key] - trl[key]) / abs(trl[key])
            print(f"step-1 {key[:-2].replace('_', '/')}: engine {ours[key]:.6f}  TRL {trl[key]:.6f}  rel diff "
                  f"{rel:.2e} (goal <= {GOALS['logps_rel']:.0e}) {'OK' if rel <= GOALS['logps_rel'] else 'MISSED'}")
        print(f"step-1 loss TRL: {trl['loss_1']:.6f}")
    for name in ("engine-full", "engine-lora"):
        value = results.get(name, {})
        if "loss_1" in value:
            ok = abs(value["loss_1"] - math.log(2)) < 1e-4
            print(f"step-1 loss {name}: {value['loss_1']:.6f} (ln 2 = {math.log(2):.6f}) {'OK' if ok else 'MISSED'}")
    for name, goal in (("engine-full", GOALS["rss_full_gb"]), ("engine-lora", GOALS["rss_lora_gb"])):
        rss = results.get(name, {}).get("peak_rss_gb")
        if rss is not None:
            print(f"peak RSS {name}: {rss:.2f} GB (goal <= {goal} GB) {'OK' if rss <= goal else 'MISSED'}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
