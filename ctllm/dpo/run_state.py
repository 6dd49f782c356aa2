"""What every step of one training run reads: made once in ``ctllm.dpo.train.train``, passed from step to step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ctllm.dpo.config import TrainConfig
from ctllm.dpo.finished import OnFinished
from ctllm.dpo.heap import Heap
from ctllm.dpo.signals import StopSignal
from ctllm.runs import RunDir
from ctllm.settings import Settings


@dataclass
class Run:
    """The run's fixed context; what it trains lives in ``ctllm.dpo.train.Training``."""

    config: TrainConfig  # run_name and output_dir filled in
    settings: Settings
    accelerator: Any
    run_dir: RunDir
    log: logging.Logger
    stop: StopSignal
    resume: bool = False
    show_progress: bool = True
    on_finished: OnFinished | None = None  # the end-of-run evaluation, if any (see ctllm.dpo.finished)
    heap: Heap = field(default_factory=Heap)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)
