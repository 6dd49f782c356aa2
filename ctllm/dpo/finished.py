"""The end of a training run as a callback sees it: ``train(..., on_finished=...)`` hands it a ``FinishedRun``.

The training loop knows nothing of what runs then (``ctllm.evaluate`` passes its end-of-run evaluation through
``ctllm.cli.train``): it saves the model first, calls the callback on the main process, and records what it
returns in the run's summary. The callback must check ``stop`` (set by SIGTERM/SIGINT) between pieces of work and
hand it to generation; when it raises with ``stop`` set, the run is still finished, its evaluation "cancelled".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctllm.dpo.config import TrainConfig
from ctllm.settings import Settings

# (chosen, rejected, ref chosen, ref rejected log-probs, chosen tokens, rejected tokens) of one held-out pair.
PairRow = tuple[float, float, float, float, int, int]


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path  # final/ holds the trained model already
    config: TrainConfig
    settings: Settings
    model: Any  # the trained model in memory (eval mode is the callback's to set), and its tokenizer and spec
    tokenizer: Any
    spec: Any
    held_out: list[PairRow | None]  # one per pair of eval.parquet, in order; None for a pair tokenization dropped;
    # empty for a reference-free run (no reference log-probs: the evaluation scores the pairs itself)
    log: Callable[[str], None]
    stop: threading.Event


OnFinished = Callable[[FinishedRun], dict[str, Any]]  # returns what the run's summary keeps
