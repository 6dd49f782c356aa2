"""``python -m ctllm export --collection NAME --format F --out PATH``: write a collection with labels resolved."""

from __future__ import annotations

import argparse
import os

from ctllm.errors import UserError
from ctllm.pairs.export import export_collection, export_rated, push_to_hub
from ctllm.pairs.store import Store
from ctllm.pairs.writers import EXPORT_FORMATS, RATED_EXPORT_FORMATS
from ctllm.settings import Settings

NAME = "export"
HELP = "export a collection (labels resolved into chosen/rejected) to a file or, with --push, to the hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", required=True)
    parser.add_argument("--format", dest="fmt", choices=(*EXPORT_FORMATS, *RATED_EXPORT_FORMATS), default="trl",
                        help="pair formats, or trl-unpaired / trl-unpaired-parquet for the collection's unpaired "
                        "rated answers (TRL's prompt/completion/label rows, for KTO)")
    parser.add_argument("--out", help="file or existing folder (default: the data dir's exports folder)")
    parser.add_argument("--split", help="only pairs of this split (e.g. test)")
    parser.add_argument("--push", metavar="OWNER/NAME", help="upload to this hub dataset repository instead")
    parser.add_argument("--token", help="hub token for --push (default: $HF_TOKEN)")
    parser.add_argument("--public", action="store_true", help="with --push: a public dataset (default private)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.ensure_dirs().db_path)
    if args.fmt in RATED_EXPORT_FORMATS:
        if args.push or args.split:
            raise UserError(f"--format {args.fmt} writes a file of rated answers: no --push, no --split")
        summary = export_rated(store, args.collection, args.out or settings.exports_dir, args.fmt)
    elif args.push:
        token = args.token or os.environ.get("HF_TOKEN", "")
        summary = push_to_hub(store, args.collection, args.push, token, private=not args.public,
                              conversational=args.fmt == "trl-conversational")
    else:
        summary = export_collection(store, args.collection, args.out or settings.exports_dir, args.fmt,
                                    split=args.split)
    print(summary.report())
    return 0
