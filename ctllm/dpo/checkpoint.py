"""Checkpoints in safetensors: weights (LoRA: the adapter only), optimizer, scheduler, RNG and the step.

```
checkpoints/step-000120/
  model.safetensors + config.json   (full fine-tuning; loadable with from_pretrained)
  adapter_model.safetensors + adapter_config.json   (LoRA; loadable with peft)
  optimizer.safetensors             optimizer state tensors, flattened "state.<param>.<name>"
  rng.safetensors                   torch (and CUDA) generator states
  trainer_state.json                step, epoch, scheduler state, param groups, python RNG, anything extra
```

Sharded runs (FSDP) write each process's shard of the model and optimizer with torch.distributed.checkpoint instead
of the weights and optimizer files (no process ever holds the whole state; ``final/`` is the plain model folder):

```
checkpoints/step-000120/
  sharded/                          .metadata + __<rank>_0.distcp: model and optimizer state, every process's shard
  rng.safetensors, trainer_state.json ("sharded": true)
```

A checkpoint folder is written under a temporary name and renamed when complete, so a folder named
``step-N`` is always whole.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ctllm.errors import UserError

PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"
SHARDED = "sharded"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            key = f"state.{param_id}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().to("cpu").contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = cuda_state
    return tensors


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` (atomically) and return it. ``model`` is the unwrapped model."""
    return _atomically(Path(folder), lambda tmp: _write_checkpoint(tmp, model, optimizer, scheduler, step, extra))


def save_sharded_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    is_main: bool,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Every process writes its shard of the FSDP ``model`` and its ``optimizer``; the main process the rest and the
    rename. Called on every process (collective); the folder must be on storage every process sees."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp / SHARDED))
    except Exception as error:  # raised on every process when one fails
        if not _out_of_space(error):
            raise
        dist.barrier()
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _no_space(folder, error) from error
    if is_main:
        extra = {"sharded": True, **(extra or {})}
        _atomically(folder, lambda _: _write_trainer_state(tmp, model, scheduler, step, extra), tmp=tmp)
    dist.barrier()
    return folder


def _atomically(folder: Path, write: Any, tmp: Path | None = None) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``folder``; running out of disk space leaves a UserError and no tmp."""
    if tmp is None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except Exception as error:
        if not _out_of_space(error):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a partial save only takes the space the next attempt needs
        raise _no_space(folder, error) from error
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _no_space(folder: Path, error: BaseException) -> UserError:
    kept = sorted(p.name for p in folder.parent.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
    return UserError(
        f"{folder}: no space left on the device while saving the checkpoint ({error}); nothing of it was kept, "
        f"earlier checkpoints are intact ({', '.join(kept) or 'none'}). Free disk space or lower "
        "save_total_limit, then resume the run."
    )


_SPACE_MARKERS = ("no space left", "file too large", "disk quota exceeded", "os error 28", "os error 27")


def _out_of_space(error: BaseException) -> bool:
    """ENOSPC / EFBIG / EDQUOT, raised directly or wrapped (safetensors reports it as a SafetensorError)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    return any(marker in str(error).lower() for marker in _SPACE_MARKERS)


def _write_checkpoint(
    tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
    extra: dict[str, Any] | None,
) -> None:
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    _write_trainer_state(tmp, model, scheduler, step, {"optimizer": optimizer_meta, **(extra or {})})


def _write_trainer_state(tmp: Path, model: torch.nn.Module, scheduler: Any, step: int, extra: dict[str, Any]) -> None:
    """rng.safetensors and trainer_state.json (written last: a folder with it is whole)."""
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
    state = {
        "step": step,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "python_rng": _to_json(random.getstate()),
        "peft": is_peft_model(model),
        **extra,
    }
    (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def load_model_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load the checkpoint's weights into ``model`` (full model or peft model with the same adapter layout)."""
    folder = Path(folder)
    if is_peft_model(model):
        # Lazy: importing peft takes seconds, and only LoRA runs and adapters need it.
        from peft import set_peft_model_state_dict

        path = folder / "adapter_model.safetensors"
        if not path.is_file():
            raise UserError(f"{folder}: no adapter_model.safetensors (was this run trained without LoRA?)")
        result = set_peft_model_state_dict(model, load_file(str(path)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"{path}: adapter weights do not fit the model: {unexpected[:3]}")
        return
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no model*.safetensors (was this run trained with LoRA?)")
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        weights.update(load_file(str(path)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if isinstance(getattr(model, "_tied_weights_keys", None), dict):
        tied = set(model._tied_weights_keys)
    really_missing = [key for key in missing if key not in tied]
    if really_missing or unexpected:
        raise UserError(f"{folder}: weights do not fit the model (missing {really_missing[:3]}, "
                        f"unexpected {unexpected[:3]})")


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from ``folder``; return its trainer state (step, extras).

    ``sharded``: ``model`` is FSDP-sharded and ``optimizer`` its (unwrapped) optimizer; every process reads its shard.
    """
    folder = Path(folder)
    state_path = folder / TRAINER_STATE
    if not state_path.is_file():
        raise UserError(f"{folder} is not a complete checkpoint ({TRAINER_STATE} missing)")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if bool(state.get("sharded")) != sharded:
        saved, now = ("sharded (fsdp)", "ddp") if state.get("sharded") else ("ddp", "sharded (fsdp)")
        raise UserError(f"{folder}: a {saved} checkpoint cannot resume a {now} run; resume with config field "
                        f"'distributed' as the run had it")
    if sharded:
        model_state, optimizer_state = get_state_dict(model, optimizer)  # the shapes and shards to read into
        wanted = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(wanted, checkpoint_id=str(folder / SHARDED))
        set_state_dict(model, optimizer, model_state_dict=wanted["model"], optim_state_dict=wanted["optimizer"])
    else:
        load_model_weights(folder, model)
        tensors = load_file(str(folder / "optimizer.safetensors"))
        optimizer.load_state_dict(_optimizer_state_dict(tensors, state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    cuda_states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if state.get("python_rng") is not None:
        random.setstate(_to_tuple(state["python_rng"]))
    return state
