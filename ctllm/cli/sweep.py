"""``python -m ctllm sweep --preset P --grid FIELD=V1,V2 ... [--name N] [--devices D]``: every combination of the
grid queued as a training job on the device set; ``--list``, ``--cancel N``, ``--resume N``, ``--table N
[--sort COLUMN] [--desc]`` for a sweep started before (by the CLI or the app)."""

from __future__ import annotations

import argparse
import json
import time

from ctllm.dpo.presets import list_presets
from ctllm.errors import UserError
from ctllm.jobs import JobManager
from ctllm.jobs.sweep import cancel_sweep, list_sweeps, load, parse_grid, plan_sweep, resume_sweep, start_sweep
from ctllm.settings import Settings

NAME = "sweep"
HELP = "queue a training job for every combination of a grid of config values; list, cancel, resume, compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="", help=f"the runs' starting point: {', '.join(list_presets())}")
    parser.add_argument("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
                        help="config values to combine; a single value is the same for every run")
    parser.add_argument("--name", default=None, help="the sweep's name (default sweep-YYYYmmdd-HHMMSS)")
    parser.add_argument("--devices", default="cpu", help="the device set every run queues on: 'cpu' or GPU ids")
    parser.add_argument("--owner", default="", help="who started it")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true", help="the sweeps, newest first")
    actions.add_argument("--cancel", metavar="NAME", help="drop the queued runs, stop the running ones")
    actions.add_argument("--resume", metavar="NAME", help="queue the failed and cancelled runs again")
    actions.add_argument("--table", metavar="NAME", help="the comparison table of a sweep's runs")
    parser.add_argument("--sort", default="run", help="--table: the column to sort by")
    parser.add_argument("--desc", action="store_true", help="--table: largest first")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.ensure_dirs()
    jobs = JobManager(settings)
    if args.list:
        sweeps = list_sweeps(settings)
        if args.json:
            print(json.dumps([sweep.to_dict() for sweep in sweeps], indent=2))
        else:
            for sweep in sweeps:
                cancelled = " (cancelled)" if sweep.cancelled else ""
                print(f"{sweep.name}: {len(sweep.runs)} runs on {sweep.devices}, preset {sweep.preset or '-'}"
                      f"{cancelled}")
            if not sweeps:
                print("no sweeps")
        return 0
    if args.table:
        return _print_table(jobs, settings, args.table, args.sort, args.desc, args.json)
    if args.cancel or args.resume:
        sweep = (cancel_sweep if args.cancel else resume_sweep)(jobs, settings, args.cancel or args.resume)
        _print_runs(jobs, settings, sweep.name, args.json)
        return 0
    if not args.grid:
        raise UserError("sweep needs --grid FIELD=V1,V2 ... (or --list, --cancel, --resume, --table)")
    name = args.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    sweep, plans = plan_sweep(name, args.preset, parse_grid(args.grid), args.devices)
    sweep.owner = args.owner
    start_sweep(jobs, settings, sweep, plans)
    _print_runs(jobs, settings, sweep.name, args.json)
    return 0


def _print_runs(jobs: JobManager, settings: Settings, name: str, as_json: bool) -> None:
    _print_table(jobs, settings, name, "run", False, as_json, brief=True)


def _print_table(jobs: JobManager, settings: Settings, name: str, sort: str, descending: bool, as_json: bool,
                 brief: bool = False) -> int:
    # Lazy: the comparison reads eval.json through ctllm.evaluate; listing or cancelling does not need it.
    from ctllm.evaluate.sweep_table import columns, comparison_rows, format_comparison, sort_rows

    sweep = load(settings, name)
    names = ["run", *sweep.grid, "state"] if brief else columns(sweep)
    if sort not in names:
        raise UserError(f"--sort {sort!r} is not a column; one of {', '.join(names)}")
    rows = sort_rows(comparison_rows(jobs, settings, sweep), sort, descending)
    rows = [{key: row[key] for key in names} for row in rows]
    if as_json:
        print(json.dumps({"sweep": sweep.to_dict(), "rows": rows}, indent=2))
    else:
        print(f"sweep {sweep.name}{' (cancelled)' if sweep.cancelled else ''}")
        print(format_comparison(names, rows))
    return 0
