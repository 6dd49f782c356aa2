"""Per-pair implicit rewards of a policy against a reference: the margin that surfaces likely mislabels.

Tokenized and scored exactly as in training (``tokenize``, ``logps``): summed completion log-probs in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ctllm.dpo.reference import precompute_reference_logps
from ctllm.dpo.tokenize import TokenizeResult, tokenize_pairs
from ctllm.pairs.schema import Pair


@dataclass(frozen=True)
class PairScore:
    index: int  # position in the scored pair list
    chosen_logp: float
    rejected_logp: float
    ref_chosen_logp: float
    ref_rejected_logp: float
    chosen_tokens: int
    rejected_tokens: int
    beta: float

    @property
    def chosen_reward(self) -> float:
        return self.beta * (self.chosen_logp - self.ref_chosen_logp)

    @property
    def rejected_reward(self) -> float:
        return self.beta * (self.rejected_logp - self.ref_rejected_logp)

    @property
    def margin(self) -> float:
        """β·((π_c − ref_c) − (π_r − ref_r)); negative: the policy prefers the rejected side."""
        return self.chosen_reward - self.rejected_reward

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "chosen_logp": self.chosen_logp,
            "rejected_logp": self.rejected_logp,
            "ref_chosen_logp": self.ref_chosen_logp,
            "ref_rejected_logp": self.ref_rejected_logp,
            "chosen_reward": self.chosen_reward,
            "rejected_reward": self.rejected_reward,
            "margin": self.margin,
            "chosen_tokens": self.chosen_tokens,
            "rejected_tokens": self.rejected_tokens,
        }


def score_pairs(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    pairs: Sequence[Pair],
    beta: float,
    max_length: int,
    batch_size: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[PairScore], TokenizeResult]:
    """Score every pair under ``policy`` and ``reference`` (both sharing ``tokenizer``).

    Pairs whose prompt fills ``max_length`` get no score (see the returned ``TokenizeResult.dropped_indices``).
    ``progress(model_role, done, total)`` reports each batch, model_role being "policy" or "reference".
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    tokenized = tokenize_pairs(tokenizer, pairs, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results = {}
    for role, model in (("policy", policy), ("reference", reference)):
        report = (lambda done, total, role=role: progress(role, done, total)) if progress else None
        results[role] = precompute_reference_logps(model, tokenized.items, pad_id, batch_size, None, None, report)
    pol, ref = results["policy"], results["reference"]
    scores = [
        PairScore(
            index=item.index,
            chosen_logp=float(pol["chosen"][item.index]),
            rejected_logp=float(pol["rejected"][item.index]),
            ref_chosen_logp=float(ref["chosen"][item.index]),
            ref_rejected_logp=float(ref["rejected"][item.index]),
            chosen_tokens=int(pol["chosen_tokens"][item.index]),
            rejected_tokens=int(pol["rejected_tokens"][item.index]),
            beta=beta,
        )
        for item in tokenized.items
    ]
    return scores, tokenized
