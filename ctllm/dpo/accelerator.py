"""The accelerate side of a run: the Accelerator for the config and agreement between processes.

Sharded training (``distributed: fsdp``, or an accelerate config file with ``distributed_type: FSDP``): FSDP2 full
sharding through accelerate's FSDP plugin. ``accelerator.prepare`` then shards every decoder layer (and the
embeddings) with ``fully_shard``: each process keeps 1/N of the parameters, gradients and optimizer state. LoRA
works the same way (the frozen base is sharded too; only the adapter has gradients and optimizer state).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    broadcast_object_list,
    gather_object,
    is_tensorboard_available,
)
from torch.distributed.tensor import DTensor

from ctllm.dpo.config import TrainConfig, is_reference_free, merge
from ctllm.errors import UserError
from ctllm.settings import Settings


def make_accelerator(config: TrainConfig, settings: Settings) -> tuple[Any, TrainConfig, Path]:
    """(Accelerator, config with run_name and output_dir filled in, run dir).

    On a CUDA-less machine the processes use the CPU and gloo. ``cpu=True`` matters there: without it, processes
    started by ``accelerate launch --multi_gpu`` each believe they are alone (world size 1) and train independently.
    """
    device = (config.device or settings.device or "auto").lower()
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config field 'device' = {device!r}: CUDA is not available here; use cpu or auto")
    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(int(device.split(":", 1)[1]))
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_bf16_supported() else "no"
    if use_cpu and precision != "no":
        raise UserError(f"config field 'mixed_precision' = {precision!r} needs CUDA; use no or auto on a CPU")
    state = PartialState(cpu=use_cpu)
    name = config.run_name or _agree(state, time.strftime("dpo-%Y%m%d-%H%M%S"))
    path = (Path(config.output_dir).expanduser() if config.output_dir else settings.runs_dir / name).resolve()
    config = merge(config, {"run_name": name, "output_dir": str(path)})
    log_with = None
    if config.report_to == "tensorboard":
        log_with = "tensorboard" if is_tensorboard_available() else None
    fsdp = _fsdp_plugin(config, state)
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision, log_with=log_with, project_dir=str(path),
                              fsdp_plugin=fsdp)
    if fsdp is not None and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate only turns FSDP on for accelerator devices; FSDP2's fully_shard itself runs on CPU with gloo.
        # Both states, as accelerate does: a later AcceleratorState() copies the process state's type.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = fsdp
    if fsdp is not None:
        free = is_reference_free(config.loss_type)
        config = merge(config, {"distributed": "fsdp", **{k: v for k, v in FSDP_FORCED.items()
                                                          if not (free and k == "precompute_ref")}})
    return accelerator, config, path


# What an FSDP run changes in the config (the log says so): the reference log-probs are computed once before the
# model is sharded (no second model held; a reference-free loss has none), and the forward is the model's own, run
# through FSDP's hooks.
FSDP_FORCED = {"precompute_ref": True, "share_prompt": False, "lean_activations": False, "packing": False}


def _fsdp_plugin(config: TrainConfig, state: Any) -> FullyShardedDataParallelPlugin | None:
    """FSDP2 full sharding when the config or the accelerate launch asks for FSDP and there are several processes."""
    from_launch = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not (config.distributed == "fsdp" or from_launch) or state.num_processes == 1:
        return None
    version = int(os.environ.get("FSDP_VERSION", "2")) if from_launch else 2
    if version != 2:
        raise UserError(f"accelerate config 'fsdp_version' = {version}: this engine shards with FSDP2; set "
                        "fsdp_version: 2 in the accelerate config file")
    # Read from the accelerate config file's FSDP_* variables when launched with one; these are the defaults.
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=None if from_launch else True,  # True: parameters re-sharded after each forward
        auto_wrap_policy=None if from_launch else "transformer_based_wrap",  # one unit per decoder layer
        state_dict_type=None if from_launch else "SHARDED_STATE_DICT",
    )


def _agree(state: Any, value: Any) -> Any:
    """The main process's value on every process (e.g. a run name made from the clock)."""
    if state.num_processes == 1:
        return value

    return broadcast_object_list([value])[0]


def agree_flag(accelerator: Any, flag: bool) -> bool:
    """True on every process when any process has it (so all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def bytes_per_process(accelerator: Any, model: torch.nn.Module, optimizer: Any) -> list[dict[str, int]]:
    """Every process's bytes of parameters and optimizer state it holds (its shard under FSDP), and the whole
    model's parameter bytes; collective. Called after an optimizer step, once the optimizer state exists."""
    inner = getattr(optimizer, "optimizer", optimizer)
    state = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v)]
    mine = {"parameters": sum(_local_bytes(p) for p in model.parameters()),
            "optimizer": sum(_local_bytes(v) for v in state),
            "parameters_total": sum(p.numel() * p.element_size() for p in model.parameters())}
    return gather_object([mine]) if accelerator.num_processes > 1 else [mine]


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()
