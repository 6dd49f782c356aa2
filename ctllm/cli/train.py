"""``python -m ctllm train [--config run.yaml] [--preset NAME] [--resume] [--FIELD value ...]``

Precedence: defaults < preset < config file < ``--FIELD value``. Runs unchanged under
``accelerate launch --multi_gpu --num_processes N -m ctllm train ...`` (only the first process writes files).

Exit codes: 0 finished, 1 failed (e.g. non-finite loss), 2 bad config or data, 3 cancelled (SIGTERM or Ctrl-C;
a checkpoint is saved when training had started, resume with --resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from ctllm.dpo.config import TrainConfig
from ctllm.dpo.presets import list_presets, resolve_config
from ctllm.evaluate.end_of_run import evaluate_finished_run
from ctllm.publish.card import write_card
from ctllm.settings import Settings

NAME = "train"
HELP = "train a model with DPO (config file, preset, --FIELD value overrides)"
EXIT_CODES = {"finished": 0, "failed": 1, "cancelled": 3}
SETTINGS_FIELDS = ("device", "dtype")  # given with the settings flags --device / --dtype
_PREFIX = "field_"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML file of config fields")
    parser.add_argument("--preset", default=None, help=f"start from a preset: {', '.join(list_presets())}")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run (same run_name) from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    fields = parser.add_argument_group("config fields (override the preset and the config file)")
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for name in TrainConfig.__dataclass_fields__:
        if name in SETTINGS_FIELDS:
            continue
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        default = getattr(defaults, name)
        extra = {"nargs": "?", "const": "true"} if hints[name] is bool else {}
        fields.add_argument(*flags, dest=_PREFIX + name, default=None, metavar="VALUE",
                            help=f"default {default!r}", **extra)


def run(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {key[len(_PREFIX):]: value for key, value in vars(args).items()
                 if key.startswith(_PREFIX) and value is not None}
    for name in SETTINGS_FIELDS:  # --device / --dtype given on this command line (not just from the environment)
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    config = resolve_config(args.preset, args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    # Lazy: importing ctllm.dpo.train (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.dpo.train import train

    result = train(config, settings, resume=args.resume, show_progress=not args.no_progress,
                   on_finished=evaluate_finished_run)
    if os.environ.get("RANK", "0") == "0":
        print(f"run directory: {result.run_dir}", file=sys.stderr)
        if result.state != "finished":
            print(f"run {result.state}: {result.error}", file=sys.stderr)
        else:
            print(f"model card: {write_card(result.run_dir)}", file=sys.stderr)
    return EXIT_CODES.get(result.state, 1)
