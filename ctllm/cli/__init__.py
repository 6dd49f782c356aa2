"""The command line. Each ``ctllm/cli/<command>.py`` module defines:

- ``NAME``: the sub-command name (defaults to the module name),
- ``HELP``: one line of help,
- ``add_arguments(parser)``: its flags,
- ``run(args, settings) -> int``: the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ctllm.errors import UserError
from ctllm.settings import Settings, add_settings_arguments


def _commands() -> dict[str, object]:
    commands = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        commands[getattr(module, "NAME", info.name)] = module
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctllm", description="CT-LLM DPO Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in _commands().items():
        command = sub.add_parser(name, help=getattr(module, "HELP", ""))
        add_settings_arguments(command)
        module.add_arguments(command)  # type: ignore[attr-defined]
        command.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_namespace(args)
    try:
        return int(args._run(args, settings) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
