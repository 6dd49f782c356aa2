"""Evaluation numbers as pure functions over per-pair log-probs.

- Preference accuracy (the multiple-choice way CValues-style comparisons are scored): how often a model gives the
  chosen answer a higher length-normalised log-likelihood (summed log-prob / completion tokens) than the rejected
  one. Strict ``>``: a tie counts as a miss.
- DPO implicit reward of a policy against its reference: r = β·(log π − log π_ref) per answer; reward accuracy is
  the share of pairs with r_chosen > r_rejected (strict, as TRL's ``rewards/accuracies``), the margin the mean of
  r_chosen − r_rejected.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PairLogps:
    """Summed completion log-probs of one pair under the model and its reference (same tokens for both)."""

    chosen: float
    rejected: float
    ref_chosen: float
    ref_rejected: float
    chosen_tokens: int
    rejected_tokens: int


def prefers_chosen(chosen_logp: float, chosen_tokens: int, rejected_logp: float, rejected_tokens: int) -> bool:
    """Whether the per-token mean log-likelihood of chosen is strictly above rejected's."""
    return chosen_logp / max(chosen_tokens, 1) > rejected_logp / max(rejected_tokens, 1)


def mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def pair_metrics(rows: Sequence[PairLogps], beta: float) -> dict[str, float | int | None]:
    """Preference accuracy of model and reference, implicit-reward accuracy, margin and mean rewards, over ``rows``.

    Every value is None when ``rows`` is empty.
    """
    rewards_c = [beta * (r.chosen - r.ref_chosen) for r in rows]
    rewards_r = [beta * (r.rejected - r.ref_rejected) for r in rows]
    return {
        "n": len(rows),
        "model_preference_accuracy": mean(
            float(prefers_chosen(r.chosen, r.chosen_tokens, r.rejected, r.rejected_tokens)) for r in rows
        ),
        "ref_preference_accuracy": mean(
            float(prefers_chosen(r.ref_chosen, r.chosen_tokens, r.ref_rejected, r.rejected_tokens)) for r in rows
        ),
        "reward_accuracy": mean(float(c > r) for c, r in zip(rewards_c, rewards_r, strict=True)),
        "margin": mean(c - r for c, r in zip(rewards_c, rewards_r, strict=True)),
        "chosen_reward": mean(rewards_c),
        "rejected_reward": mean(rewards_r),
    }


def grouped(items: Sequence[T], key: Callable[[T], Hashable | None]) -> dict[str, list[T]]:
    """Items by ``key`` (sorted by group name); items whose key is None or empty are left out."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        value = key(item)
        if value is not None and value != "":
            groups[str(value)].append(item)
    return dict(sorted(groups.items()))


def rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
