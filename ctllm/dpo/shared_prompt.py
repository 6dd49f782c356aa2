"""The chosen and rejected completions of a pair share their prompt: run it through the model once.

:func:`ctllm.dpo.logps.concatenated_forward` runs 2B rows of prompt + completion. Here the B prompts run once
(left-padded, so each ends in the last column), their key/value cache is repeated for the two completions, and
the 2B completions run on top of it: the model sees P + C + R tokens per pair instead of 2P + C + R (about a
quarter fewer on short chat pairs, where the chat template's system prompt alone is ~30 tokens). Gradients flow
through the cache into the prompt's computation, so training is unchanged: same sums of log-probs, same gradients
up to float rounding. A model whose forward does not fit (no cache or position ids, or results that differ) is
detected by :func:`check_shared_prompt` before training and gets the concatenated forward instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ctllm.dpo.batching import collate
from ctllm.dpo.logps import (
    ForwardOutput,
    check_forward,
    concatenated_forward,
    fused_head,
    sequence_logps,
    to_logits,
)
from ctllm.dpo.packing import packed_forward
from ctllm.dpo.tokenize import TokenizedPair


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def shared_prompt_forward(model: Any, items: Sequence[TokenizedPair], pad_id: int) -> ForwardOutput:
    """Per-pair completion log-probs like ``concatenated_forward(model, collate(items, pad_id))``."""
    device = _device(model)
    n = len(items)
    width_p = max(len(it.prompt_ids) for it in items)
    width_c = max(max(len(it.chosen_ids), len(it.rejected_ids)) for it in items)
    prompt = torch.full((n, width_p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, width_p), dtype=torch.long)
    prompt_pos = torch.zeros((n, width_p), dtype=torch.long)
    # Completion rows interleaved: 2i is pair i's chosen answer, 2i + 1 its rejected one.
    completion = torch.full((2 * n, width_c), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((2 * n, width_c), dtype=torch.long)
    completion_pos = torch.zeros((2 * n, width_c), dtype=torch.long)
    for i, item in enumerate(items):
        length = len(item.prompt_ids)
        prompt[i, width_p - length:] = torch.tensor(item.prompt_ids)
        prompt_mask[i, width_p - length:] = 1
        prompt_pos[i, width_p - length:] = torch.arange(length)
        for k, ids in enumerate((item.chosen_ids, item.rejected_ids)):
            completion[2 * i + k, : len(ids)] = torch.tensor(ids)
            completion_mask[2 * i + k, : len(ids)] = 1
            completion_pos[2 * i + k] = torch.arange(length, length + width_c)
    prompt, prompt_mask, prompt_pos = prompt.to(device), prompt_mask.to(device), prompt_pos.to(device)
    completion, completion_mask = completion.to(device), completion_mask.to(device)

    head = model(input_ids=prompt, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True,
                 logits_to_keep=1)
    cache = head.past_key_values
    cache.batch_repeat_interleave(2)
    lm_head = fused_head(model)
    first_logits = to_logits(head.logits[:, -1].contiguous(), lm_head).float().repeat_interleave(2, dim=0)
    full_mask = torch.cat([prompt_mask.repeat_interleave(2, 0), completion_mask], 1)
    tail = model(input_ids=completion, attention_mask=full_mask, position_ids=completion_pos.to(device),
                 past_key_values=cache, use_cache=False)

    first = torch.log_softmax(first_logits, dim=-1).gather(-1, completion[:, :1]).squeeze(-1)
    rest_mask = completion_mask.clone()
    rest_mask[:, 0] = 0  # the first token was scored from the prompt's last position
    rest, rest_counts, rest_means = sequence_logps(tail.logits, completion, rest_mask, lm_head)
    logps = first + rest
    counts = rest_counts + 1
    mean_logits = (first_logits.detach().mean(-1) + rest_means * rest_counts) / counts
    return ForwardOutput(
        chosen_logps=logps[0::2],
        rejected_logps=logps[1::2],
        chosen_tokens=counts[0::2],
        rejected_tokens=counts[1::2],
        chosen_logits_mean=mean_logits[0::2],
        rejected_logits_mean=mean_logits[1::2],
        chosen_nll=-logps[0::2] / counts[0::2],
    )


def tokens_seen(items: Sequence[TokenizedPair], shared: bool) -> int:
    """Tokens the model processes for ``items`` (no padding): the work a forward does."""
    prompts = sum(len(it.prompt_ids) for it in items)
    completions = sum(len(it.chosen_ids) + len(it.rejected_ids) for it in items)
    return prompts * (1 if shared else 2) + completions


def pair_forward(model: Any, items: Sequence[TokenizedPair], pad_id: int, shared: bool,
                 packed: bool = False) -> ForwardOutput:
    """The forward the run chose: packed (:mod:`ctllm.dpo.packing`), shared-prompt or concatenated rows."""
    if packed:
        return packed_forward(model, items)
    if shared:
        return shared_prompt_forward(model, items, pad_id)
    return concatenated_forward(model, collate(items, pad_id))


def check_shared_prompt(model: Any, items: Sequence[TokenizedPair], pad_id: int) -> tuple[bool, str]:
    """Whether this model gives the same log-probs through the shared-prompt forward (tried on a few pairs)."""
    return check_forward(model, items, pad_id, lambda m, sample: shared_prompt_forward(m, sample, pad_id))
