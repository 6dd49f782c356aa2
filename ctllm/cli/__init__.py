"""The command line. Each ``ctllm/cli/<command>.py`` module (``<command>_cmd.py`` where the name is a Python
keyword) defines:

- ``HELP``: one line of help,
- ``add_arguments(parser)``: its flags,
- ``run(args, settings) -> int``: the exit code.

An underscore in the module name is a hyphen in the command's (``export_gguf.py``: ``export-gguf``).

Only the module of the command being run is imported, so a light command (``jobs list``) does not pay for
torch and transformers.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from ctllm.errors import UserError
from ctllm.settings import Settings, add_settings_arguments


def command_names() -> dict[str, str]:
    """Command name -> module name, from the files in this package (``export_gguf.py`` is ``export-gguf``)."""
    return {
        info.name.removesuffix("_cmd").replace("_", "-"): info.name
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
        if not info.name.startswith("_")
    }


def _load(module_name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{module_name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctllm", description="CT-LLM DPO Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in command_names().items():
        if only is not None and name != only:
            sub.add_parser(name)  # listed, not loaded
            continue
        module = _load(module_name)
        command = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", ""))
        add_settings_arguments(command)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in command_names() else None
    args = build_parser(only=chosen).parse_args(argv)
    settings = Settings.from_namespace(args)
    try:
        return int(args._run(args, settings) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
