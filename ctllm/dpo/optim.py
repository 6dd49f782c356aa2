"""The optimizer and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import get_scheduler

from ctllm.dpo.config import TrainConfig


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D tensors), as HF Trainer and nanoGPT do."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates in place: the per-tensor loop's temporaries (two of the embedding's size) would
    # add to the step's peak on a CPU.
    fused = all(p.device.type == "cpu" for p in params) or None
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.999), eps=1e-8,
                             fused=fused)


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    return math.ceil(config.warmup_ratio * total_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    name = {"constant": "constant_with_warmup"}.get(config.scheduler, config.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps(config, total_steps),
                         num_training_steps=total_steps)
