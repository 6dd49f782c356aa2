"""``python -m ctllm leaderboard``: Bradley–Terry ratings of the models from the Chat tab's votes, with bootstrap
95 % intervals and the head-to-head win rates (see ``ctllm.evaluate.arena``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ctllm.errors import UserError
from ctllm.evaluate.arena import ALL, DEFAULT_ROUNDS, Leaderboard, leaderboard, select
from ctllm.evaluate.arena_votes import CHAT_VOTES_COLLECTION, chat_battles
from ctllm.pairs.store import Store
from ctllm.settings import Settings

NAME = "leaderboard"
HELP = "ratings of the chat models from the votes (Bradley–Terry, bootstrap 95 % intervals, win-rate matrix)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, help="the store's SQLite file (default: <data dir>/studio.sqlite)")
    parser.add_argument("--collection", default=CHAT_VOTES_COLLECTION, help="votes collection (default: %(default)s)")
    parser.add_argument("--all-votes", action="store_true", help="count votes not given in blind mode too")
    parser.add_argument("--language", default=ALL, help="only pairs in this language (en, zh, other; default: all)")
    parser.add_argument("--category", default=ALL, help="only prompts of this category (default: all)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_ROUNDS, help="bootstrap rounds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 or more, not {args.bootstrap}")
    db = args.db or settings.ensure_dirs().db_path
    if args.db is not None and not args.db.is_file():
        raise UserError(f"--db {args.db}: no such file")
    store = Store(db)
    try:
        votes = chat_battles(store, args.collection)
    finally:
        store.close()
    chosen = select(votes.battles, args.language, args.category, blind_only=not args.all_votes)
    board = leaderboard(chosen, rounds=args.bootstrap, seed=args.seed)
    left_out = len(votes.battles) - len(chosen)
    if args.json:
        report = board.as_dict() | {
            "filters": {"language": args.language, "category": args.category, "blind_only": not args.all_votes},
            "left_out_by_filters": left_out,
            "skipped": dict(votes.skipped),
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(format_leaderboard(board))
    filters = f"language {args.language}, category {args.category}, " + (
        "all votes" if args.all_votes else "blind votes only (--all-votes for every vote)")
    print(f"\n{board.battles} votes ({filters}); {left_out} left out by the filters; "
          f"{board.rounds} bootstrap rounds, seed {board.seed}")
    if votes.skipped:
        print("not counted: " + ", ".join(f"{reason} {n}" for reason, n in votes.skipped.items()))
    return 0


def _number(x: float) -> str:
    return f"{x:.0f}" if math.isfinite(x) else "–"


def format_leaderboard(board: Leaderboard) -> str:
    if not board.ratings:
        return "no votes to rate yet"
    width = max(len("model"), *(len(r.model) for r in board.ratings))
    lines = [f"{'rank':>4}  {'model':<{width}}  {'rating':>6}  {'95 % interval':>13}  {'votes':>5}  {'W-L-T':>9}"]
    for r in board.ratings:
        interval = f"{_number(r.lower)}–{_number(r.upper)}"
        lines.append(f"{r.rank:>4}  {r.model:<{width}}  {_number(r.rating):>6}  {interval:>13}  {r.battles:>5}  "
                     f"{f'{r.wins}-{r.losses}-{r.ties}':>9}")
    lines.append("\nwin rate of the row's model against the column's (ties left out):")
    names = [str(i + 1) for i in range(len(board.ratings))]
    lines.append(" " * (width + 6) + "  ".join(f"{n:>5}" for n in names))
    for i, (r, row) in enumerate(zip(board.ratings, board.win_rate, strict=True)):
        cells = "  ".join(f"{x:>5.0%}" if x is not None else f"{'·':>5}" for x in row)
        lines.append(f"{i + 1:>4}  {r.model:<{width}}{cells}")
    return "\n".join(lines)
