"""The trained model's folder, ``final/``: written beside it and renamed into place (never half a model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM


def save_final(final: Path, model: torch.nn.Module, tokenizer: Any, note: dict[str, Any],
               state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The model (or its adapter) and tokenizer, with ``note`` as ctllm_run.json.

    ``state_dict``: the whole model's weights when ``model`` holds only a shard of them (see :func:`gather_full`).
    """
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base_config = getattr(model, "config", None)
    if base_config is not None and hasattr(base_config, "use_cache"):
        base_config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    (tmp / "ctllm_run.json").write_text(json.dumps(note, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def gather_full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The FSDP-sharded ``model``'s whole weights on the CPU of the main process (empty elsewhere); collective.

    A tied weight (the LM head sharing the embeddings) is kept under its first name only, as save_pretrained
    writes an unsharded model.
    """
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.state_dict(keep_vars=True).items():
        if first.setdefault(id(param), name) != name:
            tied.add(name)
    return {name: tensor for name, tensor in full.items() if name not in tied}


def load_final(final: Path, device: torch.device) -> torch.nn.Module:
    """The saved whole model (the end-of-run evaluation of a sharded run uses it on the main process)."""
    return AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).to(device)
