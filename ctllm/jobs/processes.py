"""Process identity and liveness from /proc: a pid alone is not an identity (pids are reused), a pid plus its
start time (clock ticks since boot) plus the boot id is."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ctllm.pids import pid_exists

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    pgrp: int
    session: int
    start_ticks: int


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name (field 2) may contain spaces and parentheses, so the
    fields after it are split from the last ')'."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # rest starts at field 3 (state); field N is fields[N - 3].
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start_ticks=int(fields[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def has_proc() -> bool:
    return (PROC / "self" / "stat").exists()


def boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    stat = read_stat(pid)
    return None if stat is None else stat.start_ticks


def is_running(pid: int, expected_start: int | None) -> bool:
    """True when ``pid`` is the same process that was started (same start time) and it is not a zombie."""
    if pid <= 0:
        return False
    if not has_proc():  # not Linux: fall back to signal 0, without protection against pid reuse
        return pid_exists(pid)
    stat = read_stat(pid)
    if stat is None or (expected_start is not None and stat.start_ticks != expected_start):
        return False
    if stat.state == "Z":
        # A zombie leader whose other threads are still exiting is not gone yet (nor is its memory).
        return _thread_count(pid) > 1
    return stat.state != "X"


def _thread_count(pid: int) -> int:
    try:
        return len(os.listdir(PROC / str(pid) / "task"))
    except OSError:
        return 0


@dataclass(frozen=True)
class JobProcesses:
    """The live processes of one job: those in its process group, and those outside it that carry the job's
    token in their environment (workers that started their own session, as torchrun's do for accelerate)."""

    in_group: tuple[int, ...] = ()
    outside: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.in_group or self.outside)


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's process
        return False


def job_processes(pgid: int, leader_start: int | None, token_variable: str = "") -> JobProcesses:
    """Find a job's live (non-zombie) processes; ``token_variable`` is 'NAME=value' from the job's environment.

    The kernel does not hand out a pid while it is still used as a process group id, so if the leader's pid is
    alive with another start time, the number was reused after the whole group was gone: no group member is ours.
    """
    if not has_proc():
        return JobProcesses()
    leader = read_stat(pgid) if pgid > 0 else None
    group_is_ours = pgid > 0 and not (
        leader is not None and leader_start is not None and leader.start_ticks != leader_start
    )
    needle = token_variable.encode()
    in_group, outside = [], []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is None or stat.state in {"Z", "X"}:
            continue
        if group_is_ours and stat.pgrp == pgid:
            in_group.append(stat.pid)
        elif needle and _environ_has(stat.pid, needle):
            outside.append(stat.pid)
    return JobProcesses(tuple(in_group), tuple(outside))


def signal_processes(pgid: int, found: JobProcesses, sig: int, group: bool = True, outside: bool = True) -> None:
    """Signal the job's group as a whole (which also reaches processes forked since the scan) and/or the
    processes found outside it."""
    if group and found.in_group:
        signal_group(pgid, sig)
    if outside:
        for pid in found.outside:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the whole group; False when no process of the group is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def describe_exit(exit_code: int | None) -> str:
    """'exit code 1', 'killed by SIGKILL' (Popen reports a signal as a negative code) or 'exit code unknown'."""
    if exit_code is None:
        return "exit code unknown"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}"
    return f"exit code {exit_code}"
