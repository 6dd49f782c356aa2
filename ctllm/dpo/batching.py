"""Batches that waste little compute on padding, and the collation of pairs into model rows."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ctllm.dpo.tokenize import TokenizedPair

GROUP_FACTOR = 16  # a shuffled window of this many batches is sorted by length, then cut into batches


def length_grouped_batches(
    items: Sequence[TokenizedPair],
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    group_factor: int = GROUP_FACTOR,
) -> list[list[int]]:
    """Indices into ``items`` cut into batches of similar lengths; deterministic per (seed, epoch).

    With ``shuffle``: a seeded permutation is split into windows of ``group_factor`` batches, each window is
    sorted by length (longest first) and cut into batches, and the batch order is shuffled again, so every epoch
    sees different neighbours while padding stays small. Without: all items sorted by length, longest first
    (evaluation and reference passes, where order does not matter). The last batch may be short.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = [item.length for item in items]
    order = list(range(len(items)))
    if not shuffle:
        order.sort(key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(f"ctllm-batches:{seed}:{epoch}")
    rng.shuffle(order)
    window = batch_size * max(1, group_factor)
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        group = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    # Keep a short last batch at the end, where gradient accumulation and resumption expect it.
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    rng.shuffle(full)
    return full + short


def collate(
    items: Sequence[TokenizedPair], pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Rows for one forward: B chosen rows then B rejected rows, each prompt + completion, right-padded.

    ``loss_mask`` is 1 exactly on completion tokens; ``index`` holds each pair's ``TokenizedPair.index``.
    """
    if not items:
        raise ValueError("collate needs at least one pair")
    rows = [(it.prompt_ids, it.chosen_ids) for it in items] + [(it.prompt_ids, it.rejected_ids) for it in items]
    width = max(len(p) + len(c) for p, c in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (prompt, completion) in enumerate(rows):
        n_prompt, n = len(prompt), len(prompt) + len(completion)
        input_ids[r, :n] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[r, :n] = 1
        loss_mask[r, n_prompt:n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "index": torch.tensor([it.index for it in items], dtype=torch.long),
    }
