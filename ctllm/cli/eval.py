"""``python -m ctllm eval --model SPEC --ref SPEC --pairs COLLECTION_OR_FILE [--prompts FILE ...] [--split test]
[--out DIR] [--beta B]``

Before/after numbers for a DPO model (``--model``) and its SFT reference (``--ref``): preference accuracy on
held-out pairs, the DPO implicit reward's accuracy and margin, refusal and answer rates on prompt lists (greedy).
Prints a table; writes eval.json, eval.csv, eval_answers.jsonl and eval_charts.html into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ctllm.evaluate.report import write_csv
from ctllm.evaluate.run import EvalOptions, evaluate, print_report
from ctllm.settings import Settings

NAME = "eval"
HELP = "evaluate a DPO model against its SFT reference: preference accuracy, implicit rewards, refusal rates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="the DPO model spec (default: the DPO model setting)")
    parser.add_argument("--ref", default=None, help="the SFT / reference model spec (default: the SFT model setting)")
    parser.add_argument("--pairs", default=None, help="held-out pairs: a pairs file or a collection (NAME)")
    parser.add_argument("--split", default="test", help="only pairs of this split (default test; 'all': every pair)")
    parser.add_argument("--prompts", nargs="*", default=None, metavar="[harmful:|benign:]FILE",
                        help="prompt lists, one prompt a line (default: the four in assets/prompts; none: no lists)")
    parser.add_argument("--beta", type=float, default=0.1, help="β of the implicit reward (default 0.1)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <data>/evals/<time>)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV here")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length for prompt lists (default 64)")
    parser.add_argument("--limit", type=int, default=None, help="at most N pairs and N prompts per list")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts or pairs per forward (default 8)")
    parser.add_argument("--max-length", type=int, default=1024, help="prompt + answer tokens when scoring pairs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 is faster on a busy shared CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = EvalOptions(
        model=args.model or settings.dpo_model, ref=args.ref or settings.sft_model, pairs=args.pairs,
        split=args.split, prompts=None if args.prompts is None else tuple(args.prompts), beta=args.beta,
        max_new_tokens=args.max_new_tokens, limit=args.limit, batch_size=args.batch_size, max_length=args.max_length,
    ).validate()
    if args.threads > 0:
        # Lazy: importing torch takes seconds; start-up (the app, the CLI) does not need it.
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or settings.data_dir / "evals" / time.strftime("%Y%m%d-%H%M%S")
    result = evaluate(options, settings, out, show_progress=not args.no_progress)
    print_report(result, out)
    if args.csv is not None:
        print(f"table written to {write_csv(result, args.csv)}")
    return 0
