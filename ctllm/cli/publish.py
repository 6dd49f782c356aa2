"""``python -m ctllm publish run:NAME --repo OWNER/NAME [--private] [--with-data] [--merged] [--out DIR]``

Writes the exact folders that would be uploaded (the model with its card; with ``--with-data`` the training
snapshot as a dataset whose card links back), then uploads them when a token is at hand (``HF_TOKEN`` or the
hub login) and the hub is not off. The token is read from the environment or the login only, never from the
command line (where ``ps`` would show it), and never written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ctllm.settings import Settings

NAME = "publish"
HELP = "publish a finished run to the hub (model, card, optionally its data); offline: write the folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run:NAME, NAME or latest-run")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the model repository")
    parser.add_argument("--private", action="store_true", help="create private repositories")
    parser.add_argument("--with-data", action="store_true",
                        help="also publish the training snapshot as the dataset OWNER/NAME-pairs")
    parser.add_argument("--merged", action="store_true", help="LoRA runs: add the merged model under merged/")
    parser.add_argument("--out", type=Path, help="where the folders are written (default: exports/publish-<run>)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Lazy: huggingface_hub and the model code take seconds to import; the other commands do not need them.
    from huggingface_hub import get_token

    from ctllm.models.registry import hub_offline
    from ctllm.publish.run_model import run_dir_of, run_spec
    from ctllm.publish.upload import prepare_folders, upload

    spec = run_spec(args.run, settings)
    out = args.out or settings.ensure_dirs().exports_dir / f"publish-{run_dir_of(spec).name}"
    folders = prepare_folders(spec, settings, args.repo, out, with_data=args.with_data, merged=args.merged,
                              private=args.private)
    print(f"folders written under {Path(out).resolve()}:")
    for name in folders.files():
        print(f"  {name}")
    token = os.environ.get("HF_TOKEN", "").strip() or (get_token() or "")
    if hub_offline(settings) or not token:
        why = "the hub is off (offline mode)" if hub_offline(settings) else "no hub token (set HF_TOKEN or log in)"
        print(f"not uploaded: {why}. These are the exact folders that would be uploaded: model/ to {folders.repo}"
              + (f", dataset/ to {folders.dataset_repo}" if folders.dataset_repo else "") + ".")
        return 0
    upload(folders, token)
    for url in folders.urls:
        print(f"uploaded: {url}")
    return 0
