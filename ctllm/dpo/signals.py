"""SIGTERM/SIGINT for a training run: a stop flag that every phase checks at its own safe points."""

from __future__ import annotations

import signal
import threading
from typing import Any


class TrainingStopped(Exception):
    """The run ended early; ``state`` is "failed" or "cancelled"."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


class StopSignal:
    """The handler sets ``event``; nothing else happens in it once ``defer`` is on.

    While the run sets up (``defer`` off) a signal also raises ``TrainingStopped`` at once: nothing is trained yet,
    so nothing is lost. From the first training step on, the loop stops at the end of the step (and checkpoints),
    and the end-of-run evaluation hands ``event`` to generation, which checks it between tokens: no exception is
    ever raised into code blocked in torch, where a broad ``except`` could swallow it.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.defer = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def install(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.event.set()
        if not self.defer:
            raise TrainingStopped("cancelled", f"stopped by {signal.Signals(signum).name}")
