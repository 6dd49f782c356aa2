"""Read what a running job writes into its run dir, cheaply and tolerating half-written files."""

from __future__ import annotations

import json
import os
from pathlib import Path

LOG_NAME = "train.log"
STATUS_NAME = "status.json"
METRICS_NAME = "metrics.jsonl"

_BLOCK = 8192


def _tail_bytes(path: Path, max_lines: int, max_bytes: int) -> bytes:
    """The end of the file holding at least ``max_lines`` newlines (or the whole file / ``max_bytes``)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            position = end
            data = b""
            while position > 0 and data.count(b"\n") <= max_lines and len(data) < max_bytes:
                step = min(_BLOCK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
            return data[-max_bytes:]
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return b""


def tail_lines(path: Path, n: int = 40, max_bytes: int = 256_000) -> str:
    """The last ``n`` lines of a text file ('' when it does not exist). Progress bars that redraw with '\\r'
    are reduced to their last state, so a tqdm line shows once, not thousands of times."""
    if n <= 0:
        return ""
    data = _tail_bytes(path, n, max_bytes).decode("utf-8", errors="replace")
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in data.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines[-n:])


def last_json_line(path: Path) -> dict | None:
    """The last complete JSON object of a .jsonl file; a line still being written is skipped."""
    data = _tail_bytes(path, 4, 1_000_000)
    for raw in reversed(data.split(b"\n")):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


def status_signature(run_dir: Path) -> str:
    """Identity of the status.json on disk now (inode, mtime, size); '' when there is none."""
    try:
        info = (Path(run_dir) / STATUS_NAME).stat()
    except OSError:
        return ""
    return f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"


def read_status(run_dir: Path, stale_signature: str = "") -> dict | None:
    """The run's status.json, or None when missing, unreadable, or still the very file seen as
    ``stale_signature`` when the job started: a resumed run's folder holds the previous process's final status
    until the new process writes its own."""
    if stale_signature and status_signature(run_dir) == stale_signature:
        return None
    try:
        record = json.loads((Path(run_dir) / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
