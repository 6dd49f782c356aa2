"""Labels → chosen / rejected.

An annotator sees the two responses in a random order and answers about positions ("first", "second"); the
store also records which stored side (``shown_first``: "chosen" or "rejected") was on the left. ``choice_of``
maps a verdict back to the stored sides. An export then takes, for each pair, the most common choice among its
annotators (skips ignored); a pair nobody labelled keeps the source's own order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ctllm.pairs.schema import Pair

VERDICTS = ("first", "second", "tie", "both_bad", "skip")
SHOWN_FIRST = ("chosen", "rejected")
CHOICES = ("chosen", "rejected", "tie", "both_bad", "skip")  # a verdict in terms of the stored sides

# Outcomes of resolve(): the first three keep the pair, the others leave it out of an export.
KEPT = ("source", "confirmed", "swapped")
LEFT_OUT = ("tie", "both_bad", "no_majority")


def choice_of(verdict: str, shown_first: str) -> str:
    """The stored side a verdict prefers: "first" with the rejected side on the left means "rejected"."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    if shown_first not in SHOWN_FIRST:
        raise ValueError(f"shown_first must be one of {', '.join(SHOWN_FIRST)}, not {shown_first!r}")
    if verdict == "first":
        return shown_first
    if verdict == "second":
        return "rejected" if shown_first == "chosen" else "chosen"
    return verdict


def majority(choices: Iterable[str]) -> str | None:
    """The most common choice, skips ignored; None when nobody voted; "no_majority" when the top is shared."""
    counts = Counter(c for c in choices if c != "skip")
    if not counts:
        return None
    (top, top_count), *rest = counts.most_common()
    if rest and rest[0][1] == top_count:
        return "no_majority"
    return top


@dataclass(frozen=True)
class Resolution:
    """``pair`` is what an export writes (None when left out); ``outcome`` is one of KEPT or LEFT_OUT."""

    pair: Pair | None
    outcome: str


def resolve(pair: Pair, choices: Iterable[str]) -> Resolution:
    """Resolve one pair from its annotators' choices (one per annotator, as the store keeps them)."""
    winner = majority(choices)
    if winner is None:
        return Resolution(pair, "source")
    if winner == "chosen":
        return Resolution(pair, "confirmed")
    if winner == "rejected":
        return Resolution(pair.swapped(), "swapped")
    return Resolution(None, winner)
