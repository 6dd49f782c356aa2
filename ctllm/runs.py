"""The run-directory contract: what a run (training or synthesis) writes, and how everyone else reads it.

```
<runs_dir>/<name>/
  config.yaml      the resolved TrainConfig, plus a `resolved:` block (reference, data hash, sizes)
  status.json      state (queued|running|finished|failed|cancelled), step, total_steps, started, finished, error, ...
  metrics.jsonl    one JSON object per logging step (TRL metric names; eval ones prefixed eval_)
  train.log        the human-readable log
  data.parquet     snapshot of the training pairs (eval.parquet: the held-out ones)
  checkpoints/     step-N/ folders (safetensors)
  final/           the trained model (full: model + tokenizer; LoRA: adapter + tokenizer + base note)
  tensorboard/     TensorBoard events
```

Only the main process writes (``RunDir``); readers (the job manager, the UI, evaluation, the model registry, the CLI)
never fail on a missing file or a half-written last line. See docs/architecture.md, "The run directory".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

STATES = ("queued", "running", "finished", "failed", "cancelled")
FINAL_STATES = ("finished", "failed", "cancelled")

CONFIG_NAME = "config.yaml"
STATUS_NAME = "status.json"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "train.log"
# What a running process is doing, in status.json's ``phase`` (with ``phase_done`` / ``phase_total`` when counted):
# a training run's phases in order, and "scoring" for ``python -m ctllm score``.
PHASES = ("converting", "loading", "tokenizing", "reference", "training", "evaluating", "scoring")
PHASE_WRITE_INTERVAL_S = 1.0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as strings so every line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunDir:
    def __init__(self, path: Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer  # False on ranks other than 0: every write is a no-op

    config_path = property(lambda self: self.path / CONFIG_NAME)
    status_path = property(lambda self: self.path / STATUS_NAME)
    metrics_path = property(lambda self: self.path / METRICS_NAME)
    log_path = property(lambda self: self.path / LOG_NAME)
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    final_dir = property(lambda self: self.path / "final")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")
    data_path = property(lambda self: self.path / "data.parquet")
    eval_data_path = property(lambda self: self.path / "eval.parquet")

    def create(self) -> RunDir:
        if self.writer:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict[str, Any], resolved: dict[str, Any]) -> None:
        if not self.writer:
            return
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        text += "# Filled in by the run (ignored when this file is read back as a config):\n"
        text += yaml.safe_dump({"resolved": _json_safe(resolved)}, sort_keys=False, allow_unicode=True)
        _atomic_write(self.config_path, text)

    def update_status(self, **changes: Any) -> dict[str, Any]:
        status = read_status(self.path)
        status.update(changes)
        status["updated"] = now_iso()
        if self.writer:
            _atomic_write(self.status_path, json.dumps(_json_safe(status), indent=2, ensure_ascii=False) + "\n")
        return status

    def set_phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Say in status.json what the run is doing now (one of PHASES) and, when counted, how far it got."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; one of {', '.join(PHASES)}")
        self.update_status(phase=name, phase_done=done, phase_total=total)

    def phase_progress(
        self, name: str, interval_s: float = PHASE_WRITE_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for a counted phase that writes status.json at most once per
        ``interval_s`` (and always for the first and the last call), so a fast loop does not rewrite it per batch."""
        last = [float("-inf")]

        def progress(done: int, total: int) -> None:
            now = clock()
            if done < total and now - last[0] < interval_s:
                return
            last[0] = now
            self.set_phase(name, done, total)

        return progress

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")
            handle.flush()

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop records logged after the checkpoint's step (they will be logged again)."""
        if not self.writer or not self.metrics_path.exists():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= after_step]
        _atomic_write(self.metrics_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_status(run_dir: Path, stale_signature: str = "") -> dict[str, Any]:
    """The run's status.json as a dict; {} when it is missing or unreadable (not written yet, or mid-replace), or
    still the very file seen as ``stale_signature`` when a job started: a resumed run's folder holds the previous
    process's final status until the new process writes its own."""
    if stale_signature and status_signature(run_dir) == stale_signature:
        return {}
    try:
        record = json.loads((Path(run_dir) / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_metrics(run_dir: Path, after_line: int = 0) -> list[dict[str, Any]]:
    """Metric records from line ``after_line`` on (0-based count of lines already read).

    A last line still being written (no newline yet, or not valid JSON) is left for the next call.
    """
    path = Path(run_dir) / METRICS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is incomplete (or empty)
    records = []
    for line in complete[after_line:]:
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def best_eval_accuracy(run_dir: Path) -> float | None:
    """The best held-out reward accuracy a run logged (None before its first evaluation)."""
    values = [r.get("eval_rewards/accuracies") for r in read_metrics(run_dir)]
    numbers = [v for v in values if isinstance(v, (int, float))]
    return max(numbers) if numbers else None


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a dict, ``resolved`` block included; {} when missing."""
    path = Path(run_dir) / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run folder under ``runs_dir`` (those with a status.json or config.yaml), newest first."""
    runs = []
    root = Path(runs_dir)
    if not root.is_dir():
        return runs
    for folder in root.iterdir():
        if not folder.is_dir() or not ((folder / STATUS_NAME).exists() or (folder / CONFIG_NAME).exists()):
            continue
        status = read_status(folder)
        runs.append(
            {
                "name": folder.name,
                "path": str(folder),
                "state": status.get("state", "unknown"),
                "step": status.get("step", 0),
                "total_steps": status.get("total_steps"),
                "started": status.get("started"),
                "finished": status.get("finished"),
                "has_final": (folder / "final").is_dir(),
                "status": status,
            }
        )
    runs.sort(key=lambda run: (run["started"] or "", run["name"]), reverse=True)
    return runs


# -- cheap readers for files a live process is writing --------------------------------------------------------------

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
