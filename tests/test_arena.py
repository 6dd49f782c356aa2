"""The arena leaderboard: FastChat's Bradley–Terry fit (checked against closed forms, against FastChat's own
doubled-row regression fitted by plain gradient descent), bootstrap
intervals that cover simulated true ratings, the votes read from a real store, the CLI and the panel's handler."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ctllm.cli import main
from ctllm.evaluate.arena import (
    BASE,
    INIT_RATING,
    SCALE,
    Battle,
    C,
    leaderboard,
    mle_ratings,
    select,
)
from ctllm.evaluate.arena_votes import CHAT_VOTES_COLLECTION, chat_battles
from ctllm.pairs.schema import Message, Pair
from ctllm.pairs.store import Store
from ctllm.settings import Settings
from ctllm.ui.chat_tab import Side, Turn, save_vote
from ctllm.ui.context import AppContext
from ctllm.ui.leaderboard_panel import LeaderboardHandlers

TRUE = {"sft": 1000.0, "round-1": 1100.0, "round-2": 1160.0, "hub": 900.0, "other": 1300.0, "weak": 740.0}


def battles_of(pairs: list[tuple[str, str, str]]) -> list[Battle]:
    return [Battle(a, b, winner) for a, b, winner in pairs]


def simulate(rng: np.random.Generator, n: int, strengths: dict[str, float] = TRUE) -> list[Battle]:
    """Votes drawn from the Bradley–Terry model itself: A beats B with odds 10^((R_A − R_B)/400)."""
    names = list(strengths)
    i = rng.integers(0, len(names), n)
    j = (i + rng.integers(1, len(names), n)) % len(names)
    out = []
    for a, b in zip(i, j, strict=True):
        p = 1 / (1 + 10 ** ((strengths[names[b]] - strengths[names[a]]) / 400))
        out.append(Battle(names[a], names[b], "model_a" if rng.random() < p else "model_b"))
    return out


def centred(strengths: dict[str, float]) -> dict[str, float]:
    """The fit is centred on INIT_RATING (only differences are identified), so the truth is compared centred."""
    mean = sum(strengths.values()) / len(strengths)
    return {m: r - mean + INIT_RATING for m, r in strengths.items()}


# -- the fit -------------------------------------------------------------------------------------------------


def test_two_models_three_wins_in_four_are_400_log10_3_apart() -> None:
    ratings = mle_ratings(battles_of([("a", "b", "model_a")] * 3 + [("a", "b", "model_b")]))
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)  # 190.85
    assert (ratings["a"] + ratings["b"]) / 2 == pytest.approx(INIT_RATING, abs=1e-6)


def test_a_tie_is_half_a_win_for_each_side_as_in_fastchat() -> None:
    two_wins_two_ties = mle_ratings(battles_of([("a", "b", "model_a")] * 2 + [("b", "a", "tie")] * 2))
    assert two_wins_two_ties["a"] - two_wins_two_ties["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)
    only_ties = mle_ratings(battles_of([("a", "b", "tie")] * 5))
    assert only_ties["a"] == pytest.approx(only_ties["b"], abs=1e-9)
    # Which side a winner sat on does not matter.
    flipped = mle_ratings(battles_of([("b", "a", "model_b")] * 3 + [("b", "a", "model_a")]))
    assert flipped["a"] - flipped["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)


def fastchat_rows(battles: list[Battle], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """FastChat's compute_mle_elo design matrix: every battle twice, ±ln(BASE), a tie one A-win and one B-win."""
    index = {m: i for i, m in enumerate(models)}
    doubled = battles + battles
    x = np.zeros((len(doubled), len(models)))
    y = np.zeros(len(doubled))
    for row, b in enumerate(doubled):
        x[row, index[b.model_a]] = math.log(BASE)
        x[row, index[b.model_b]] = -math.log(BASE)
        y[row] = b.winner == "model_a" or (b.winner == "tie" and row < len(battles))
    return x, y


def gradient_descent_fit(x: np.ndarray, y: np.ndarray, c: float, steps: int = 20000) -> np.ndarray:
    """sklearn's objective ‖w‖²/2 + C·Σ log-loss (divided by C), by plain gradient descent with step 1/L."""
    w = np.zeros(x.shape[1])
    lipschitz = np.linalg.eigvalsh(x.T @ x).max() / 4 + 1 / c
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        w -= (x.T @ (p - y) + w / c) / lipschitz
    return w


def test_the_fit_equals_fastchats_doubled_row_regression_fitted_by_gradient_descent() -> None:
    rng = np.random.default_rng(3)
    battles = simulate(rng, 300, {"a": 1000, "b": 1080, "c": 950, "d": 1200})
    battles += [Battle("a", "c", "tie"), Battle("d", "b", "tie"), Battle("c", "b", "tie")]
    models = ["a", "b", "c", "d"]
    w = gradient_descent_fit(*fastchat_rows(battles, models), c=C)
    reference = dict(zip(models, SCALE * w + INIT_RATING, strict=True))
    ours = mle_ratings(battles)
    for m in models:
        assert ours[m] == pytest.approx(reference[m], abs=0.01)


def test_a_model_that_never_lost_is_rated_above_the_rest_and_finite() -> None:
    board = leaderboard(battles_of([("a", "b", "model_a")] * 4 + [("b", "c", "model_a"), ("c", "b", "model_a")]),
                        rounds=50)
    top, second, third = board.ratings
    assert top.model == "a" and math.isfinite(top.rating) and top.rating > second.rating + 1000
    assert second.rating == pytest.approx(third.rating, abs=1e-3)  # b and c split their two votes
    assert (top.rank, second.rank, third.rank) == (1, 2, 2)  # a's interval is above both of theirs


# -- the leaderboard -----------------------------------------------------------------------------------------


def test_simulated_votes_recover_the_order_and_the_true_ratings_lie_in_the_intervals() -> None:
    board = leaderboard(simulate(np.random.default_rng(0), 6000), rounds=300, seed=1)
    truth = centred(TRUE)
    assert board.models == sorted(TRUE, key=lambda m: -TRUE[m])
    for r in board.ratings:
        assert r.lower <= truth[r.model] <= r.upper, r
        assert r.upper - r.lower < 60  # 6000 votes pin every rating to a few tens of points
    assert sum(r.battles for r in board.ratings) == 2 * 6000 and board.battles == 6000


def test_the_bootstrap_95_percent_intervals_cover_the_true_ratings_about_95_percent_of_the_time() -> None:
    truth = centred(TRUE)
    covered = []
    for trial in range(120):
        board = leaderboard(simulate(np.random.default_rng(100 + trial), 600), rounds=200, seed=trial)
        covered += [r.lower <= truth[r.model] <= r.upper for r in board.ratings]
    share = sum(covered) / len(covered)
    print(f"coverage of the true ratings by the 95 % intervals: {share:.3f} over {len(covered)} intervals")
    assert 0.90 <= share <= 0.99


def test_the_bootstrap_is_seeded() -> None:
    battles = simulate(np.random.default_rng(5), 200)
    same = [leaderboard(battles, rounds=40, seed=7).ratings for _ in range(2)]
    assert same[0] == same[1]
    other = leaderboard(battles, rounds=40, seed=8).ratings
    assert [r.lower for r in other] != [r.lower for r in same[0]]
    assert [r.rating for r in other] == [r.rating for r in same[0]]  # the point fit uses every vote


def test_win_rates_leave_ties_out_and_counts_include_them() -> None:
    board = leaderboard(
        battles_of([("a", "b", "model_a")] * 3 + [("b", "a", "model_a"), ("a", "b", "tie"), ("c", "a", "tie")]),
        rounds=20,
    )
    index = {m: i for i, m in enumerate(board.models)}
    a, b, c = index["a"], index["b"], index["c"]
    assert board.win_rate[a][b] == 0.75 and board.win_rate[b][a] == 0.25
    assert board.decisive[a][b] == 4 and board.win_rate[a][c] is None and board.win_rate[a][a] is None
    rated = {r.model: r for r in board.ratings}
    assert (rated["a"].battles, rated["a"].wins, rated["a"].losses, rated["a"].ties) == (6, 3, 1, 2)
    assert (rated["c"].battles, rated["c"].ties) == (1, 1)


def test_filters_pick_language_category_and_blind_votes() -> None:
    battles = [
        Battle("a", "b", "model_a", language="en", category="code", blind=True),
        Battle("a", "b", "model_b", language="zh", category="", blind=True),
        Battle("a", "b", "tie", language="en", category="", blind=False),
        Battle("a", "b", "tie", language="en", category="", blind=None),
    ]
    assert select(battles) == battles[:2]
    assert select(battles, blind_only=False) == battles
    assert select(battles, language="en") == battles[:1]
    assert select(battles, language="en", blind_only=False) == [battles[0], battles[2], battles[3]]
    assert select(battles, category="code", blind_only=False) == battles[:1]
    assert select(battles, "all", "all") == battles[:2]


def test_a_battle_names_two_models_and_a_known_winner() -> None:
    with pytest.raises(ValueError, match="winner"):
        Battle("a", "b", "left better")
    with pytest.raises(ValueError, match="two different models"):
        Battle("a", "a", "tie")


# -- votes from the store ------------------------------------------------------------------------------------


def vote_pair(prompt: str, chosen: str, rejected: str, chosen_model: str, rejected_model: str, verdict: str,
              blind: bool = True, annotator: str = "ann", category: str = "") -> Pair:
    """A pair as the Chat tab's save_vote stores it (the preferred answer first; left for a tie)."""
    meta = {
        "origin": "chat vote",
        "verdict": verdict,
        "models": {"sft": rejected_model, "dpo": chosen_model},
        "chosen_model": chosen_model,
        "rejected_model": rejected_model,
        "blind": blind,
        "annotator": annotator,
        **({"category": category} if category else {}),
    }
    return Pair(prompt=(Message(role="user", content=prompt),), chosen=chosen, rejected=rejected, source="chat",
                meta=meta)


def add_vote(store: Store, pair: Pair) -> int:
    collection = store.ensure_collection(CHAT_VOTES_COLLECTION, "votes")
    pair_id = store.add_pair(collection, pair, by=pair.meta["annotator"]).id
    verdict = {"left better": "first", "right better": "second", "tie": "tie", "both bad": "both_bad"}
    shown = "rejected" if pair.meta["verdict"] == "right better" else "chosen"
    store.add_label(pair_id, pair.meta["annotator"], verdict[pair.meta["verdict"]], shown)
    return pair_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(tmp_path / "studio.sqlite")
    yield opened
    opened.close()


def test_vote_pairs_and_other_annotators_labels_become_battles(store: Store) -> None:
    assert chat_battles(store).battles == []  # no votes collection yet
    first = add_vote(store, vote_pair("What is 2 + 2?", "4.", "5.", "run:r1", "embedded", "right better"))
    add_vote(store, vote_pair("Say hi", "Hi!", "Hello.", "embedded", "run:r1", "left better", category="chat"))
    add_vote(store, vote_pair("Tell a joke", "Ha.", "Heh.", "embedded", "run:r1", "both bad", blind=False))
    add_vote(store, vote_pair("你好吗？", "我很好。", "不好。", "run:r1", "embedded", "tie"))
    add_vote(store, vote_pair("Same model?", "A.", "B.", "embedded", "embedded", "left better"))
    # The voter relabels in the Pairs tab: the save-time vote stands. Another annotator's verdict is one more vote.
    store.add_label(first, "ann", "second", "chosen")  # now says the rejected side was better
    store.add_label(first, "bob", "second", "chosen")  # bob: the rejected answer (embedded) is better
    store.add_label(first, "carol", "skip", "chosen")  # a skip is no judgement

    votes = chat_battles(store)
    got = [(b.model_a, b.model_b, b.winner, b.language, b.category, b.blind, b.annotator) for b in votes.battles]
    assert got == [
        ("run:r1", "embedded", "model_a", "en", "", True, "ann"),
        ("run:r1", "embedded", "model_b", "en", "", None, "bob"),
        ("embedded", "run:r1", "model_a", "en", "chat", True, "ann"),
        ("embedded", "run:r1", "tie", "en", "", False, "ann"),
        ("run:r1", "embedded", "tie", "zh", "", True, "ann"),
    ]
    assert votes.skipped == {"same model on both sides": 1}
    assert votes.languages == ["en", "zh"] and votes.categories == ["chat"]
    blind = leaderboard(select(votes.battles), rounds=30)
    assert blind.battles == 3 and {r.model: r.battles for r in blind.ratings} == {"run:r1": 3, "embedded": 3}


def test_the_chat_tabs_own_save_vote_is_read_back(tmp_path: Path) -> None:
    """The format check against the real writer: save_vote's pairs and its label on a repeated answer pair."""
    ctx = AppContext(Settings(data_dir=tmp_path / "data").ensure_dirs())
    try:
        turn = Turn(user="Which is better?", sft_spec="embedded", dpo_spec="run:r1", swapped=True, blind=True)
        left, right = Side(answer="DPO answer", done=True), Side(answer="SFT answer", done=True)
        assert save_vote(ctx, turn, left, right, "left better", "ann")  # swapped: left is the DPO model
        assert save_vote(ctx, turn, left, right, "right better", "bob")  # the other way round: a pair of its own
        assert save_vote(ctx, turn, left, right, "left better", "carol")  # ann's pair again: a label on it
        assert not save_vote(ctx, turn, left, Side(answer="DPO answer", done=True), "tie", "ann")  # identical
        votes = chat_battles(ctx.store)
        assert [(b.model_a, b.model_b, b.winner, b.blind, b.annotator) for b in votes.battles] == [
            ("run:r1", "embedded", "model_a", True, "ann"),
            ("run:r1", "embedded", "model_a", None, "carol"),
            ("embedded", "run:r1", "model_a", True, "bob"),
        ]
    finally:
        ctx.close()


# -- the CLI and the panel -----------------------------------------------------------------------------------


def test_cli_rates_the_votes_as_json_and_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "votes.sqlite"
    store = Store(db)
    for i in range(6):
        add_vote(store, vote_pair(f"q{i}", f"good {i}", f"bad {i}", "run:r2", "embedded", "left better"))
    for i in range(2):
        add_vote(store, vote_pair(f"p{i}", f"fine {i}", f"poor {i}", "embedded", "run:r2", "left better"))
    add_vote(store, vote_pair("unblinded", "x", "y", "embedded", "run:r2", "left better", blind=False))
    store.close()

    assert main(["leaderboard", "--db", str(db), "--bootstrap", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["battles"] == 8 and report["models"] == ["run:r2", "embedded"]
    top, bottom = report["ratings"]
    assert top["rating"] - bottom["rating"] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert top["lower"] < top["rating"] < top["upper"] and (top["wins"], top["losses"]) == (6, 2)
    assert report["win_rate"] == [[None, 0.75], [0.25, None]] and report["left_out_by_filters"] == 1

    assert main(["leaderboard", "--db", str(db), "--bootstrap", "20", "--all-votes", "--language", "en"]) == 0
    text = capsys.readouterr().out
    assert "run:r2" in text and "9 votes" in text and "6-3-0" in text
    assert main(["leaderboard", "--db", str(tmp_path / "missing.sqlite")]) == 2


def test_the_panel_shows_the_models_and_follows_new_votes(tmp_path: Path) -> None:
    ctx = AppContext(Settings(data_dir=tmp_path / "data").ensure_dirs())
    try:
        h = LeaderboardHandlers(ctx)
        empty = h.refresh("all", "all", True, 100)
        assert empty["table"]["data"] == [] and "No votes" in empty["summary"]
        for i in range(3):
            add_vote(ctx.store, vote_pair(f"q{i}", f"good {i}", f"bad {i}", "run:r1", "embedded", "left better"))
        add_vote(ctx.store, vote_pair("q", "a", "b", "embedded", "run:r1", "left better", category="math"))
        shown = h.refresh("all", "all", True, 100)
        rows = shown["table"]["data"]
        assert [row[1] for row in rows] == ["run:r1", "embedded"] and [row[4] for row in rows] == [4, 4]
        assert rows[0][5] == "3-1-0" and shown["table"]["headers"][3] == "95 % CI"
        assert list(shown["chart"].data[0].x) == ["run:r1", "embedded"]
        assert shown["matrix"].data[0].z[0][1] == 0.75
        assert [value for _, value in shown["category"]["choices"]] == ["all", "math"]
        assert h.poll("all", "all", True, 100, shown["seen"]) == {}  # nothing new
        add_vote(ctx.store, vote_pair("q9", "c", "d", "embedded", "run:r1", "tie", blind=False))
        assert h.poll("all", "all", True, 100, shown["seen"])["table"]["data"][0][4] == 4  # not blind: not counted
        everything = h.refresh("all", "all", False, 100)
        assert [row[4] for row in everything["table"]["data"]] == [5, 5]
        math_only = h.refresh("all", "math", True, 0)
        assert [row[5] for row in math_only["table"]["data"]] == ["1-0-0", "0-1-0"]
        assert "–" in math_only["table"]["data"][0][3]  # no bootstrap rounds: no interval
    finally:
        ctx.close()
