"""Agreement between annotators, with the source's own order, and biases of a collection.

Pure functions on plain values (Cohen's κ, Fleiss' κ, percentiles), and ``collection_agreement`` /
``collection_stats`` that read a store and summarise. A label counts in its stored-side form (``choice``:
chosen / rejected / tie / both_bad); skips are not judgements and are left out everywhere here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctllm.pairs.store import Collection, Store

CATEGORIES = ("chosen", "rejected", "tie", "both_bad")
DECISIVE = ("chosen", "rejected")


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's κ of two raters' labels on the same items; None when undefined (no items, or chance agreement 1)."""
    if len(a) != len(b):
        raise ValueError(f"two raters need labels for the same items ({len(a)} != {len(b)})")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: Sequence[Mapping[str, int]]) -> float | None:
    """Fleiss' κ from per-item category counts. Items with fewer than two ratings are ignored; items may have
    different numbers of raters (each item's agreement is averaged, category shares pooled over all ratings).
    None when undefined (no item with two ratings, or chance agreement 1)."""
    rated = [counts for counts in items if sum(counts.values()) >= 2]
    if not rated:
        return None
    agreement = []
    totals: Counter[str] = Counter()
    for counts in rated:
        n = sum(counts.values())
        agreement.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
        totals.update(counts)
    observed = sum(agreement) / len(agreement)
    ratings = sum(totals.values())
    expected = sum((c / ratings) ** 2 for c in totals.values())
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[float, float]:
    """Nearest-rank percentiles ({} for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {q: ordered[min(n - 1, max(0, int(-(-q * n // 100)) - 1))] for q in qs}


def fmt_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@dataclass
class AgreementReport:
    annotators: dict[str, int]  # labels (skips excluded) per annotator
    labelled_pairs: int  # pairs with at least one judgement
    multi_rated: int  # pairs judged by two or more annotators
    cohen: dict[tuple[str, str], tuple[float | None, int]]  # pairwise κ and shared pairs (pairs with ≥ 1 shared)
    fleiss: float | None  # over multi-rated pairs (reported when more than two annotators)
    decisive: int  # judgements that picked a side
    with_source: int  # of those, how many picked the source's chosen side
    ties: int
    both_bad: int
    first_position: int  # decisive judgements that picked the response shown first
    longer_picked: int  # decisive judgements, on pairs of unequal length, that picked the longer response
    unequal_length: int
    skips: int = 0

    @property
    def source_agreement(self) -> float | None:
        return self.with_source / self.decisive if self.decisive else None

    def __str__(self) -> str:
        if not self.annotators:
            return "no labels yet"
        parts = [f"{len(self.annotators)} annotator(s), {self.labelled_pairs:,} pairs judged"
                 f" ({self.multi_rated:,} by two or more)"]
        if len(self.annotators) == 2 and self.cohen:
            (kappa, shared), = self.cohen.values()
            parts.append(f"Cohen's κ {fmt_kappa(kappa)} on {shared:,} shared pairs")
        elif len(self.annotators) > 2:
            parts.append(f"Fleiss' κ {fmt_kappa(self.fleiss)} on {self.multi_rated:,} pairs")
        if self.decisive:
            parts.append(f"agree with the source's order {self.with_source / self.decisive:.0%} of "
                         f"{self.decisive:,} side choices")
            parts.append(f"first-shown side picked {self.first_position / self.decisive:.0%}")
        if self.unequal_length:
            parts.append(f"longer response picked {self.longer_picked / self.unequal_length:.0%}")
        parts.append(f"ties {self.ties:,}, both bad {self.both_bad:,}, skips {self.skips:,}")
        return "; ".join(parts)


def agreement_from_rows(rows: Sequence[tuple[int, str, str, str, int, int]]) -> AgreementReport:
    """From (pair root, annotator, verdict, choice, chosen chars, rejected chars) rows, one per annotator and pair."""
    by_pair: dict[int, dict[str, str]] = defaultdict(dict)
    per_annotator: Counter[str] = Counter()
    decisive = with_source = first = longer = unequal = ties = both_bad = skips = 0
    for root, annotator, verdict, choice, chosen_chars, rejected_chars in rows:
        if choice == "skip":
            skips += 1
            continue
        by_pair[root][annotator] = choice
        per_annotator[annotator] += 1
        ties += choice == "tie"
        both_bad += choice == "both_bad"
        if choice in DECISIVE:
            decisive += 1
            with_source += choice == "chosen"
            first += verdict == "first"
            if chosen_chars != rejected_chars:
                unequal += 1
                picked_longer = (chosen_chars > rejected_chars) == (choice == "chosen")
                longer += picked_longer

    cohen: dict[tuple[str, str], tuple[float | None, int]] = {}
    for x, y in combinations(sorted(per_annotator), 2):
        shared = [(v[x], v[y]) for v in by_pair.values() if x in v and y in v]
        if shared:
            cohen[(x, y)] = (cohen_kappa([s[0] for s in shared], [s[1] for s in shared]), len(shared))
    multi = [Counter(v.values()) for v in by_pair.values() if len(v) >= 2]
    return AgreementReport(
        annotators=dict(per_annotator),
        labelled_pairs=len(by_pair),
        multi_rated=len(multi),
        cohen=cohen,
        fleiss=fleiss_kappa(multi),
        decisive=decisive,
        with_source=with_source,
        ties=ties,
        both_bad=both_bad,
        first_position=first,
        longer_picked=longer,
        unequal_length=unequal,
        skips=skips,
    )


def collection_agreement(store: Store, collection: str | int | Collection) -> AgreementReport:
    return agreement_from_rows(store.label_rows(collection))


@dataclass
class LengthStats:
    pairs: int
    chosen_longer: int
    equal: int
    mean_chosen: float
    mean_rejected: float
    percentiles: dict[str, dict[float, float]] = field(default_factory=dict)  # prompt / chosen / rejected

    @property
    def chosen_longer_share(self) -> float | None:
        return self.chosen_longer / self.pairs if self.pairs else None


def length_stats(lengths: Sequence[tuple[int, int, int, Any]]) -> LengthStats:
    """From (prompt, chosen, rejected characters, ...) rows: how often chosen is longer, means, percentiles."""
    n = len(lengths)
    prompt = [r[0] for r in lengths]
    chosen = [r[1] for r in lengths]
    rejected = [r[2] for r in lengths]
    return LengthStats(
        pairs=n,
        chosen_longer=sum(c > r for c, r in zip(chosen, rejected, strict=True)),
        equal=sum(c == r for c, r in zip(chosen, rejected, strict=True)),
        mean_chosen=sum(chosen) / n if n else 0.0,
        mean_rejected=sum(rejected) / n if n else 0.0,
        percentiles={"prompt": percentiles(prompt), "chosen": percentiles(chosen), "rejected": percentiles(rejected)},
    )


def collection_stats(store: Store, collection: str | int | Collection) -> dict[str, Any]:
    """Everything ``python -m ctllm stats`` and the Pairs tab show for one collection, as plain values."""
    counts = store.counts(collection)[0]
    lengths = length_stats(store.lengths(collection))
    groups, in_groups = store.duplicate_prompts(collection)
    meta = store.get_collection(collection).meta
    return counts | {
        "lengths": {
            "chosen_longer_share": lengths.chosen_longer_share,
            "equal": lengths.equal,
            "mean_chosen": lengths.mean_chosen,
            "mean_rejected": lengths.mean_rejected,
            "percentiles": {k: {f"p{int(q)}": v for q, v in p.items()} for k, p in lengths.percentiles.items()},
        },
        "duplicates": {
            "prompts_in_several_pairs": groups,
            "pairs_sharing_a_prompt": in_groups,
            "pairs_also_in_other_collections": store.shared_with_other_collections(collection),
            "skipped_at_import": sum(i.get("duplicates", 0) for i in meta.get("imports", [])),
        },
        "agreement": collection_agreement(store, collection),
    }
