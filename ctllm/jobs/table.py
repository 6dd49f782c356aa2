"""The ``jobs`` table, kept in the same SQLite file as the pair store (WAL, short-lived connections)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ctllm.runs import LOG_NAME

KINDS = ("train", "synth", "score")
QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
FINISHED, FAILED, CANCELLED = "finished", "failed", "cancelled"
ACTIVE_STATES = (RUNNING, CANCELLING)  # a process was started and its leader has not been seen dead yet
FINAL_STATES = (FINISHED, FAILED, CANCELLED)
STATES = (QUEUED, *ACTIVE_STATES, *FINAL_STATES)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    argv TEXT NOT NULL,               -- JSON list
    command TEXT NOT NULL,            -- shell line a user can copy
    cwd TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',   -- JSON object: variables set on top of the app's environment
    devices TEXT NOT NULL,            -- 'cpu' or GPU ids '0,1' (CUDA_VISIBLE_DEVICES)
    run_dir TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    pid_start INTEGER,                -- start time of pid in clock ticks since boot (/proc/PID/stat field 22)
    boot_id TEXT NOT NULL DEFAULT '',
    status_baseline TEXT NOT NULL DEFAULT '',  -- status.json identity at start: older content is not this job's
    token TEXT NOT NULL DEFAULT '',   -- CTLLM_JOB_TOKEN in the job's environment: finds its escaped descendants
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    exit_code INTEGER,
    error TEXT,
    log_tail TEXT,                    -- end of train.log when the job ended
    owner TEXT NOT NULL DEFAULT '',
    resumed_from INTEGER,
    cancel_requested REAL,
    reap_deadline REAL                -- set while processes of the group must still end; SIGKILL after it
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    name: str
    argv: tuple[str, ...]
    command: str
    cwd: str
    devices: str
    run_dir: Path
    state: str
    created: float
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    pgid: int | None = None
    pid_start: int | None = None
    boot_id: str = ""
    status_baseline: str = ""
    token: str = ""
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    error: str | None = None
    log_tail: str | None = None
    owner: str = ""
    resumed_from: int | None = None
    cancel_requested: float | None = None
    reap_deadline: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def holds_devices(self) -> bool:
        """A process of this job may still run: its leader, or group members still being ended."""
        return self.active or self.reap_deadline is not None

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME

    def duration(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now if now is not None else time.time())
        return max(0.0, end - self.started)

    def to_dict(self) -> dict:
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["argv"] = list(self.argv)
        record["run_dir"] = str(self.run_dir)
        record["duration"] = self.duration()
        return record


def job_from_row(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["argv"] = tuple(json.loads(data["argv"]))
    data["env"] = json.loads(data["env"] or "{}")
    data["run_dir"] = Path(data["run_dir"])
    return Job(**data)


def connect(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


# Columns added after the first release of the table: name -> declaration (ALTER TABLE ADD COLUMN).
LATER_COLUMNS = {"token": "TEXT NOT NULL DEFAULT ''"}


def ensure_schema(db_path: Path) -> None:
    with closing(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, declaration in LATER_COLUMNS.items():
            if name not in present:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")


@contextmanager
def closing(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(db_path)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def write_transaction(db_path: Path) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: one writer at a time across processes (the app, the CLI, a watcher thread)."""
    with closing(db_path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def update(
    conn: sqlite3.Connection, job_id: int, where_states: tuple[str, ...] | None = None, **values: object
) -> bool:
    """Set columns of one job; with ``where_states``, only if it is still in one of them. True if a row changed."""
    assignments = ", ".join(f"{column} = ?" for column in values)
    sql = f"UPDATE jobs SET {assignments} WHERE id = ?"
    params: list[object] = [*values.values(), job_id]
    if where_states:
        sql += f" AND state IN ({', '.join('?' for _ in where_states)})"
        params.extend(where_states)
    return conn.execute(sql, params).rowcount == 1
