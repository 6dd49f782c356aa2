"""Training metrics across micro-batches and processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ctllm.dpo.config import TrainConfig
from ctllm.dpo.losses import LossConfig, extra_metric_names

TOKEN_WEIGHTED = {"logits/chosen": "chosen_tokens", "logits/rejected": "rejected_tokens"}


def metric_keys(config: TrainConfig) -> list[str]:
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]
    return keys + list(extra_metric_names(LossConfig.of(config)))


class MetricSums:
    """Weighted sums of per-micro-batch means, reduced over processes into per-step means."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.pairs = 0
        self.tokens = 0

    def add(self, metrics: dict[str, float], pairs: int, counts: dict[str, int], tokens: int) -> None:
        for key, value in metrics.items():
            weight = counts[TOKEN_WEIGHTED[key]] if key in TOKEN_WEIGHTED else pairs
            self.values[key] = self.values.get(key, 0.0) + value * weight
            self.weights[key] = self.weights.get(key, 0.0) + weight
        self.pairs += pairs
        self.tokens += tokens

    def reduce(self, accelerator: Any, keys: Sequence[str]) -> tuple[dict[str, float], int, int]:
        """(means over every process, total pairs, total tokens). ``keys`` must be the same on every process."""
        flat = [self.values.get(k, 0.0) for k in keys] + [self.weights.get(k, 0.0) for k in keys]
        local = torch.tensor(flat + [self.pairs, self.tokens], dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum").cpu().tolist()
        n = len(keys)
        means = {k: (total[i] / total[n + i] if total[n + i] else 0.0) for i, k in enumerate(keys)}
        return means, int(total[2 * n]), int(total[2 * n + 1])


class Window:
    """The steps since the last logged one: their metrics, pairs, tokens and time."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self.pairs = self.tokens = 0
        self.seconds = 0.0

    def add(self, means: dict[str, float], pairs: int, tokens: int, seconds: float) -> None:
        self.records.append(means)
        self.pairs += pairs
        self.tokens += tokens
        self.seconds += seconds

    def means(self, keys: Sequence[str]) -> dict[str, float]:
        return {k: sum(w[k] for w in self.records) / len(self.records) for k in keys}
