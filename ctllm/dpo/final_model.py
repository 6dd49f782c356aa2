"""The trained model's folder, ``final/``: written beside it and renamed into place (never half a model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch


def save_final(final: Path, model: torch.nn.Module, tokenizer: Any, note: dict[str, Any]) -> None:
    """The model (or its adapter) and tokenizer, with ``note`` as ctllm_run.json."""
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base_config = getattr(model, "config", None)
    if base_config is not None and hasattr(base_config, "use_cache"):
        base_config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "ctllm_run.json").write_text(json.dumps(note, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
