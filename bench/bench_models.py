"""Embedded-model figures on this machine: load from cache, first token, tokens/s, batching, two streams at once.

    python bench/bench_models.py [--data-dir DIR] [--tokens 128] [--threads N]

Prints each figure next to its goal (issue 2: load <= 3 s after the first time; issue 4: first token <= 1 s, both
chat sides together <= 1.3x one side alone). Run it on a quiet machine: other processes on 2 cores skew every
number here (torch's OpenMP threads spin badly when the cores are oversubscribed).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctllm.models.generate import GenerationParams, generate_batch, stream_chat
from ctllm.models.loading import load_model
from ctllm.settings import Settings

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "Explain photosynthesis in two sentences.",
        "Give three tips for learning a new language.",
        "What is the difference between weather and climate?",
        "Write a haiku about the sea.",
        "Why is the sky blue?",
        "Name four planets of the solar system.",
        "How do I boil an egg?",
        "What does a compiler do?",
    )
]


def timed_stream(loaded, params: GenerationParams, out: dict, key: str) -> None:
    start = time.perf_counter()
    first = None
    text = ""
    for partial in stream_chat(loaded, PROMPT, params):
        text = partial
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    tokens = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    out[key] = (first or total, total, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings.from_env(data_dir=Path(args.data_dir).resolve() if args.data_dir else None).ensure_dirs()
    print(f"torch threads: {torch.get_num_threads()}")

    load_model("embedded", settings)  # converts once if needed; the figure below is the cached load
    start = time.perf_counter()
    left = load_model("embedded", settings)
    print(f"load from cache: {time.perf_counter() - start:.2f} s (goal <= 3 s)")
    right = load_model("embedded", settings)

    params = GenerationParams(temperature=0, max_new_tokens=args.tokens)
    results: dict = {}
    timed_stream(left, params, results, "alone")
    first, total, tokens = results["alone"]
    rate = tokens / total
    print(f"one side: first token {first:.2f} s (goal <= 1 s), {tokens} tokens in {total:.2f} s = {rate:.1f}/s")

    pairs = ((left, "l"), (right, "r"))
    sides = [threading.Thread(target=timed_stream, args=(m, params, results, key)) for m, key in pairs]
    start = time.perf_counter()
    for thread in sides:
        thread.start()
    for thread in sides:
        thread.join()
    both = time.perf_counter() - start
    print(
        f"two sides at once: {both:.2f} s = {both / total:.2f}x one side (goal <= 1.3x); first tokens "
        f"{results['l'][0]:.2f} s and {results['r'][0]:.2f} s"
    )

    short = GenerationParams(temperature=0, max_new_tokens=48)
    start = time.perf_counter()
    for prompt in PROMPTS:
        generate_batch(left, [prompt], short)
    single = time.perf_counter() - start
    start = time.perf_counter()
    generate_batch(left, PROMPTS, short)
    batched = time.perf_counter() - start
    print(
        f"{len(PROMPTS)} answers of <= 48 tokens: one at a time {single:.2f} s, batched {batched:.2f} s "
        f"({single / batched:.2f}x; synthesis goal >= 2x)"
    )


if __name__ == "__main__":
    main()
