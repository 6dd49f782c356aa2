"""``python -m ctllm import FILE_OR_ID --collection NAME``: read preference pairs into the store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tqdm import tqdm

from ctllm.errors import UserError
from ctllm.pairs.formats import FORMATS, PKU_CHOICES
from ctllm.pairs.importer import ImportSummary, import_pairs, import_rated
from ctllm.pairs.readers import UNPAIRED_FORMAT, UnpairedFile
from ctllm.pairs.store import KINDS, Store
from ctllm.settings import Settings

NAME = "import"
HELP = ("import preference pairs (or unpaired rated answers: prompt/completion/label) from a file, a datasets "
        "folder or (with --hub) a hub dataset")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a .json/.jsonl/.parquet/.csv/.tsv file (optionally .gz), a datasets folder, "
                        "or a hub dataset id with --hub")
    parser.add_argument("--collection", required=True, help="collection to add to (created when missing)")
    parser.add_argument("--format", dest="fmt", choices=sorted((*FORMATS, UNPAIRED_FORMAT)),
                        help=f"skip format detection ({UNPAIRED_FORMAT}: TRL's unpaired prompt/completion/label rows, "
                        "for KTO; detected too)")
    parser.add_argument("--map", dest="mapping", metavar="prompt=COL,chosen=COL,rejected=COL[,system=COL]",
                        help="read these columns instead of detecting a format")
    parser.add_argument("--on-error", choices=("skip", "abort"), default="skip",
                        help="skip bad rows and report them (default), or abort and import nothing")
    parser.add_argument("--pku-choice", choices=PKU_CHOICES, default="safer",
                        help="PKU-SafeRLHF: chosen by safer_response_id (default) or better_response_id")
    parser.add_argument("--all-ranked-pairs", action="store_true",
                        help="ranked lists (oaast_rm): every ordered pair instead of the first two answers")
    parser.add_argument("--kind", choices=KINDS, default="import", help="kind of a new collection")
    parser.add_argument("--hub", action="store_true", help="SOURCE may be a hub dataset id (needs the network)")
    parser.add_argument("--by", default="", help="who imported (kept with each pair)")


def parse_mapping(text: str) -> dict[str, str]:
    mapping = {}
    for item in text.split(","):
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise UserError(f"--map: expected key=column items separated by commas, got {item!r}")
        mapping[key.strip()] = column.strip()
    return mapping


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.ensure_dirs().db_path)
    mapping = parse_mapping(args.mapping) if args.mapping else None
    bars: dict[str, tqdm] = {}

    def bar(name: str, unit: str) -> tqdm:
        if name not in bars:
            for other in bars.values():
                other.close()  # one bar at a time: reading ends before storing starts
            bars[name] = tqdm(desc=name, unit=unit, file=sys.stderr, mininterval=0.5)
        return bars[name]

    def read_progress(done: int) -> None:
        read = bar("read", " rows")
        read.update(done - read.n)

    def store_progress(done: int) -> None:
        stored = bar("store", " pairs")
        stored.update(done - stored.n)

    try:
        if args.fmt == UNPAIRED_FORMAT:
            summary = _import_rated(store, args, settings)
        else:
            try:
                summary = _import_pairs(store, args, settings, mapping, read_progress, store_progress)
            except UnpairedFile:
                summary = _import_rated(store, args, settings)
    finally:
        for open_bar in bars.values():
            open_bar.close()
    print(summary.report())
    return 0


def _import_rated(store: Store, args: argparse.Namespace, settings: Settings) -> ImportSummary:
    return import_rated(store, args.source, args.collection, kind=args.kind, on_error=args.on_error,
                        max_field_chars=settings.max_field_chars, allow_hub=args.hub, created_by=args.by)


def _import_pairs(
    store: Store,
    args: argparse.Namespace,
    settings: Settings,
    mapping: dict[str, str] | None,
    read_progress: Callable[[int], None],
    store_progress: Callable[[int], None],
) -> ImportSummary:
    return import_pairs(
        store,
        args.source,
        args.collection,
        kind=args.kind,
        fmt=args.fmt,
        mapping=mapping,
        on_error=args.on_error,
        max_field_chars=settings.max_field_chars,
        pku_choice=args.pku_choice,
        all_ranked_pairs=args.all_ranked_pairs,
        allow_hub=args.hub,
        created_by=args.by,
        read_progress=read_progress,
        store_progress=store_progress,
    )
