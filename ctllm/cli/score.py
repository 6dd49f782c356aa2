"""``python -m ctllm score``: per-pair log-probs under a policy and its reference, and the implicit reward margin.

Writes one JSON line per pair: summed completion log-probs under both models, the rewards β·(π − ref) and the
margin β·((π_c − ref_c) − (π_r − ref_r)). For a store collection the margins are also saved in the store under
``--name``, so the Pairs tab can sort by them (lowest first: likely mislabels).

With ``--run-dir`` (a background job's folder) the command also keeps a status.json there: state, and the phase
("loading", then "scoring" with pairs done / total over both models), as a training run does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ctllm.errors import UserError
from ctllm.pairs.readers import read_pairs
from ctllm.pairs.schema import Pair
from ctllm.pairs.store import Store
from ctllm.runs import RunDir, now_iso
from ctllm.settings import Settings

NAME = "score"
HELP = "score pairs with a policy and a reference model: log-probs and implicit reward margins (JSONL)"
SHOW_LOWEST = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="policy model spec (default: the DPO model setting)")
    parser.add_argument("--ref", default=None, help="reference model spec (default: the SFT model setting)")
    parser.add_argument("--pairs", required=True, help="a pairs file (any format the importer reads) or a collection")
    parser.add_argument("--split", default=None, help="for a collection: score only this split (e.g. test)")
    parser.add_argument("--beta", type=float, required=True, help="β of the implicit reward")
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    parser.add_argument("--max-length", type=int, default=1024, help="prompt + completion tokens (default 1024)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward (default 8)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    parser.add_argument("--name", default=None, help="score name in the store (default: 'MODEL vs REF β=B')")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep a status.json (state, progress) there")


def load_pairs(source: str, settings: Settings, split: str | None) -> tuple[list[Pair], list[int] | None, str | None]:
    """(pairs, their store ids or None, the collection name or None) for a file path or a collection name/id."""
    path = Path(source).expanduser()
    if path.is_file() or path.is_dir():
        result = read_pairs(path, max_field_chars=settings.max_field_chars)
        for error in result.errors[:5]:
            print(f"skipped: {error}", file=sys.stderr)
        if len(result.errors) > 5:
            print(f"skipped {len(result.errors)} bad rows in all", file=sys.stderr)
        return result.pairs, None, None
    if settings.db_path.is_file():
        with Store(settings.db_path) as store:
            collection = store.find_collection(source)
            if collection is None and source.isdigit():
                collection = store.find_collection(int(source))
            if collection is not None:
                stored = list(store.iter_pairs(collection, split=split))
                return [s.pair for s in stored], [s.id for s in stored], collection.name
    raise UserError(f"--pairs {source!r}: no such file, and no collection of that name in {settings.db_path}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Without --run-dir every status write is a no-op (and reads find nothing under /dev/null).
    status = RunDir(args.run_dir or Path(os.devnull), writer=args.run_dir is not None)
    if args.run_dir is not None:
        args.run_dir.mkdir(parents=True, exist_ok=True)
    status.update_status(state="running", started=now_iso(), finished=None, error=None)
    try:
        code = _score(args, settings, status)
    except BaseException as error:
        state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
        status.update_status(state=state, error=str(error), finished=now_iso())
        raise
    status.update_status(state="finished", finished=now_iso())
    return code


def _score(args: argparse.Namespace, settings: Settings, status: RunDir) -> int:
    if args.beta <= 0:
        raise UserError(f"--beta must be > 0, got {args.beta}")
    if args.batch_size < 1 or args.max_length < 2:
        raise UserError("--batch-size must be >= 1 and --max-length >= 2")
    pairs, pair_ids, collection = load_pairs(args.pairs, settings, args.split)
    if args.limit is not None:
        pairs = pairs[: args.limit]
        pair_ids = pair_ids[: args.limit] if pair_ids is not None else None
    if not pairs:
        raise UserError(f"--pairs {args.pairs!r}: no pairs to score")

    # Lazy: importing ctllm.dpo.pair_scores (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.dpo.pair_scores import score_pairs
    from ctllm.models.loading import load_model
    from ctllm.models.scoring import check_same_tokenizer

    model_spec = args.model or settings.dpo_model
    ref_spec = args.ref or settings.sft_model
    status.set_phase("loading")
    policy = load_model(model_spec, settings)
    reference = load_model(ref_spec, settings)
    check_same_tokenizer(policy, reference)

    bars: dict[str, tqdm] = {}
    report = status.phase_progress("scoring")

    def progress(role: str, done: int, total: int) -> None:
        bar = bars.get(role) or bars.setdefault(role, tqdm(total=total, desc=role, unit=" pairs", file=sys.stderr))
        bar.update(done - bar.n)
        report(done + (total if role == "reference" else 0), 2 * total)  # the policy's pass, then the reference's

    try:
        scores, tokenized = score_pairs(
            policy.model,
            reference.model,
            policy.tokenizer,
            pairs,
            args.beta,
            args.max_length,
            args.batch_size,
            progress,
        )
    finally:
        for bar in bars.values():
            bar.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        by_index = {s.index: s for s in scores}
        for index in range(len(pairs)):
            row: dict[str, Any] = {"index": index}
            if pair_ids is not None:
                row["pair_id"] = pair_ids[index]
            score = by_index.get(index)
            if score is None:
                row.update(dropped=True, reason=f"the prompt alone fills --max-length {args.max_length}")
            else:
                row.update(score.to_dict())
            out.write(json.dumps(row, ensure_ascii=False) + "\n")

    print(f"scored {len(scores)} of {len(pairs)} pairs ({tokenized.dropped} dropped, {tokenized.truncated} truncated)")
    if scores:
        margins = [s.margin for s in scores]
        positive = sum(m > 0 for m in margins) / len(margins)
        print(f"mean margin {sum(margins) / len(margins):.4f}; margin > 0 for {positive:.1%} of pairs")
        lowest = sorted(scores, key=lambda s: s.margin)[:SHOW_LOWEST]
        names = [f"pair {pair_ids[s.index]}" if pair_ids else f"#{s.index}" for s in lowest]
        print("lowest margins: " + ", ".join(f"{n} ({s.margin:.3f})" for n, s in zip(names, lowest, strict=True)))
    if collection is not None and pair_ids is not None:
        name = args.name or f"{policy.spec.label} vs {reference.spec.label} β={args.beta:g}"
        rows = [(pair_ids[s.index], s.margin, s.chosen_reward, s.rejected_reward) for s in scores]
        with Store(settings.db_path) as store:
            saved = store.save_scores(name, rows)
        print(f"saved {saved} scores to collection {collection!r} as {name!r}")
    print(f"wrote {args.out}")
    return 0
