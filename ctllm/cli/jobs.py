"""``python -m ctllm jobs list|show ID|cancel ID|resume ID|start``: the background jobs, as the app sees them."""

from __future__ import annotations

import argparse
import json
import shlex
import time

from ctllm.errors import UserError
from ctllm.jobs import Job, JobManager
from ctllm.settings import Settings

NAME = "jobs"
HELP = "list, show, cancel, resume or start background jobs (training and synthesis runs)"
ACTIONS = ("list", "show", "cancel", "resume", "start")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("job_id", nargs="?", type=int, help="job id (show, cancel, resume)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--limit", type=int, default=30, help="list: how many jobs, newest first")
    parser.add_argument("--state", action="append", help="list: only jobs in this state (repeatable)")
    parser.add_argument("--lines", type=int, default=40, help="show: how many log lines")
    parser.add_argument("--grace", type=float, default=None, help="cancel: seconds before SIGKILL (default 30)")
    parser.add_argument("--force", action="store_true", help="cancel: SIGKILL the job's process group at once")
    parser.add_argument("--no-wait", action="store_true", help="cancel: return after sending SIGTERM")
    parser.add_argument("--run-dir", help="start: the run folder (train.log is written there)")
    parser.add_argument("--devices", default="cpu", help="start: 'cpu' or GPU ids such as 0,1")
    parser.add_argument("--kind", default="train", help="start: train or synth")
    parser.add_argument("--name", default=None, help="start: a name for the job (default: the run folder's)")
    parser.add_argument("--cmd", default=None, help="start: the command, quoted as one string")
    parser.add_argument("--owner", default="", help="start, resume: who started it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    manager = JobManager(settings)
    if args.action == "list":
        jobs = _jobs_now(manager, args.limit, args.state)
        print(json.dumps([job.to_dict() for job in jobs], indent=2) if args.json else format_table(jobs))
        return 0
    if args.action == "start":
        if not args.run_dir or not args.cmd:
            raise UserError("jobs start needs --run-dir and --cmd")
        job = manager.start(shlex.split(args.cmd), args.run_dir, args.devices, args.kind, args.name, owner=args.owner)
        _print_job(job, args.json)
        return 0
    if args.job_id is None:
        raise UserError(f"jobs {args.action} needs a job id (see: python -m ctllm jobs list)")
    if args.action == "show":
        view = manager.watch(args.job_id, args.lines)
        if args.json:
            record = {**view.job.to_dict(), "status": view.status, "metrics": view.metrics, "tail": view.log_tail}
            print(json.dumps(record, indent=2))
        else:
            print(format_job(view.job))
            if view.total_steps or view.step is not None:
                print(f"progress:  step {view.step if view.step is not None else '-'} / {view.total_steps or '?'}")
            if view.metrics:
                print("metrics:   " + json.dumps(view.metrics))
            print(f"--- last {args.lines} lines of {view.job.log_path} ---")
            print(view.log_tail)
        return 0
    if args.action == "cancel":
        job = manager.cancel(args.job_id, grace_s=args.grace, wait=not args.no_wait, force=args.force)
        _print_job(job, args.json)
        return 0
    job = manager.resume(args.job_id, owner=args.owner or None)
    _print_job(job, args.json)
    return 0


def _jobs_now(manager: JobManager, limit: int, states: list[str] | None) -> list[Job]:
    manager.poll()  # a job that died while no app was watching shows as failed here too
    return manager.list_jobs(limit=limit, states=states)


def _print_job(job: Job, as_json: bool) -> None:
    print(json.dumps(job.to_dict(), indent=2) if as_json else format_job(job))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_table(jobs: list[Job]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "KIND", "STATE", "DEVICES", "STARTED", "DURATION", "NAME", "RUN DIR")]
    for job in jobs:
        rows.append(
            (
                str(job.id),
                job.kind,
                job.state,
                job.devices,
                _when(job.started),
                format_duration(job.duration()),
                job.name,
                str(job.run_dir),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows)


def format_job(job: Job) -> str:
    lines = [
        f"job {job.id}: {job.kind} {job.name!r} is {job.state}",
        f"devices:   {job.devices}",
        f"run dir:   {job.run_dir}",
        f"command:   {job.command}",
        f"pid:       {job.pid if job.pid is not None else '-'} (process group {job.pgid if job.pgid else '-'})",
        f"created:   {_when(job.created)}",
        f"started:   {_when(job.started)}",
        f"finished:  {_when(job.finished)}",
        f"duration:  {format_duration(job.duration())}",
    ]
    if job.exit_code is not None:
        lines.append(f"exit code: {job.exit_code}")
    if job.owner:
        lines.append(f"owner:     {job.owner}")
    if job.resumed_from is not None:
        lines.append(f"resumes:   job {job.resumed_from}")
    if job.error:
        lines.append(f"error:     {job.error}")
    return "\n".join(lines)
