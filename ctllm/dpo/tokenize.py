"""Pairs to token ids, the way TRL 1.16's DPOTrainer does it.

The prompt goes through the model's chat template with ``add_generation_prompt=True``. Each completion is the
suffix of tokenizing (templated prompt text + completion text + EOS) jointly, so no token merge at the boundary
is lost; when the joint tokens do not start with the prompt tokens (a merge across the boundary), the completion
is tokenized on its own after the prompt ids instead. Truncation keeps the start of prompt + completion up to
``max_length``; a pair whose prompt alone fills ``max_length`` has no completion token left and is dropped and
counted, never trained on silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctllm.errors import UserError
from ctllm.models.templates import FALLBACK_TEMPLATE
from ctllm.pairs.schema import Pair


@dataclass(frozen=True)
class TokenizedPair:
    index: int  # position in the input pair list
    prompt_ids: list[int]  # chat template with add_generation_prompt=True
    chosen_ids: list[int]  # completion tokens only; EOS once at the end unless truncated
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        """Length of the longer of the two rows (prompt + completion) this pair adds to a batch."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class TokenizeResult:
    items: list[TokenizedPair]
    dropped: int  # pairs whose prompt alone fills max_length (no completion token left)
    truncated: int  # kept pairs that lost tokens to max_length / max_prompt_length
    dropped_indices: list[int] = field(default_factory=list)
    boundary_fallbacks: int = 0  # completions tokenized on their own because a merge broke the prompt prefix

    def summary(self) -> str:
        return (
            f"{len(self.items)} pairs tokenized, {self.dropped} dropped (prompt fills max_length), "
            f"{self.truncated} truncated"
        )


def render_prompt(tokenizer: Any, messages: Sequence[dict]) -> str:
    """The prompt text through the chat template, ending with the assistant generation prompt.

    A tokenizer without a template (CT-LLM's) gets the app-wide fallback, ChatML, as in chat and generation.
    """
    template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
    return tokenizer.apply_chat_template(
        [dict(m) for m in messages], chat_template=template, tokenize=False, add_generation_prompt=True
    )


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _without_doubled_bos(ids: list[int], bos_id: int | None) -> list[int]:
    if bos_id is not None and len(ids) >= 2 and ids[0] == bos_id and ids[1] == bos_id:
        return ids[1:]
    return ids


def _suffix_after(prompt_ids: list[int], joint_ids: list[int]) -> list[int] | None:
    """The completion as the suffix of the joint tokens, or None when the prompt is not their prefix."""
    n = len(prompt_ids)
    if joint_ids[:n] == prompt_ids and len(joint_ids) > n:
        return joint_ids[n:]
    return None


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[Pair], max_length: int, max_prompt_length: int | None = None
) -> TokenizeResult:
    """Tokenize pairs into prompt / chosen / rejected ids (see the module docstring for the rules).

    ``max_prompt_length`` (optional, beyond TRL 1.16) keeps the last that many prompt tokens, so the generation
    prompt stays next to the completion.
    """
    if max_length < 2:
        raise UserError(f"max_length must be at least 2, got {max_length}")
    eos = tokenizer.eos_token
    if eos is None or tokenizer.eos_token_id is None:
        raise UserError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no EOS token")
    bos_id = tokenizer.bos_token_id

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    prompt_texts = [render_prompt(tokenizer, pair.prompt) for pair in pairs]
    prompt_ids = [_without_doubled_bos(ids, bos_id) for ids in _encode(tokenizer, prompt_texts)]
    sides = {}
    fallbacks = 0
    for side in ("chosen", "rejected"):
        completions = [with_eos(getattr(pair, side)) for pair in pairs]
        joint = _encode(tokenizer, [p + c for p, c in zip(prompt_texts, completions, strict=True)])
        joint = [_without_doubled_bos(ids, bos_id) for ids in joint]
        result: list[list[int] | None] = [_suffix_after(p, j) for p, j in zip(prompt_ids, joint, strict=True)]
        broken = [i for i, ids in enumerate(result) if ids is None]
        for i, ids in zip(broken, _encode(tokenizer, [completions[i] for i in broken]), strict=True):
            result[i] = ids
        fallbacks += len(broken)
        sides[side] = result

    items: list[TokenizedPair] = []
    dropped_indices: list[int] = []
    truncated = 0
    for index, prompt in enumerate(prompt_ids):
        chosen, rejected = sides["chosen"][index], sides["rejected"][index]
        assert chosen is not None and rejected is not None
        was_truncated = False
        if max_prompt_length is not None and len(prompt) > max_prompt_length:
            prompt = prompt[len(prompt) - max_prompt_length :]
            was_truncated = True
        if len(prompt) >= max_length:
            dropped_indices.append(index)
            continue
        room = max_length - len(prompt)
        if len(chosen) > room or len(rejected) > room:
            chosen, rejected = chosen[:room], rejected[:room]
            was_truncated = True
        truncated += was_truncated
        items.append(TokenizedPair(index, list(prompt), list(chosen), list(rejected)))
    return TokenizeResult(items, len(dropped_indices), truncated, dropped_indices, fallbacks)
