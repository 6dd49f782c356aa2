"""Log-probabilities of a completion under a model, for the Chat tab's implicit reward β·(log π_dpo − log π_sft).

Tokenized the way DPO training does it (docs/architecture.md, the DPO engine): the prompt through the chat template
with the generation prompt, the completion as the suffix of the joint tokenization, ending with EOS exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ctllm.errors import UserError
from ctllm.models.loading import LoadedModel
from ctllm.models.templates import apply_chat_template
from ctllm.pairs.schema import Message


def check_same_tokenizer(model: LoadedModel, reference: LoadedModel) -> None:
    """Refuse two models whose tokenizers differ: an implicit reward compares log-probs of the same tokens."""
    a, b = model.tokenizer, reference.tokenizer
    if len(a) != len(b) or a.eos_token_id != b.eos_token_id:
        raise UserError(
            f"{model.spec.label!r} and {reference.spec.label!r} have different tokenizers ({len(a)} vs {len(b)} "
            "tokens): the implicit reward compares log-probs of the same tokens"
        )


def completion_token_ids(tokenizer, messages: Sequence[Message], completion: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): the completion's tokens end with a single EOS and nothing after it."""
    prompt = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
    eos = tokenizer.eos_token_id
    joint = apply_chat_template(
        tokenizer, [*messages, Message(role="assistant", content=completion)], add_generation_prompt=False
    )
    if joint[: len(prompt)] == prompt and len(joint) > len(prompt):
        tail = joint[len(prompt) :]
        if eos in tail:
            return prompt, tail[: tail.index(eos) + 1]  # drop what the template writes after the turn's end
        return prompt, [*tail, eos]
    # A template that renders the last assistant turn differently from the generation prompt: tokenize on its own.
    return prompt, [*tokenizer(completion, add_special_tokens=False)["input_ids"], eos]


def sequence_logp(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Summed log-probability (fp32) of ``ids[start:]`` given what precedes each token.

    ``logits`` (length, vocab) come from running the model on ``ids`` (length,).
    """
    logps = torch.log_softmax(logits[:-1].float(), dim=-1).gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1)
    return logps[start - 1 :].sum()


def completion_logps(loaded: LoadedModel, messages: Sequence[Message], completion: str) -> float:
    """Summed log-prob of ``completion`` (with its EOS) as the assistant's answer to ``messages``."""
    prompt, answer = completion_token_ids(loaded.tokenizer, messages, completion)
    ids = torch.tensor(prompt + answer, device=loaded.device)
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids.unsqueeze(0)).logits[0]
    return float(sequence_logp(logits, ids, len(prompt)))


def implicit_reward(
    policy: LoadedModel, reference: LoadedModel, messages: Sequence[Message], completion: str, beta: float
) -> float:
    """DPO's implicit reward of ``completion``: β·(log π(y|x) − log π_ref(y|x))."""
    return beta * (completion_logps(policy, messages, completion) - completion_logps(reference, messages, completion))
