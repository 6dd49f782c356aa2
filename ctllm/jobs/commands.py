"""Build the argv of a job and the command line a user can copy to run it by hand."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RESUME_FLAG = "--resume"


def ctllm_command(
    subcommand: str, args: Sequence[str] = (), num_processes: int = 1, python: str | None = None
) -> list[str]:
    """``python -m ctllm SUBCOMMAND ARGS`` or, for several processes,
    ``python -m accelerate.commands.launch --multi_gpu --num_processes N -m ctllm SUBCOMMAND ARGS``.

    ``--multi_gpu`` is also what starts N gloo processes on a CPU-only machine (``--cpu`` silently runs one).
    """
    python = python or sys.executable
    if num_processes < 1:
        raise ValueError("num_processes must be >= 1")
    if num_processes == 1:
        return [python, "-m", "ctllm", subcommand, *args]
    launcher = [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes)]
    return [*launcher, "-m", "ctllm", subcommand, *args]


def train_command(config: Path | str, num_processes: int = 1, resume: bool = False) -> list[str]:
    args = ["--config", str(config)]
    if resume:
        args.append(RESUME_FLAG)
    return ctllm_command("train", args, num_processes)


def with_resume(argv: Sequence[str], flag: str = RESUME_FLAG) -> list[str]:
    return list(argv) if flag in argv else [*argv, flag]


def command_line(argv: Sequence[str], cwd: Path | str, env: Mapping[str, str], log_path: Path | str) -> str:
    """A shell line that reproduces the job: ``cd DIR && VAR=value ... ARGV >> LOG 2>&1``."""
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    line = f"cd {shlex.quote(str(cwd))} && "
    if assignments:
        line += assignments + " "
    return line + f"{shlex.join(argv)} >> {shlex.quote(str(log_path))} 2>&1"
