"""What makes a synthesized pair unusable, as small pure functions.

A candidate pair is dropped for the first of these that applies (each counted in the synthesis summary):
``empty`` an answer with no text; ``cut_off`` a generated answer that reached max_new_tokens without a stop token;
``wrong_language`` an answer in another language than its prompt (Chinese vs English; text whose language cannot be
told is let through); ``near_identical`` rejected equal or nearly equal to chosen (normalised edit distance below the
threshold, after folding case and whitespace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ctllm.pairs.schema import detect_language

FILTERS = ("empty", "cut_off", "wrong_language", "near_identical")
NEAR_IDENTICAL_THRESHOLD = 0.1
_TOLD_APART = ("zh", "en")


@dataclass(frozen=True)
class Answer:
    text: str
    finished: bool = True  # False: generation stopped at max_new_tokens (a file's own answer is always finished)


def fold(text: str) -> str:
    """Case and whitespace folded, for comparing two answers."""
    return " ".join(text.split()).casefold()


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance between ``a`` and ``b`` (insert, delete, substitute: cost 1 each).

    With ``limit``, only distances up to ``limit`` are computed exactly; anything larger returns ``limit + 1``.
    Only a band of 2·limit + 1 cells around the diagonal is filled, so checking "nearly identical" on long
    answers costs O(length · limit), not O(length²).
    """
    if len(a) < len(b):
        a, b = b, a
    if limit is None:
        limit = len(a)
    big = limit + 1
    if len(a) - len(b) > limit:
        return big
    if not b:
        return len(a)
    previous = [j if j <= limit else big for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        current = [big] * (len(b) + 1)
        if i <= limit:
            current[0] = i
        char = a[i - 1]
        best = current[lo - 1]
        for j in range(lo, hi + 1):
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != b[j - 1]))
            current[j] = value if value < big else big
            best = min(best, current[j])
        if best >= big:
            return big
        previous = current
    return previous[len(b)]


def normalised_edit_distance(a: str, b: str) -> float:
    """Edit distance of the folded texts divided by the longer one's length: 0 identical, 1 nothing shared."""
    fa, fb = fold(a), fold(b)
    longest = max(len(fa), len(fb))
    return edit_distance(fa, fb) / longest if longest else 0.0


def near_identical(a: str, b: str, threshold: float = NEAR_IDENTICAL_THRESHOLD) -> bool:
    """Whether ``normalised_edit_distance(a, b) < threshold``, computed only as far as needed."""
    fa, fb = fold(a), fold(b)
    longest = max(len(fa), len(fb))
    if longest == 0:
        return True
    limit = math.ceil(threshold * longest) - 1  # the largest whole distance still below threshold·longest
    if limit < 0:
        return False
    return edit_distance(fa, fb, limit) <= limit


def wrong_language(prompt: str, answer: str) -> bool:
    """An answer in Chinese to an English prompt, or the reverse."""
    asked, answered = detect_language(prompt), detect_language(answer)
    return asked in _TOLD_APART and answered in _TOLD_APART and asked != answered


def pair_problem(
    prompt: str, chosen: Answer, rejected: Answer, threshold: float = NEAR_IDENTICAL_THRESHOLD
) -> str | None:
    """The first filter (a name from FILTERS) that drops this candidate pair, or None to keep it."""
    if not chosen.text.strip() or not rejected.text.strip():
        return "empty"
    if not chosen.finished or not rejected.finished:
        return "cut_off"
    if wrong_language(prompt, chosen.text) or wrong_language(prompt, rejected.text):
        return "wrong_language"
    if near_identical(chosen.text, rejected.text, threshold):
        return "near_identical"
    return None
