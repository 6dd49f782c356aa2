"""Synthesis speed on the embedded model (SmolLM2-135M-Instruct) on this machine: batched vs one prompt at a time.

Both runs synthesize the same English prompts of the shipped sample pairs (their chosen answers as the file's
answers, so only the weak model generates), greedy, into fresh collections, with the model loaded once before
either is timed. Prints candidate pairs (prompts handled) per minute for each and the speed-up against the goal:
batching should at least double the rate (issue 6, "Speed").

    python bench/bench_synth.py                   # 16 prompts, 48 new tokens, batch 8 (about two minutes here)
    python bench/bench_synth.py --prompts 32 --batch-size 16
    python bench/bench_synth.py --threads 1      # on a busy shared machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ctllm.models.embedded import ensure_embedded  # noqa: E402
from ctllm.models.loading import load_model  # noqa: E402
from ctllm.settings import Settings  # noqa: E402
from ctllm.synth import SynthOptions, synthesize  # noqa: E402

GOAL_SPEEDUP = 2.0
SAMPLE = REPO / "assets" / "pairs" / "sample_pairs.jsonl"


def write_prompts(path: Path, count: int) -> Path:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    english = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in rows if r.get("language") == "en"][:count]
    path.write_text("".join(json.dumps(r) + "\n" for r in english), encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy, the same answers in both runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a shared, busy machine 1 thread was 4x "
                             "faster than 2 here: spinning threads wait for each other")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "test-models",
                        help="where the converted embedded model lives (shared with the tests)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = ensure_embedded(args.models_dir)
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        root = Path(tmp)
        settings = Settings(data_dir=root / "data", allowed_roots=(folder.parent, root)).ensure_dirs()
        weak = load_model(str(folder), settings)
        prompts = write_prompts(root / "prompts.jsonl", args.prompts)
        print(f"embedded model, {args.prompts} English prompts, {args.max_new_tokens} new tokens at most, "
              f"temperature {args.temperature}, torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        rates = {}
        for size in (1, args.batch_size):
            options = SynthOptions(str(prompts), f"bench-batch-{size}", weak=str(folder), batch_size=size,
                                   max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=0)
            started = time.perf_counter()
            summary = synthesize(options, settings, show_progress=False, models={str(folder): weak})
            seconds = time.perf_counter() - started
            rates[size] = 60 * summary.processed / seconds
            dropped = ", ".join(f"{k} {v}" for k, v in summary.filtered.items() if v) or "none"
            print(f"batch {size:>2}: {summary.processed} prompts in {seconds:6.1f} s = {rates[size]:6.1f} pairs/min "
                  f"({summary.added} kept, dropped: {dropped})")
    speedup = rates[args.batch_size] / rates[1]
    verdict = "met" if speedup >= GOAL_SPEEDUP else "NOT met"
    print(f"batched (batch {args.batch_size}) vs one at a time (baseline): {rates[args.batch_size]:.1f} vs "
          f"{rates[1]:.1f} pairs/min = {speedup:.2f}x (goal >= {GOAL_SPEEDUP:.1f}x: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
