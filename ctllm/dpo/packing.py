"""Padding-free forward: the pairs of a micro-batch packed into one row, each prompt once.

A pair is laid out as prompt, chosen answer, rejected answer, one pair after another in a single row with no
padding. Each token gets its position within its own sequence (the rejected answer continues from the end of the
prompt, as the chosen one does), and a block-diagonal causal mask (a 4-D boolean ``attention_mask``, which
transformers passes to SDPA/eager attention as it is) lets a token see only earlier tokens of its own pair's
prompt and of its own answer: the rejected answer never sees the chosen one, nor another pair. The model reads
P + C + R tokens per pair, like :mod:`ctllm.dpo.shared_prompt`, without its cache or its padding.

The logits are asked for only at the positions that predict a completion token (``logits_to_keep`` as an index
tensor): the first answer token of either answer is predicted by the prompt's last position. Per-row sums are
then the same as :func:`ctllm.dpo.logps.concatenated_forward`'s up to float rounding, gradients too
(:func:`check_packing` compares them before training).

The mask is dense (L × L for a row of L tokens), so attention costs grow with the square of the packed length;
on short chat pairs the linear layers dominate and skipping padding pays (see ``bench/bench_packing.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ctllm.dpo.batching import collate
from ctllm.dpo.logps import (
    ForwardOutput,
    check_forward,
    forward_accepts,
    fused_head,
    label_logps,
)
from ctllm.dpo.tokenize import TokenizedPair


@dataclass
class PackedRow:
    """One packed row of B pairs; the scored tokens are listed in order of their predicting position."""

    input_ids: Tensor  # [1, L]
    position_ids: Tensor  # [1, L], restarting at 0 for each pair
    attention_mask: Tensor  # [1, 1, L, L] bool, True where a query position may attend to a key position
    predictors: Tensor  # [M] position whose output predicts each scored token
    labels: Tensor  # [M] the scored (completion) tokens
    owners: Tensor  # [M] the row each scored token belongs to: pair i's chosen is i, its rejected B + i
    n_rows: int  # 2B


def pack(items: Sequence[TokenizedPair]) -> PackedRow:
    """Lay ``items`` out as prompt, chosen, rejected per pair in one row (see the module docstring)."""
    if not items:
        raise ValueError("pack needs at least one pair")
    n = len(items)
    ids: list[int] = []
    positions: list[int] = []
    pair_of: list[int] = []
    branch_of: list[int] = []  # 0 prompt, 1 chosen, 2 rejected
    predictors: list[int] = []
    labels: list[int] = []
    owners: list[int] = []
    for i, item in enumerate(items):
        n_prompt = len(item.prompt_ids)
        if n_prompt == 0:
            raise ValueError(f"pair {item.index} has an empty prompt: nothing predicts its first answer token")
        prompt_last = len(ids) + n_prompt - 1
        segments = ((item.prompt_ids, 0), (item.chosen_ids, 1), (item.rejected_ids, 2))
        for tokens, branch in segments:
            start = len(ids)
            if branch:
                predictors += [prompt_last] + list(range(start, start + len(tokens) - 1))
                labels += tokens
                owners += [i if branch == 1 else n + i] * len(tokens)
            ids += tokens
            positions += range(n_prompt if branch else 0, (n_prompt if branch else 0) + len(tokens))
            pair_of += [i] * len(tokens)
            branch_of += [branch] * len(tokens)
    pair, branch = torch.tensor(pair_of), torch.tensor(branch_of)
    length = len(ids)
    causal = torch.ones(length, length, dtype=torch.bool).tril_()
    same_pair = pair[:, None] == pair[None, :]
    visible_branch = (branch[None, :] == 0) | (branch[:, None] == branch[None, :])
    return PackedRow(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        attention_mask=(causal & same_pair & visible_branch)[None, None],
        predictors=torch.tensor(predictors, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        owners=torch.tensor(owners, dtype=torch.long),
        n_rows=2 * n,
    )


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def packed_forward(model: Any, items: Sequence[TokenizedPair]) -> ForwardOutput:
    """Per-pair completion log-probs like ``concatenated_forward(model, collate(items, pad_id))``, from one row."""
    device = _device(model)
    row = pack(items)
    predictors = row.predictors.to(device)
    kwargs: dict[str, Any] = {"input_ids": row.input_ids.to(device), "position_ids": row.position_ids.to(device),
                              "attention_mask": row.attention_mask.to(device), "use_cache": False}
    keep = forward_accepts(model, "logits_to_keep")
    if keep:
        kwargs["logits_to_keep"] = predictors
    scores = model(**kwargs).logits
    if not keep:
        scores = scores[:, predictors]
    token_logps, position_means = label_logps(scores, row.labels.to(device)[None], fused_head(model))
    owners = row.owners.to(device)
    logps = torch.zeros(row.n_rows, device=device).index_add(0, owners, token_logps[0])
    counts = torch.bincount(owners, minlength=row.n_rows)
    means = torch.zeros(row.n_rows, device=device).index_add(0, owners, position_means[0]) / counts.clamp(min=1)
    half = row.n_rows // 2
    return ForwardOutput(
        chosen_logps=logps[:half],
        rejected_logps=logps[half:],
        chosen_tokens=counts[:half],
        rejected_tokens=counts[half:],
        chosen_logits_mean=means[:half],
        rejected_logits_mean=means[half:],
        chosen_nll=-logps[:half] / counts[:half].clamp(min=1),
    )


def padding_share(items: Sequence[TokenizedPair], pad_id: int) -> float:
    """Fraction of the padded batch's ``collate`` cells that are padding."""
    mask = collate(items, pad_id)["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()


def check_packing(model: Any, items: Sequence[TokenizedPair], pad_id: int) -> tuple[bool, str]:
    """Whether this model gives the same log-probs through the packed forward (tried on a few pairs)."""
    return check_forward(model, items, pad_id, packed_forward)
