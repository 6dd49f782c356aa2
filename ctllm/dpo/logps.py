"""Summed completion log-probs of chosen and rejected rows, lean on memory over a large vocabulary.

``log_softmax(logits[:, :-1])`` taken at ``ids[:, 1:]`` is computed in fp32 a few rows at a time, keeping only
``logit[label] − logsumexp`` per position: no vocabulary-sized log-prob tensor is kept for backward (nor a second
fp32 copy of the logits), and the backward pass writes softmax − onehot straight into the logits' gradient. The
model is asked for logits only from the first position that predicts a completion token (``logits_to_keep``),
which skips the LM head over the common prompt prefix.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # logits elements handled per chunk (64 MiB in fp32)


@dataclass
class ForwardOutput:
    """Per-pair results of one forward over B chosen and B rejected rows; every tensor is [B]."""

    chosen_logps: Tensor  # summed log-probs of the chosen completion (fp32, carries grad in training)
    rejected_logps: Tensor
    chosen_tokens: Tensor  # completion token counts (int64)
    rejected_tokens: Tensor
    chosen_logits_mean: Tensor  # mean raw logit (vocab mean) over completion tokens, detached
    rejected_logits_mean: Tensor
    chosen_nll: Tensor  # mean token NLL of the chosen completion (RPO term), carries grad


class _TokenLogProbs(torch.autograd.Function):
    """log_softmax(logits)[label] per position, without keeping a vocabulary-sized log-prob tensor.

    Forward runs a fused log_softmax a few rows at a time and keeps only the per-position log-normaliser; backward
    writes softmax − onehot straight into the logits' gradient. Also returns the vocab-mean logit (no gradient).
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        n_rows, steps = labels.shape
        token_logps = torch.empty((n_rows, steps), dtype=torch.float32, device=logits.device)
        log_norm = torch.empty_like(token_logps)
        mean_logits = torch.empty_like(token_logps)
        for rows in _row_chunks(n_rows, steps * logits.size(-1)):
            chunk = logits[rows, :steps].float()
            index = labels[rows].unsqueeze(-1)
            token_logps[rows] = torch.log_softmax(chunk, dim=-1).gather(-1, index).squeeze(-1)
            log_norm[rows] = chunk.gather(-1, index).squeeze(-1) - token_logps[rows]
            mean_logits[rows] = chunk.mean(-1)
        ctx.save_for_backward(logits, labels, log_norm)
        ctx.mark_non_differentiable(mean_logits)
        return token_logps, mean_logits

    @staticmethod
    def backward(ctx: Any, grad_logps: Tensor, _grad_means: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        logits, labels, log_norm = ctx.saved_tensors
        steps = labels.size(1)
        grad = torch.empty_like(logits)
        grad[:, steps:] = 0  # positions past the last label predict nothing
        in_place = logits.dtype == torch.float32
        for rows in _row_chunks(labels.size(0), steps * logits.size(-1)):
            g = grad_logps[rows].unsqueeze(-1).to(torch.float32)
            # d logp[label] / d logits = onehot(label) − softmax(logits)
            out = grad[rows, :steps] if in_place else None
            probs = torch.sub(logits[rows, :steps].float(), log_norm[rows].unsqueeze(-1), out=out).exp_()
            probs.mul_(-g).scatter_add_(-1, labels[rows].unsqueeze(-1), g)
            if not in_place:
                grad[rows, :steps] = probs.to(grad.dtype)
        return grad, None


def _row_chunks(n_rows: int, elements_per_row: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_row))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def sequence_logps(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row completion log-probs.

    Args:
        logits: [N, T', V] raw logits for the last T' <= T positions of the rows (any float dtype).
        input_ids: [N, T] token ids.
        loss_mask: [N, T], 1 on the completion tokens (the tokens being scored).

    Returns:
        (sum of log p(token) over masked tokens [N] fp32, number of masked tokens [N] int64,
        mean raw logit over masked tokens [N] fp32 detached; the logit at each position is averaged over the vocab).
    """
    width = input_ids.size(1)
    offset = width - logits.size(1)  # logits[:, j] belongs to position offset + j and predicts token offset + j + 1
    if offset < 0:
        raise ValueError(f"logits cover {logits.size(1)} positions but the rows have {width}")
    if bool(loss_mask[:, : offset + 1].any()):
        raise ValueError("logits start after the first completion token; keep more positions")
    labels = input_ids[:, offset + 1 :]
    mask = loss_mask[:, offset + 1 :].to(torch.float32)
    token_logps, position_means = _TokenLogProbs.apply(logits, labels)
    counts = mask.sum(-1)
    mean_logits = (position_means * mask).sum(-1) / counts.clamp(min=1)
    return (token_logps * mask).sum(-1), counts.to(torch.long), mean_logits


def _forward_accepts(model: Any, name: str) -> bool:
    inner = getattr(model, "module", model)  # DDP and similar wrappers
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def first_scored_position(loss_mask: Tensor) -> int:
    """The earliest position (over all rows) holding a completion token."""
    has = loss_mask.any(dim=0).nonzero()
    return int(has[0]) if len(has) else loss_mask.size(1)


def row_logps(
    model: Any, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward over the rows, then :func:`sequence_logps`."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    start = first_scored_position(loss_mask) - 1  # the position whose logits predict the first completion token
    if start > 0 and _forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = input_ids.size(1) - start
    logits = model(**kwargs).logits
    return sequence_logps(logits, input_ids, loss_mask)


def concatenated_forward(model: Any, batch: dict) -> ForwardOutput:
    """One forward over the chosen and rejected rows of a :func:`ctllm.dpo.batching.collate` batch."""
    device = _model_device(model)
    tensors = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "loss_mask")}
    logps, counts, mean_logits = row_logps(model, tensors["input_ids"], tensors["attention_mask"], tensors["loss_mask"])
    half = logps.size(0) // 2
    chosen_tokens = counts[:half]
    return ForwardOutput(
        chosen_logps=logps[:half],
        rejected_logps=logps[half:],
        chosen_tokens=chosen_tokens,
        rejected_tokens=counts[half:],
        chosen_logits_mean=mean_logits[:half],
        rejected_logits_mean=mean_logits[half:],
        chosen_nll=-logps[:half] / chosen_tokens.clamp(min=1),
    )


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")
