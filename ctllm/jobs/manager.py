"""Background jobs as real detached processes.

A job is one command (an argv list) run in a run dir: its own session and process group, stdin from /dev/null,
stdout and stderr appended to ``<run_dir>/train.log`` (a file, so nothing stalls when no one reads it), recorded
in the ``jobs`` table. Nothing here relies on a thread or on being the job's parent: every call re-derives the
truth from the table, the process's identity in /proc (pid + start time + boot id) and the run's status.json, so
a new ``JobManager`` in a restarted app, or the CLI in another process, sees the same jobs.

The UI calls ``poll()`` on a timer (or ``start_watcher()`` once): it reaps our children, finalizes jobs whose
process is gone (failed with the log tail when the run did not write a final state), escalates cancels to SIGKILL
after the grace period, and starts queued jobs whose devices became free.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctllm.errors import UserError
from ctllm.jobs import processes
from ctllm.jobs.commands import command_line, with_resume
from ctllm.jobs.devices import conflicts, cuda_visible_devices, parse_devices
from ctllm.jobs.failures import classify_failure, failure_hint
from ctllm.jobs.processes import describe_exit
from ctllm.jobs.table import (
    ACTIVE_STATES,
    CANCELLED,
    CANCELLING,
    FAILED,
    FINISHED,
    KINDS,
    QUEUED,
    RUNNING,
    Job,
    closing,
    ensure_schema,
    job_from_row,
    update,
    write_transaction,
)
from ctllm.paths import REPO_ROOT
from ctllm.runs import METRICS_NAME, last_json_line, read_status, status_signature, tail_lines
from ctllm.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 30.0
DEFAULT_TAIL_LINES = 40
TOKEN_NAME = "CTLLM_JOB_TOKEN"

# Children started by this Python process: pid -> (database, job id, Popen). Module level, so that any JobManager
# in this process can reap them (a zombie otherwise) and record their exit code in the job's own database.
_children: dict[int, tuple[Path, int, subprocess.Popen]] = {}
_children_lock = threading.Lock()
_watchers: dict[Path, tuple[threading.Thread, threading.Event]] = {}


@dataclass(frozen=True)
class JobView:
    """What the UI shows for one job: the record, the run's own status, its last metrics line, its log tail."""

    job: Job
    status: dict  # {} until the run writes one
    metrics: dict | None
    log_tail: str

    @property
    def step(self) -> int | None:
        for source in (self.status, self.metrics):
            if source and isinstance(source.get("step"), int):
                return source["step"]
        return None

    @property
    def total_steps(self) -> int | None:
        value = self.status.get("total_steps")
        return value if isinstance(value, int) else None


class JobManager:
    def __init__(
        self, settings: Settings, grace_s: float = DEFAULT_GRACE_S, tail_lines: int = DEFAULT_TAIL_LINES
    ) -> None:
        self.settings = settings
        self.db_path = settings.db_path
        self.grace_s = grace_s
        self.tail_lines = tail_lines
        ensure_schema(self.db_path)

    # ----------------------------------------------------------------------------------------------- queries

    def get(self, job_id: int) -> Job:
        """The job, with the world brought up to date first (see ``poll``): a dead process is noticed here too."""
        self.poll()
        return self._load(job_id)

    def watch(self, job_id: int, lines: int | None = None) -> JobView:
        job = self.get(job_id)
        status = read_status(job.run_dir, job.status_baseline) if job.started is not None else {}
        return JobView(
            job=job,
            status=status,
            metrics=last_json_line(job.run_dir / METRICS_NAME),
            log_tail=tail_lines(job.log_path, self.tail_lines if lines is None else lines),
        )

    def list_jobs(self, limit: int = 100, states: Sequence[str] | None = None,
                  kinds: Sequence[str] | None = None) -> list[Job]:
        """History, newest first; only jobs in ``states`` and of ``kinds`` when given."""
        where, params = [], []
        for column, values in (("state", states), ("kind", kinds)):
            if values:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with closing(self.db_path) as conn:
            return [job_from_row(row) for row in conn.execute(sql, params)]

    # ----------------------------------------------------------------------------------------------- actions

    def start(
        self,
        argv: Sequence[str],
        run_dir: Path | str,
        devices: str | int | Sequence[int | str] = "cpu",
        kind: str = "train",
        name: str | None = None,
        owner: str = "",
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        resumed_from: int | None = None,
    ) -> Job:
        """Record the job and start it now, or queue it while another job holds one of its devices."""
        if kind not in KINDS:
            raise UserError(f"job kind {kind!r} is not one of {', '.join(KINDS)}")
        argv = [str(part) for part in argv]
        if not argv:
            raise UserError("a job needs a command")
        canonical = parse_devices(devices)
        run_dir = Path(run_dir).expanduser().resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        cwd = Path(cwd).resolve() if cwd is not None else REPO_ROOT
        extra_env = {**settings_env(self.settings), **{str(k): str(v) for k, v in (env or {}).items()}}
        shown_env = {"CUDA_VISIBLE_DEVICES": cuda_visible_devices(canonical), **extra_env}
        if cwd != REPO_ROOT:
            shown_env["PYTHONPATH"] = str(REPO_ROOT)
        command = command_line(argv, cwd, shown_env, run_dir / "train.log")
        with write_transaction(self.db_path) as conn:
            clash = conn.execute(
                "SELECT id, state FROM jobs WHERE run_dir = ? AND (state IN (?, ?, ?) OR reap_deadline IS NOT NULL)",
                (str(run_dir), QUEUED, *ACTIVE_STATES),
            ).fetchone()
            if clash:
                doing = clash["state"] if clash["state"] in (QUEUED, *ACTIVE_STATES) else "its processes are ending"
                raise UserError(f"run dir {run_dir} already has job {clash['id']} ({doing}); try again when it is over")
            cursor = conn.execute(
                "INSERT INTO jobs (kind, name, argv, command, cwd, env, devices, run_dir, state, created, owner,"
                " resumed_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    name or run_dir.name,
                    json.dumps(argv),
                    command,
                    str(cwd),
                    json.dumps(extra_env),
                    canonical,
                    str(run_dir),
                    QUEUED,
                    time.time(),
                    owner,
                    resumed_from,
                ),
            )
            job_id = int(cursor.lastrowid)
        self.poll()
        return self._load(job_id)

    def cancel(self, job_id: int, grace_s: float | None = None, wait: bool = False, force: bool = False) -> Job:
        """SIGTERM to the job's whole process group (the run saves a checkpoint and exits), SIGKILL to the group
        after ``grace_s`` (default: the manager's) or at once with ``force``. A queued job is simply dropped."""
        grace = self.grace_s if grace_s is None else grace_s
        job = self.get(job_id)
        if job.state == QUEUED:
            with write_transaction(self.db_path) as conn:
                update(conn, job_id, (QUEUED,), state=CANCELLED, finished=time.time(), error="cancelled while queued")
        elif job.holds_devices and self._same_boot(job):
            now = time.time()
            deadline = now if force else now + grace
            if job.reap_deadline is not None:
                deadline = min(deadline, job.reap_deadline)
            # Recorded before the signal, so whoever sees the process end next knows it was asked to stop.
            with write_transaction(self.db_path) as conn:
                if job.active:
                    update(conn, job_id, ACTIVE_STATES, state=CANCELLING, cancel_requested=job.cancel_requested or now)
                update(conn, job_id, reap_deadline=deadline)
            if force:
                processes.signal_processes(job.pgid or 0, self._processes_left(job), signal.SIGKILL)
            else:  # the leader (a launcher, say) passes the signal on to its workers and waits for them
                processes.signal_group(job.pgid or 0, signal.SIGTERM)
        else:
            raise UserError(f"job {job_id} is already {job.state}")
        if wait:
            return self.wait(job_id, timeout=grace + 30.0, until_group_gone=True)
        return self.get(job_id)

    def resume(self, job_id: int, owner: str | None = None, flag: str = "--resume") -> Job:
        """A new job for the same run dir and devices, with the resume flag added to the command."""
        job = self.get(job_id)
        if job.state not in (FAILED, CANCELLED):
            raise UserError(f"job {job_id} is {job.state}: only a failed or cancelled job can be resumed")
        return self.start(
            with_resume(job.argv, flag),
            job.run_dir,
            devices=job.devices,
            kind=job.kind,
            name=job.name,
            owner=job.owner if owner is None else owner,
            env=job.env,
            cwd=job.cwd,
            resumed_from=job.id,
        )

    def poll(self) -> list[Job]:
        """One round of housekeeping (the UI timer calls this): reap, finalize dead jobs, escalate cancels,
        start queued jobs whose devices are free. Returns the jobs not yet final."""
        _reap_children()
        for job in self._jobs_where("state IN (?, ?)", ACTIVE_STATES):
            self._refresh(job)
        self._sweep_groups()
        self._start_queued()
        return self._jobs_where("state IN (?, ?, ?) OR reap_deadline IS NOT NULL", (QUEUED, *ACTIVE_STATES))

    tick = poll

    def reattach(self) -> list[Job]:
        """After an app restart: jobs recorded as running are checked by pid and start time; the live ones are
        watched again, the dead ones finalized (failed with their log tail unless the run wrote its own end)."""
        return [job for job in self.poll() if job.active]

    def wait(
        self, job_id: int, timeout: float | None = None, interval: float = 0.2, until_group_gone: bool = False
    ) -> Job:
        """Poll until the job is final (and, with ``until_group_gone``, no process of its group is left)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            job = self._load(job_id)
            if job.final and not (until_group_gone and job.reap_deadline is not None):
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(interval)

    def start_watcher(self, interval: float = 1.0) -> threading.Thread:
        """A daemon thread calling ``poll()`` every ``interval`` s, one per database per process. Optional: the
        jobs themselves never depend on it."""
        running = _watchers.get(self.db_path)
        if running is not None and running[0].is_alive():
            return running[0]
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.poll()
                except Exception:  # keep watching; a locked database or a vanished run dir is transient
                    log.exception("job watcher: poll failed")
                stop.wait(interval)

        thread = threading.Thread(target=loop, name=f"ctllm-jobs-{self.db_path.name}", daemon=True)
        _watchers[self.db_path] = (thread, stop)
        thread.start()
        return thread

    def stop_watcher(self) -> None:
        running = _watchers.pop(self.db_path, None)
        if running is not None:
            running[1].set()
            running[0].join()

    # ----------------------------------------------------------------------------------------------- internals

    def _load(self, job_id: int) -> Job:
        with closing(self.db_path) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UserError(f"no job with id {job_id}")
        return job_from_row(row)

    def _jobs_where(self, where: str, params: Sequence[object]) -> list[Job]:
        with closing(self.db_path) as conn:
            rows = conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", tuple(params)).fetchall()
        return [job_from_row(row) for row in rows]

    @staticmethod
    def _same_boot(job: Job) -> bool:
        return not job.boot_id or job.boot_id == processes.boot_id()

    def _leader_alive(self, job: Job) -> bool:
        if job.pid is None or not self._same_boot(job):
            return False
        with _children_lock:
            entry = _children.get(job.pid)
        if entry is not None and entry[:2] == (self.db_path, job.id):
            # Our own child: waitpid is the authority (it also records the exit code). /proc can show the leader
            # as a zombie while its other threads are still exiting, before waitpid can reap it.
            if entry[2].poll() is None:
                return True
            _reap_children()
            return False
        return processes.is_running(job.pid, job.pid_start)

    def _processes_left(self, job: Job) -> processes.JobProcesses:
        if job.pgid is None or not self._same_boot(job):
            return processes.JobProcesses()
        return processes.job_processes(job.pgid, job.pid_start, _token_variable(job.token))

    def _refresh(self, job: Job) -> Job:
        """Finalize an active job whose leader process is gone; a live one is returned unchanged."""
        if not job.active or self._leader_alive(job):
            return job
        job = self._load(job.id)  # with the exit code, when it was our child and was just reaped
        status = read_status(job.run_dir, job.status_baseline)
        run_state = status.get("state")
        tail = tail_lines(job.log_path, self.tail_lines)
        state, error = _final_state(job, run_state, str(status.get("error") or ""), tail)
        now = time.time()
        values: dict[str, object] = {"state": state, "finished": now, "error": error, "log_tail": tail}
        left = self._processes_left(job)
        if left:
            # The leader is gone but processes it started are not (accelerate ranks in their own sessions, data
            # loaders): end them too, or they keep holding the devices. After a cancel the group already had its
            # SIGTERM; a second one could cut short a checkpoint being saved.
            processes.signal_processes(job.pgid or 0, left, signal.SIGTERM, group=job.cancel_requested is None)
            values["reap_deadline"] = job.reap_deadline or now + self.grace_s
        else:
            values["reap_deadline"] = None
        with write_transaction(self.db_path) as conn:
            changed = update(conn, job.id, ACTIVE_STATES, **values)
        if changed:
            _append_line(job.log_path, f"=== ctllm job {job.id} {state}: {error or describe_exit(job.exit_code)} ===")
        return self._load(job.id)

    def _sweep_groups(self) -> None:
        """End what is left of groups whose job is cancelling or over, SIGKILL once the deadline has passed."""
        now = time.time()
        for job in self._jobs_where("reap_deadline IS NOT NULL", ()):
            left = self._processes_left(job)
            if not left:
                if not job.active:
                    with write_transaction(self.db_path) as conn:
                        conn.execute("UPDATE jobs SET reap_deadline = NULL WHERE id = ?", (job.id,))
            elif now >= (job.reap_deadline or 0):
                processes.signal_processes(job.pgid or 0, left, signal.SIGKILL)

    def _start_queued(self) -> None:
        if not self._jobs_where("state = ?", (QUEUED,)):
            return  # the common case: no write lock taken on the shared database
        with write_transaction(self.db_path) as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state IN (?, ?, ?) OR reap_deadline IS NOT NULL ORDER BY id",
                (QUEUED, *ACTIVE_STATES),
            ).fetchall()
            jobs = [job_from_row(row) for row in rows]
            busy = [job.devices for job in jobs if job.holds_devices]
            for job in jobs:
                if job.state != QUEUED:
                    continue
                # First come, first served: a queued job also blocks later ones on overlapping devices.
                if not any(conflicts(job.devices, other) for other in busy):
                    self._spawn(conn, job)
                busy.append(job.devices)

    def _spawn(self, conn, job: Job) -> None:
        """Start the job's process (inside the caller's write transaction, so no other process starts it too)."""
        log_path = job.log_path
        env = {**os.environ, **job.env}
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(job.devices)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env["CTLLM_JOB_ID"] = str(job.id)
        token = uuid.uuid4().hex
        env[TOKEN_NAME] = token  # inherited by every descendant, even one that leaves the process group
        env["CTLLM_JOB_LOG"] = str(log_path)  # stdout/stderr already go there: the command need not open it
        baseline = status_signature(job.run_dir)
        started = time.time()
        try:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log_file:
                header = f"=== ctllm job {job.id} ({job.kind} {job.name!r}) started {time.ctime(started)} "
                header += f"on devices {job.devices} ===\n$ {job.command}\n"
                log_file.write(header.encode())
                log_file.flush()
                proc = subprocess.Popen(
                    list(job.argv),
                    cwd=job.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as error:
            message = f"could not start {job.argv[0]!r}: {error}"
            _append_line(log_path, f"=== ctllm job {job.id} failed: {message} ===")
            update(conn, job.id, (QUEUED,), state=FAILED, started=started, finished=time.time(), error=message)
            return
        pid_start = processes.start_ticks(proc.pid)  # readable even if it already exited: a zombie until reaped
        with _children_lock:
            _children[proc.pid] = (self.db_path, job.id, proc)
        update(
            conn,
            job.id,
            (QUEUED,),
            state=RUNNING,
            pid=proc.pid,
            pgid=proc.pid,  # start_new_session: the leader's pid is the group and session id
            pid_start=pid_start,
            boot_id=processes.boot_id(),
            status_baseline=baseline,
            started=started,
            token=token,
        )


def _token_variable(token: str) -> str:
    return f"{TOKEN_NAME}={token}" if token else ""


def _reap_children() -> None:
    """Reap every child of this process that has ended and record its exit code (Popen: -N for signal N)."""
    with _children_lock:
        ended = [(pid, *entry) for pid, entry in _children.items() if entry[2].poll() is not None]
        for pid, *_ in ended:
            del _children[pid]
    for pid, db_path, job_id, proc in ended:
        with write_transaction(db_path) as conn:
            conn.execute(
                "UPDATE jobs SET exit_code = ? WHERE id = ? AND pid = ? AND exit_code IS NULL",
                (proc.returncode, job_id, pid),
            )


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings a job's own ``python -m ctllm`` must share with the app that started it (CTLLM_* variables):
    the same data dir, and the same operator decisions on allowed folders, remote code and hub access."""
    env = {"CTLLM_DATA_DIR": str(settings.data_dir)}
    if settings.allowed_roots:
        env["CTLLM_ALLOWED_ROOTS"] = ",".join(str(root) for root in settings.allowed_roots)
    if settings.trust_remote_code:
        env["CTLLM_TRUST_REMOTE_CODE"] = "1"
    if settings.offline:
        env["CTLLM_OFFLINE"] = "1"
    return env


def _final_state(job: Job, run_state: object, run_error: str, tail: str) -> tuple[str, str | None]:
    """Merge how the process ended with what the run itself reported in status.json."""
    if job.cancel_requested is not None:
        return (FINISHED, None) if run_state == FINISHED else (CANCELLED, None)
    if run_state in (FINISHED, CANCELLED):
        return str(run_state), None
    if run_state == FAILED:
        hint = failure_hint(tail + "\n" + run_error)
        return FAILED, hint or run_error or classify_failure(tail, job.exit_code)
    if run_state is None and job.exit_code == 0:
        return FINISHED, None  # a command that keeps no status.json and exited cleanly
    return FAILED, classify_failure(tail, job.exit_code)


def _append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")
    except OSError:
        log.warning("could not append to %s", path)
