"""Summed completion log-probs of chosen and rejected rows, lean on memory over a large vocabulary.

``log_softmax(logits[:, :-1])`` taken at ``ids[:, 1:]`` is computed in fp32 a few rows at a time, keeping only
``logit[label] − logsumexp`` per position: no vocabulary-sized log-prob tensor is kept for backward (nor a second
fp32 copy of the logits), and the backward pass writes softmax − onehot straight into the logits' gradient. The
model is asked for logits only from the first position that predicts a completion token (``logits_to_keep``),
which skips the LM head over the common prompt prefix. A model made lean (:mod:`ctllm.dpo.lean_model`) returns
hidden states instead, and the LM head is applied here a chunk at a time, forward and again in backward.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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


def logps_difference(a: ForwardOutput, b: ForwardOutput) -> float:
    """Largest |difference| of the summed chosen and rejected log-probs of two forwards (inf if not finite)."""
    diff = max(float((a.chosen_logps - b.chosen_logps).abs().max()),
               float((a.rejected_logps - b.rejected_logps).abs().max()))
    return diff if math.isfinite(diff) else math.inf


@contextlib.contextmanager
def trial_mode(model: Any) -> Iterator[None]:
    """Eval mode without gradients for a trial forward; the model's training mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _chunk_forward(chunk: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log p[label], log-normaliser, vocab-mean logit) per position of an fp32 logits chunk."""
    index = labels.unsqueeze(-1)
    token_logps = torch.log_softmax(chunk, dim=-1).gather(-1, index).squeeze(-1)
    return token_logps, chunk.gather(-1, index).squeeze(-1) - token_logps, chunk.mean(-1)


def _chunk_backward(chunk: Tensor, log_norm: Tensor, labels: Tensor, grad_logps: Tensor,
                    out: Tensor | None = None) -> Tensor:
    """d loss / d logits for an fp32 logits chunk, g * (onehot(label) − softmax), written into ``out`` if given."""
    g = grad_logps.unsqueeze(-1).to(torch.float32)
    probs = torch.sub(chunk, log_norm.unsqueeze(-1), out=out).exp_()
    return probs.mul_(-g).scatter_add_(-1, labels.unsqueeze(-1), g)


class _TokenLogProbs(torch.autograd.Function):
    """log_softmax(logits)[label] per position, without keeping a vocabulary-sized log-prob tensor.

    Forward runs a fused log_softmax a few rows at a time and keeps only the per-position log-normaliser; backward
    writes softmax − onehot straight into the logits' gradient. Also returns the vocab-mean logit (no gradient).
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        n_rows, steps = labels.shape
        token_logps, log_norm, mean_logits = (torch.empty((n_rows, steps), device=logits.device) for _ in range(3))
        for rows in _row_chunks(n_rows, steps * logits.size(-1)):
            token_logps[rows], log_norm[rows], mean_logits[rows] = _chunk_forward(logits[rows, :steps].float(),
                                                                                  labels[rows])
        ctx.save_for_backward(logits, labels, log_norm)
        ctx.mark_non_differentiable(mean_logits)
        return token_logps, mean_logits

    @staticmethod
    def backward(ctx: Any, grad_logps: Tensor, _grad_means: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        logits, labels, log_norm = ctx.saved_tensors
        steps = labels.size(1)
        grad = torch.empty_like(logits)
        grad[:, steps:] = 0  # positions past the last label predict nothing
        in_place = logits.dtype == torch.float32  # then work in the gradient's memory
        for rows in _row_chunks(labels.size(0), steps * logits.size(-1)):
            out = grad[rows, :steps] if in_place else None
            chunk = _chunk_backward(logits[rows, :steps].float(), log_norm[rows], labels[rows], grad_logps[rows], out)
            if not in_place:
                grad[rows, :steps] = chunk.to(grad.dtype)
        return grad, None


def _head_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """fp32 logits of [n, steps, H] hidden states, computed as one 2-D matmul.

    Always the same kernel: on a 3-D strided input ``F.linear`` picks a batched or a folded matmul depending on
    whether the input requires grad, and the two round differently (the policy and a frozen reference would
    disagree in the last bits).
    """
    n, steps, width = hidden.shape
    return F.linear(hidden.reshape(n * steps, width), weight, bias).float().view(n, steps, -1)


class _HeadTokenLogProbs(torch.autograd.Function):
    """Like :class:`_TokenLogProbs` on ``F.linear(hidden, weight, bias)``, never holding more than a chunk of logits.

    Backward computes each chunk's logits again (one more LM-head matmul over the scored positions) rather than
    keeping them all from forward: on a 49k vocabulary the logits of a batch are several hundred MB, twice over
    while their gradient is formed.
    """

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None,  # type: ignore[override]
                labels: Tensor) -> tuple[Tensor, Tensor]:
        n_rows, steps = labels.shape
        token_logps, log_norm, mean_logits = (torch.empty((n_rows, steps), device=hidden.device) for _ in range(3))
        for rows in _row_chunks(n_rows, steps * weight.size(0)):
            chunk = _head_logits(hidden[rows, :steps], weight, bias)
            token_logps[rows], log_norm[rows], mean_logits[rows] = _chunk_forward(chunk, labels[rows])
        ctx.save_for_backward(hidden, weight, bias, labels, log_norm)
        ctx.mark_non_differentiable(mean_logits)
        return token_logps, mean_logits

    @staticmethod
    def backward(ctx: Any, grad_logps: Tensor, _grad_means: Tensor,  # type: ignore[override]
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        hidden, weight, bias, labels, log_norm = ctx.saved_tensors
        needs = ctx.needs_input_grad
        steps = labels.size(1)
        d_hidden = torch.zeros_like(hidden) if needs[0] else None
        d_weight = torch.zeros_like(weight) if needs[1] else None
        d_bias = torch.zeros_like(bias) if bias is not None and needs[2] else None
        for rows in _row_chunks(labels.size(0), steps * weight.size(0)):
            inputs = hidden[rows, :steps]
            chunk = _head_logits(inputs, weight, bias)
            d_logits = _chunk_backward(chunk, log_norm[rows], labels[rows], grad_logps[rows], chunk).to(weight.dtype)
            if d_hidden is not None:
                d_hidden[rows, :steps] = d_logits @ weight
            flat = d_logits.reshape(-1, d_logits.size(-1))
            if d_weight is not None:
                d_weight.addmm_(flat.t(), inputs.reshape(-1, inputs.size(-1)))
            if d_bias is not None:
                d_bias += flat.sum(0)
        return d_hidden, d_weight, d_bias, None


def _row_chunks(n_rows: int, elements_per_row: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_row))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def label_logps(scores: Tensor, labels: Tensor, head: Any = None) -> tuple[Tensor, Tensor]:
    """(log p(label), vocab-mean logit) per position: ``scores[:, j]`` (logits, or hidden states with ``head``)
    predicts ``labels[:, j]``; both [N, steps] fp32, the means detached."""
    if head is None:
        return _TokenLogProbs.apply(scores, labels)
    return _HeadTokenLogProbs.apply(scores, head.weight, head.bias, labels)


def sequence_logps(logits: Tensor, input_ids: Tensor, loss_mask: Tensor, head: Any = None,
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row completion log-probs.

    Args:
        logits: [N, T', V] raw logits for the last T' <= T positions of the rows (any float dtype); with ``head``,
            the [N, T', H] hidden states the LM head turns into logits.
        input_ids: [N, T] token ids.
        loss_mask: [N, T], 1 on the completion tokens (the tokens being scored).
        head: the model's LM head (a linear layer) when the model returns hidden states (:func:`fused_head`).

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
    token_logps, position_means = label_logps(logits, labels, head)
    counts = mask.sum(-1)
    mean_logits = (position_means * mask).sum(-1) / counts.clamp(min=1)
    return (token_logps * mask).sum(-1), counts.to(torch.long), mean_logits


def unwrap(model: Any) -> Any:
    """The transformers model inside DDP-style and peft wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


HIDDEN_OUT = "_ctllm_hidden_out"  # set on an LM head whose forward passes hidden states through (ctllm.dpo.lean_model)


def fused_head(model: Any) -> Any:
    """The LM head if the model returns hidden states in place of logits (they go to :class:`_HeadTokenLogProbs`)."""
    get = getattr(unwrap(model), "get_output_embeddings", None)
    head = get() if get is not None else None
    return head if getattr(head, HIDDEN_OUT, False) else None


def to_logits(scores: Tensor, head: Any) -> Tensor:
    """Logits from what the model returned: the scores themselves, or the LM head applied to hidden states."""
    return scores if head is None else F.linear(scores, head.weight, head.bias)


def forward_accepts(model: Any, name: str) -> bool:
    inner = unwrap(model)
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
    if start > 0 and forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = input_ids.size(1) - start
    scores = model(**kwargs).logits
    return sequence_logps(scores, input_ids, loss_mask, fused_head(model))


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


CHECK_TOLERANCE = 1e-3  # max |difference| of summed log-probs (nats) for a model to use another forward


def check_forward(model: Any, items: Sequence[Any], pad_id: int,
                  forward: Callable[[Any, Sequence[Any]], ForwardOutput]) -> tuple[bool, str]:
    """Whether ``forward(model, items)`` gives this model the concatenated forward's log-probs (on a few pairs)."""
    from ctllm.dpo.batching import collate  # batching sits beside this module; only the check needs it

    sample = list(items[:2])
    try:
        with trial_mode(model):
            expected = concatenated_forward(model, collate(sample, pad_id))
            got = forward(model, sample)
    except Exception as error:  # a model whose forward lacks what the other forward passes (cache, positions, mask)
        return False, f"not supported by this model ({type(error).__name__}: {error})"
    diff = logps_difference(expected, got)
    same_counts = torch.equal(expected.chosen_tokens.cpu(), got.chosen_tokens.cpu())
    if not same_counts or diff > CHECK_TOLERANCE:
        return False, f"results differ from the concatenated forward (max |diff| {diff:.2e} nats)"
    return True, f"checked against the concatenated forward (max |diff| {diff:.1e} nats)"
