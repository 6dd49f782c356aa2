"""What the handlers share: the settings, the store and the job manager, all opened lazily.

Nothing here imports torch: the app must answer HTTP within seconds of starting, and models load on
first use (``ctllm.models`` is imported inside the chat handlers).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.evaluate.arena_votes import CHAT_VOTES_COLLECTION as CHAT_VOTES_COLLECTION  # re-exported for the tabs
from ctllm.jobs.manager import JobManager
from ctllm.pairs.importer import import_pairs
from ctllm.pairs.store import Store
from ctllm.paths import ASSETS_DIR
from ctllm.settings import Settings

log = logging.getLogger(__name__)

SAMPLES_COLLECTION = "samples"
HAND_WRITTEN_COLLECTION = "hand-written"
SAMPLE_PAIRS = ASSETS_DIR / "pairs" / "sample_pairs.jsonl"


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class AppContext:
    settings: Settings
    _store: Any = None
    _jobs: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: threading.Event = field(default_factory=lambda: _set_event())

    @property
    def store(self) -> Any:
        """The pairs store (``ctllm.pairs.store.Store``), opened on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = Store(self.settings.db_path)
        return self._store

    @property
    def jobs(self) -> Any:
        """The job manager (``ctllm.jobs.manager.JobManager``), created on first use."""
        if self._jobs is None:
            with self._lock:
                if self._jobs is None:
                    self._jobs = JobManager(self.settings)
        return self._jobs

    def prepare(self, samples: Path = SAMPLE_PAIRS) -> None:
        """First start with an empty store: import the shipped sample pairs into "samples"; re-attach to jobs
        still running. Runs in a background thread so the HTTP server starts at once; handlers that need it
        call :meth:`wait_until_ready`."""
        try:
            store = self.store
            if not store.list_collections() and samples.is_file():
                summary = import_pairs(store, samples, SAMPLES_COLLECTION, created_by="app")
                log.info("first start: %s", summary.report(max_errors=3))
            self.jobs.reattach()
        except Exception:  # the app still serves; the Pairs tab shows what is there
            log.exception("preparing the store failed")
        finally:
            self._ready.set()

    def prepare_in_background(self) -> threading.Thread:
        self._ready.clear()
        thread = threading.Thread(target=self.prepare, name="ctllm-prepare", daemon=True)
        thread.start()
        return thread

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait for a background :meth:`prepare`; return at once when none was started."""
        self._ready.wait(timeout)

    def close(self) -> None:
        for thing in (self._store, self._jobs):
            close = getattr(thing, "close", None)
            if callable(close):
                close()
