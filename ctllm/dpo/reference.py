"""Reference log-probs computed once in a no-grad pass and cached by (model, data, max_length) hash."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ctllm.dpo.batching import collate, length_grouped_batches
from ctllm.dpo.logps import concatenated_forward
from ctllm.dpo.tokenize import TokenizedPair

KEYS = ("chosen", "rejected", "chosen_tokens", "rejected_tokens")


def reference_cache_key(model_id: str, data_hash: str, max_length: int, **extra: Any) -> str:
    """A file-name-safe key for the reference log-probs of ``model_id`` on the data ``data_hash``.

    ``extra`` takes anything else that changes the tokens (e.g. ``max_prompt_length``, a tokenizer id).
    """
    payload = json.dumps(
        {"model": model_id, "data": data_hash, "max_length": max_length, **extra}, sort_keys=True, default=str
    )
    return "ref-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _covers(cached: dict[str, Tensor], items: Sequence[TokenizedPair]) -> bool:
    if any(k not in cached for k in KEYS):
        return False
    size = cached["chosen"].numel()
    for item in items:
        if item.index >= size or int(cached["chosen_tokens"][item.index]) != len(item.chosen_ids):
            return False
        if int(cached["rejected_tokens"][item.index]) != len(item.rejected_ids):
            return False
    return True


def precompute_reference_logps(
    model: Any,
    items: Sequence[TokenizedPair],
    pad_id: int,
    batch_size: int,
    cache_dir: Path | None,
    key: str | None,
    progress: Callable[[int, int], None] | None = None,
    batches: Sequence[Sequence[int]] | None = None,
    forward: Callable[[Any, list[TokenizedPair]], Any] | None = None,
) -> dict[str, Tensor]:
    """Summed completion log-probs of every item under ``model``, indexed by ``TokenizedPair.index``.

    Returns {"chosen": [N] fp32, "rejected": [N] fp32, "chosen_tokens": [N] int64, "rejected_tokens": [N] int64}
    with N = largest index + 1; positions of dropped pairs hold NaN and -1. With ``cache_dir`` and ``key``, a
    cached file whose token counts match the items is returned instead of computing; a fresh result is saved as
    ``cache_dir/key.safetensors``. ``progress(done, total)`` is called after each batch.

    ``batches`` (indices into ``items``; default: length-sorted batches of ``batch_size``) should be the training
    loop's first-epoch micro-batches when it can be: the same rows padded to the same width give bit-identical
    log-probs, so step 1 with policy = reference logs exactly ln 2 and accuracy 0. Other layouts differ by float
    noise (~1e-7 relative), which can flip the strict accuracy of tied pairs. Put the layout in the cache key
    (``reference_cache_key(..., batch_size=..., seed=...)``) for that guarantee to survive a cache hit.
    ``forward(model, items)`` replaces ``concatenated_forward`` (e.g. the training loop's shared-prompt forward).
    """
    path = Path(cache_dir) / f"{key}.safetensors" if cache_dir is not None and key else None
    if path is not None and path.is_file():
        try:
            cached = load_file(path)
        except Exception:  # a torn or foreign file: compute again
            cached = {}
        if _covers(cached, items):
            return cached

    size = max((item.index for item in items), default=-1) + 1
    result = {
        "chosen": torch.full((size,), float("nan"), dtype=torch.float32),
        "rejected": torch.full((size,), float("nan"), dtype=torch.float32),
        "chosen_tokens": torch.full((size,), -1, dtype=torch.long),
        "rejected_tokens": torch.full((size,), -1, dtype=torch.long),
    }
    was_training = getattr(model, "training", False)
    model.eval()
    done = 0
    try:
        with torch.no_grad():
            if batches is None:
                batches = length_grouped_batches(items, batch_size, seed=0, epoch=0, shuffle=False)
            for batch_ids in batches:
                chunk = [items[i] for i in batch_ids]
                out = concatenated_forward(model, collate(chunk, pad_id)) if forward is None else forward(model, chunk)
                index = torch.tensor([item.index for item in chunk], dtype=torch.long)
                result["chosen"][index] = out.chosen_logps.float().cpu()
                result["rejected"][index] = out.rejected_logps.float().cpu()
                result["chosen_tokens"][index] = out.chosen_tokens.cpu()
                result["rejected_tokens"][index] = out.rejected_tokens.cpu()
                done += len(batch_ids)
                if progress is not None:
                    progress(done, len(items))
    finally:
        if was_training:
            model.train()
    if not _covers(result, items):
        raise ValueError("the reference batches do not cover every item")

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(result, tmp, metadata={"key": str(key), "pairs": str(len(items))})
        os.replace(tmp, path)
    return result
