"""``python -m ctllm synth --prompts FILE --collection NAME [--weak SPEC] [--strong SPEC] ...``

Chosen = the file's own answer (else the strong model's), rejected = the weak model's; filtered and stored in a
collection of kind ``synth``. Rerunning the same command continues an interrupted run without duplicating a pair.

Exit codes: 0 finished, 2 bad input, 3 cancelled (SIGTERM or Ctrl-C after the current batch; rerun to continue).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ctllm.settings import Settings
from ctllm.synth.filters import NEAR_IDENTICAL_THRESHOLD
from ctllm.synth.run import SynthOptions, synthesize

NAME = "synth"
HELP = "synthesize preference pairs: the data's (or a strong model's) answer as chosen, a weak model's as rejected"
EXIT_CODES = {"finished": 0, "cancelled": 3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True,
                        help="alpaca / sharegpt JSON(L), CSV, Parquet, or a .txt file with one prompt a line")
    parser.add_argument("--collection", required=True, help="collection to add the pairs to (created when missing)")
    parser.add_argument("--weak", default="embedded", help="model writing the rejected answers (default embedded)")
    parser.add_argument("--strong", default=None, help="model writing chosen answers for prompts that have none")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=256,
                        help="answer length limit; answers reaching it are dropped as cut off (default 256)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the earlier run's, or new)")
    parser.add_argument("--limit", type=int, default=None, help="handle at most N new prompts in this invocation")
    parser.add_argument("--near-threshold", type=float, default=NEAR_IDENTICAL_THRESHOLD,
                        help=f"drop pairs whose normalised edit distance is below this (default "
                             f"{NEAR_IDENTICAL_THRESHOLD})")
    parser.add_argument("--split", default="train", help="split of the new pairs (default train)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 is faster on a busy shared CPU)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="write status.json there (as a background job does)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--resume", action="store_true",
                        help="accepted for the job manager's resume; every run continues where the last stopped")


def options_from_args(args: argparse.Namespace) -> SynthOptions:
    return SynthOptions(
        prompts=str(args.prompts), collection=args.collection, weak=args.weak, strong=args.strong,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, limit=args.limit, near_threshold=args.near_threshold, split=args.split,
        threads=args.threads,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = options_from_args(args).validate()
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        print(f"{signal.Signals(signum).name}: stopping after the current batch", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = synthesize(options, settings, run_dir=args.run_dir, show_progress=not args.no_progress, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in summary.lines():
        print(line)
    return EXIT_CODES.get(summary.state, 1)
