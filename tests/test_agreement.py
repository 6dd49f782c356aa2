"""Label resolution and agreement statistics: pure functions against hand-worked values, then on a real store."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ctllm.pairs.agreement import (
    agreement_from_rows,
    cohen_kappa,
    collection_agreement,
    collection_stats,
    fleiss_kappa,
    length_stats,
    percentiles,
)
from ctllm.pairs.resolve import choice_of, majority, resolve
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store

PAIR = Pair(user_prompt("q"), "good", "bad")


@pytest.mark.parametrize(
    ("verdict", "shown_first", "choice"),
    [
        ("first", "chosen", "chosen"),
        ("first", "rejected", "rejected"),
        ("second", "chosen", "rejected"),
        ("second", "rejected", "chosen"),
        ("tie", "rejected", "tie"),
        ("both_bad", "chosen", "both_bad"),
        ("skip", "rejected", "skip"),
    ],
)
def test_choice_maps_positions_back_to_stored_sides(verdict: str, shown_first: str, choice: str) -> None:
    assert choice_of(verdict, shown_first) == choice


def test_choice_rejects_unknown_values() -> None:
    with pytest.raises(ValueError):
        choice_of("left", "chosen")
    with pytest.raises(ValueError):
        choice_of("first", "left")


def test_majority() -> None:
    assert majority([]) is None
    assert majority(["skip", "skip"]) is None
    assert majority(["chosen"]) == "chosen"
    assert majority(["chosen", "rejected", "rejected", "skip"]) == "rejected"
    assert majority(["chosen", "rejected"]) == "no_majority"
    assert majority(["chosen", "chosen", "tie", "tie", "rejected"]) == "no_majority"
    assert majority(["tie", "tie", "chosen"]) == "tie"


def test_resolve_outcomes() -> None:
    assert resolve(PAIR, []) == resolve(PAIR, ["skip"])
    assert resolve(PAIR, []).outcome == "source" and resolve(PAIR, []).pair == PAIR
    assert resolve(PAIR, ["chosen", "chosen", "rejected"]).outcome == "confirmed"
    swapped = resolve(PAIR, ["rejected"])
    assert swapped.outcome == "swapped" and (swapped.pair.chosen, swapped.pair.rejected) == ("bad", "good")
    for choices, outcome in ((["tie"], "tie"), (["both_bad", "both_bad", "chosen"], "both_bad"),
                             (["chosen", "rejected"], "no_majority")):
        result = resolve(PAIR, choices)
        assert (result.pair, result.outcome) == (None, outcome)


def test_cohen_kappa_hand_worked() -> None:
    # 10 items: raters agree on 7; marginals a = (6 x, 4 y), b = (5 x, 5 y): p_e = .5, κ = (.7 - .5) / .5 = .4
    a = ["x"] * 6 + ["y"] * 4
    b = ["x", "x", "x", "x", "y", "y", "x", "y", "y", "y"]
    assert sum(p == q for p, q in zip(a, b, strict=True)) == 7 and b.count("x") == 5
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement 1: undefined
    with pytest.raises(ValueError):
        cohen_kappa(["x"], [])


def test_fleiss_kappa_matches_fleiss_1971_example() -> None:
    # The worked example in Fleiss (1971) / Wikipedia: 10 subjects, 14 raters, 5 categories, κ = 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    items = [{str(j): n for j, n in enumerate(row) if n} for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_edge_cases() -> None:
    assert fleiss_kappa([]) is None
    assert fleiss_kappa([{"a": 1}]) is None  # one rating is no agreement
    assert fleiss_kappa([{"a": 3}, {"b": 2}]) == pytest.approx(1.0)
    assert fleiss_kappa([{"a": 2}, {"a": 2}]) is None
    # Two raters: Fleiss' κ uses pooled marginals (Scott's π): items (x,x), (x,y), (y,y), (y,y).
    pi = fleiss_kappa([{"x": 2}, {"x": 1, "y": 1}, {"y": 2}, {"y": 2}])
    p_o, p_e = 3 / 4, (3 / 8) ** 2 + (5 / 8) ** 2
    assert pi == pytest.approx((p_o - p_e) / (1 - p_e))


def test_percentiles_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentiles(values) == {50: 50, 90: 90, 99: 99}
    assert percentiles([7]) == {50: 7, 90: 7, 99: 7}
    assert percentiles([]) == {}


def test_length_stats() -> None:
    stats = length_stats([(10, 100, 50, "en"), (20, 30, 30, "en"), (30, 10, 90, "zh"), (40, 70, 20, "zh")])
    assert (stats.pairs, stats.chosen_longer, stats.equal) == (4, 2, 1)
    assert stats.chosen_longer_share == 0.5
    assert stats.mean_chosen == 52.5 and stats.mean_rejected == 47.5
    assert stats.percentiles["prompt"][50] == 20


def test_agreement_from_rows() -> None:
    rows = [
        # root, annotator, verdict, choice, chosen chars, rejected chars
        (1, "a", "first", "chosen", 100, 50),
        (1, "b", "second", "chosen", 100, 50),
        (2, "a", "first", "rejected", 40, 60),
        (2, "b", "first", "chosen", 40, 60),
        (3, "a", "tie", "tie", 10, 10),
        (3, "b", "tie", "tie", 10, 10),
        (4, "a", "skip", "skip", 5, 6),
        (5, "a", "second", "chosen", 30, 30),
    ]
    report = agreement_from_rows(rows)
    assert report.annotators == {"a": 4, "b": 3}
    assert (report.labelled_pairs, report.multi_rated) == (4, 3)
    # Shared pairs 1, 2, 3: a = (chosen, rejected, tie), b = (chosen, chosen, tie): p_o = 2/3,
    # p_e = (1*2 + 1*0 + 1*1) / 9 = 1/3, κ = (2/3 - 1/3) / (2/3) = 0.5.
    kappa, shared = report.cohen[("a", "b")]
    assert shared == 3 and kappa == pytest.approx(0.5)
    assert (report.decisive, report.with_source, report.first_position) == (5, 4, 3)
    assert report.source_agreement == pytest.approx(0.8)
    # Unequal-length decisive judgements: pair 1 twice (longer chosen), pair 2 twice (a picked the longer).
    assert (report.unequal_length, report.longer_picked) == (4, 3)
    assert (report.ties, report.both_bad, report.skips) == (2, 0, 1)
    assert "Cohen's κ 0.50 on 3 shared pairs" in str(report)


def test_three_annotators_report_fleiss() -> None:
    rows = [(r, who, "first", "chosen", 1, 2) for r in (1, 2) for who in ("a", "b", "c")]
    rows += [(3, "a", "first", "chosen", 1, 2), (3, "b", "first", "rejected", 1, 2), (3, "c", "tie", "tie", 1, 2)]
    report = agreement_from_rows(rows)
    items = [Counter({"chosen": 3}), Counter({"chosen": 3}), Counter({"chosen": 1, "rejected": 1, "tie": 1})]
    assert report.fleiss == pytest.approx(fleiss_kappa(items))
    assert "Fleiss' κ" in str(report) and len(report.cohen) == 3


def test_collection_agreement_and_stats_on_a_store(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.create_collection("c")
        pairs = [Pair(user_prompt(f"问题{i % 3}"), "长一些的好回答" * (1 + i % 2), f"短回答{i}") for i in range(6)]
        assert store.add_pairs("c", pairs + pairs[:1]) == (6, 1)
        store.update_collection_meta("c", imports=[{"duplicates": 1}])
        ids = [sp.id for sp in store.iter_pairs("c")]
        for pid in ids[:4]:
            store.add_label(pid, "ann", "first", "chosen")
            store.add_label(pid, "bob", "second" if pid == ids[0] else "first", "chosen")
        new_id = store.edit_pair(ids[1], rejected="改过的短回答")
        store.add_label(new_id, "cat", "first", "rejected")  # on the edited version: same pair chain
        report = collection_agreement(store, "c")
        assert report.annotators == {"ann": 4, "bob": 4, "cat": 1}
        assert report.multi_rated == 4 and report.cohen[("ann", "bob")][1] == 4
        assert report.cohen[("ann", "cat")] == (0.0, 1)  # one shared pair, opposite sides
        stats = collection_stats(store, "c")
        assert stats["pairs"] == 6 and stats["labelled"] == 4 and stats["disagreements"] == 2
        assert stats["duplicates"] == {
            "prompts_in_several_pairs": 3,
            "pairs_sharing_a_prompt": 6,
            "pairs_also_in_other_collections": 0,
            "skipped_at_import": 1,
        }
        assert stats["lengths"]["chosen_longer_share"] == 1.0
        assert set(stats["lengths"]["percentiles"]) == {"prompt", "chosen", "rejected"}
