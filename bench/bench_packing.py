"""Packed (padding-free) forward vs the padded forwards, same batches, same process, one sitting.

Embedded SmolLM2-135M-Instruct, fp32 on the CPU with lean activations (as the engine trains), batch 4, max_length
256, the first 36 training pairs of ``assets/pairs/sample_pairs.jsonl`` cut into batches as the engine cuts them.
Each timed step is one forward and backward of the policy (no optimizer step, the same for every forward):

- ``padded``: 2B rows of prompt + answer, right-padded (:func:`ctllm.dpo.logps.concatenated_forward`);
- ``shared``: each prompt once, its cache under both answers (:mod:`ctllm.dpo.shared_prompt`, the engine's default);
- ``packed``: the pairs in one row, each prompt once, no padding (:mod:`ctllm.dpo.packing`).

The forwards take turns batch by batch (the order rotates), so a shared machine's load falls on all of them alike;
the first batch is a warm-up. Prints s/step (median and mean), the padding share of the padded batches, the tokens
each forward reads, the largest |difference| of the packed log-probs from the padded ones, and ``uptime``.

    python bench/bench_packing.py [--pairs 36] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.train_throughput import BATCH, MAX_LENGTH, bench_pairs, model_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=36)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctllm.dpo.batching import collate, length_grouped_batches
    from ctllm.dpo.lean_model import check_lean
    from ctllm.dpo.logps import concatenated_forward, logps_difference
    from ctllm.dpo.packing import pack, packed_forward
    from ctllm.dpo.shared_prompt import shared_prompt_forward, tokens_seen
    from ctllm.dpo.tokenize import tokenize_pairs

    torch.set_num_threads(args.threads)
    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pad = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    items = tokenize_pairs(tokenizer, bench_pairs(args.pairs), MAX_LENGTH).items
    lean, how = check_lean(model, items, pad)
    model.train()
    batches = [[items[i] for i in b] for b in length_grouped_batches(items, BATCH, seed=42, epoch=0)]
    forwards = {
        "padded": lambda m, b: concatenated_forward(m, collate(b, pad)),
        "shared": lambda m, b: shared_prompt_forward(m, b, pad),
        "packed": lambda m, b: packed_forward(m, b),
    }
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    worst = 0.0
    for k, batch in enumerate(batches):
        names = list(forwards)
        names = names[k % len(names):] + names[: k % len(names)]
        for name in names:
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            out = forwards[name](model, batch)
            (out.chosen_logps.sum() - out.rejected_logps.sum()).backward()
            elapsed = time.perf_counter() - started
            print(f"  batch {k} {name}: {elapsed:.2f} s{'' if k else ' (warm-up)'}", flush=True)
            if k:  # the first batch warms up
                seconds[name].append(elapsed)
        with torch.no_grad():
            worst = max(worst, logps_difference(concatenated_forward(model, collate(batch, pad)),
                                                packed_forward(model, batch)))

    cells = sum(collate(b, pad)["attention_mask"].numel() for b in batches[1:])
    real = sum(int(collate(b, pad)["attention_mask"].sum()) for b in batches[1:])
    shared_cells = sum(2 * len(b) * (max(len(i.prompt_ids) for i in b)
                                     + max(max(len(i.chosen_ids), len(i.rejected_ids)) for i in b))
                       - len(b) * max(len(i.prompt_ids) for i in b) for b in batches[1:])
    packed_cells = sum(pack(b).input_ids.numel() for b in batches[1:])
    print(f"embedded model, fp32, {args.threads} threads, lean activations: {lean.active} ({how})")
    print(f"{len(items)} pairs, batch {BATCH}, max_length {MAX_LENGTH}; {len(batches) - 1} timed steps "
          "(forward + backward)")
    print(f"padding share of the padded batches: {1 - real / cells:.1%} ({cells - real} of {cells} cells); "
          f"rows read once-per-prompt: {sum(tokens_seen(b, True) for b in batches[1:])} tokens")
    print(f"max |packed - padded| summed log-probs: {worst:.2e} nats")
    print(f"{'forward':<8}{'tokens read':>12}{'median s/step':>15}{'mean s/step':>13}{'vs padded':>11}")
    base = statistics.median(seconds["padded"])
    for name, cells_read in (("padded", cells), ("shared", shared_cells), ("packed", packed_cells)):
        median = statistics.median(seconds[name])
        print(f"{name:<8}{cells_read:>12}{median:>15.3f}{statistics.mean(seconds[name]):>13.3f}"
              f"{base / median:>10.2f}x")
    print("uptime:", os.popen("uptime").read().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
