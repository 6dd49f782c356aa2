"""Arena ratings: a Bradley–Terry fit of pairwise votes, bootstrap intervals and the head-to-head win rates.

Pure functions over :class:`Battle` records (``ctllm.evaluate.arena_votes`` reads them from the chat votes).

The fit is FastChat's ``compute_mle_elo`` (``fastchat/serve/monitor/elo_analysis.py``): a logistic regression
without intercept on one row per battle, written twice, with +ln(BASE) in model A's column and −ln(BASE) in model
B's; a win for A makes both rows "A won", a tie makes one row "A won" and one "B won" (half a win each way). The
rating is ``SCALE·coef + INIT_RATING``, so a gap of 400 points means 10:1 odds. sklearn's ``LogisticRegression``
is replaced by our own damped Newton (IRLS) on the same objective with sklearn's L2 term ``‖coef‖²/2`` next to
``C·Σ log-loss``, C = 10⁶: practically the unpenalised MLE, yet finite when a model never lost, and it centres
the ratings on INIT_RATING (the likelihood alone does not move when every rating shifts). Rows with the same
models and outcome are counted, not repeated: a fit costs the same for 10 votes as for 10⁵.

The 95 % interval of each rating is the 2.5th–97.5th percentile over bootstrap rounds, each a resample of the
battles with replacement (drawn as multinomial counts over the distinct (A, B, outcome) rows, which is the same
distribution), seeded. A model absent from a round's resample has no rating in that round. The table's rating
is the fit on all battles; the rank is 1 + the number of models whose lower bound is above this one's upper
bound (FastChat's ranking). The win-rate matrix is FastChat's too: ties are left out, entry [i][j] is the share
of decisive battles between i and j that i won.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
C = 1e6  # sklearn's inverse L2 strength
WINNERS = ("model_a", "model_b", "tie")
ALL = "all"
DEFAULT_ROUNDS = 1000
NEWTON_STEPS = 200
_K = math.log(BASE)


@dataclass(frozen=True)
class Battle:
    """One vote between two models: ``winner`` is model_a, model_b or tie ("both bad" is a tie, as in FastChat)."""

    model_a: str
    model_b: str
    winner: str
    language: str = ""
    category: str = ""  # the prompt's category where the vote recorded one
    blind: bool | None = None  # None: not known (a label added after the pair's first vote)
    annotator: str = ""
    pair_id: int = 0

    def __post_init__(self) -> None:
        if self.winner not in WINNERS:
            raise ValueError(f"winner must be one of {', '.join(WINNERS)}, not {self.winner!r}")
        if self.model_a == self.model_b:
            raise ValueError(f"a battle needs two different models, not {self.model_a!r} twice")


@dataclass(frozen=True)
class ModelRating:
    model: str
    rating: float
    lower: float  # 2.5th percentile of the bootstrap ratings (NaN without bootstrap rounds)
    upper: float  # 97.5th percentile
    battles: int  # votes the model was in, ties included
    wins: int
    losses: int
    ties: int
    rank: int


@dataclass(frozen=True)
class Leaderboard:
    ratings: tuple[ModelRating, ...]  # best first
    win_rate: tuple[tuple[float | None, ...], ...]  # [i][j]: share of decisive i–j battles i won, models as ratings
    decisive: tuple[tuple[int, ...], ...]  # [i][j]: decisive battles between i and j
    battles: int
    rounds: int
    seed: int

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.ratings]

    def as_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return round(x, 3) if math.isfinite(x) else None

        return {
            "battles": self.battles,
            "bootstrap_rounds": self.rounds,
            "seed": self.seed,
            "ratings": [
                asdict(r) | {"rating": finite(r.rating), "lower": finite(r.lower), "upper": finite(r.upper)}
                for r in self.ratings
            ],
            "models": self.models,
            "win_rate": [list(row) for row in self.win_rate],
            "decisive": [list(row) for row in self.decisive],
        }


def select(
    battles: Iterable[Battle], language: str | None = None, category: str | None = None, blind_only: bool = True
) -> list[Battle]:
    """The battles of one language and category (None or "all": any), blind-mode votes only unless told."""
    return [
        b
        for b in battles
        if (not language or language == ALL or b.language == language)
        and (not category or category == ALL or b.category == category)
        and (b.blind is True or not blind_only)
    ]


def encode(battles: Sequence[Battle]) -> tuple[list[str], np.ndarray]:
    """The models (sorted) and one row (index of A, index of B, A's score: 1, ½ or 0) per battle."""
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    index = {m: i for i, m in enumerate(models)}
    score = {"model_a": 1.0, "tie": 0.5, "model_b": 0.0}
    rows = np.array([(index[b.model_a], index[b.model_b], score[b.winner]) for b in battles], dtype=np.float64)
    return models, rows.reshape(-1, 3)


def win_counts(rows: np.ndarray, n_models: int, weights: np.ndarray | None = None) -> np.ndarray:
    """W[..., i, j]: the regression rows in which i beat j (FastChat's doubled rows: a win counts 2, a tie 1 each
    way), each row of ``rows`` counted once or by ``weights`` (one matrix per row of a rounds × rows array)."""
    a, b, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    per_row = np.ones((1, len(rows))) if weights is None else np.atleast_2d(weights)
    out = np.zeros((n_models * n_models, per_row.shape[0]))  # cells × rounds, so each row adds to one cell
    np.add.at(out, a * n_models + b, (per_row * (2 * s)).T)
    np.add.at(out, b * n_models + a, (per_row * (2 * (1 - s))).T)
    out = out.T.reshape(-1, n_models, n_models)
    return out[0] if weights is None else out


def _objective(theta: np.ndarray, wins: np.ndarray, c: float) -> np.ndarray:
    diff = _K * (theta[:, :, None] - theta[:, None, :])
    return (wins * np.logaddexp(0.0, -diff)).sum(axis=(1, 2)) + (theta * theta).sum(axis=1) / (2 * c)


def fit_bt(wins: np.ndarray, c: float = C, tol: float = 1e-10) -> np.ndarray:
    """Coefficients (log-BASE units) maximising the penalised Bradley–Terry likelihood of ``wins`` (p × p, or
    rounds × p × p for many fits at once): damped Newton steps, halved until the objective decreases."""
    single = wins.ndim == 2
    wins = wins[None] if single else wins
    rounds, p, _ = wins.shape
    games = wins + wins.transpose(0, 2, 1)
    theta = np.zeros((rounds, p))
    loss = _objective(theta, wins, c)
    eye = np.eye(p)
    for _ in range(NEWTON_STEPS):
        prob = 0.5 * (1.0 + np.tanh(0.5 * _K * (theta[:, :, None] - theta[:, None, :])))  # P(i beats j)
        grad = _K * (games * prob - wins).sum(axis=2) + theta / c
        curve = _K * _K * games * prob * (1.0 - prob)
        hess = eye * (curve.sum(axis=2) + 1.0 / c)[:, :, None] - curve
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        decrement = (grad * step).sum(axis=1)
        if decrement.max() < tol:
            break
        size = np.ones(rounds)
        for _ in range(60):
            trial = theta - size[:, None] * step
            trial_loss = _objective(trial, wins, c)
            bad = trial_loss > loss - 1e-4 * size * decrement
            if not bad.any():
                break
            size = np.where(bad, size / 2, size)
        if bad.all():  # no step decreases the objective any more: converged as far as float64 goes
            break
        theta = np.where(bad[:, None], theta, trial)
        loss = np.where(bad, loss, trial_loss)
    return theta[0] if single else theta


def ratings_of(theta: np.ndarray) -> np.ndarray:
    return SCALE * theta + INIT_RATING


def mle_ratings(battles: Sequence[Battle], c: float = C) -> dict[str, float]:
    """FastChat's ``compute_mle_elo`` on ``battles``: {model: rating}."""
    if not battles:
        return {}
    models, rows = encode(battles)
    return dict(zip(models, ratings_of(fit_bt(win_counts(rows, len(models)), c)).tolist(), strict=True))


def bootstrap_ratings(
    battles: Sequence[Battle], rounds: int = DEFAULT_ROUNDS, seed: int = 0, c: float = C
) -> tuple[list[str], np.ndarray]:
    """The models and a rounds × models array of ratings, one row per resample of the battles (NaN where a model
    is absent from the resample)."""
    models, rows = encode(battles)
    if rounds <= 0 or not battles:
        return models, np.full((0, len(models)), np.nan)
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(rows), counts / counts.sum(), size=rounds).astype(float)
    out = np.empty((rounds, len(models)))
    chunk = 256  # rounds solved together (p × p systems each)
    for start in range(0, rounds, chunk):
        weights = draws[start : start + chunk]
        wins = win_counts(distinct, len(models), weights)
        ratings = ratings_of(fit_bt(wins, c))
        present = (wins + wins.transpose(0, 2, 1)).sum(axis=2) > 0
        out[start : start + chunk] = np.where(present, ratings, np.nan)
    return models, out


def record(battles: Sequence[Battle]) -> dict[str, tuple[int, int, int]]:
    """{model: (wins, losses, ties)}."""
    out: dict[str, list[int]] = {}
    for b in battles:
        a, z = out.setdefault(b.model_a, [0, 0, 0]), out.setdefault(b.model_b, [0, 0, 0])
        if b.winner == "tie":
            a[2] += 1
            z[2] += 1
        else:
            winner, loser = (a, z) if b.winner == "model_a" else (z, a)
            winner[0] += 1
            loser[1] += 1
    return {m: (w, lost, t) for m, (w, lost, t) in out.items()}


def win_rates(battles: Sequence[Battle], models: Sequence[str]) -> tuple[list[list[float | None]], list[list[int]]]:
    """FastChat's pairwise win fraction (ties left out) in ``models``' order, and the decisive battle counts."""
    index = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)), dtype=int)
    for b in battles:
        if b.winner != "tie":
            winner, loser = (b.model_a, b.model_b) if b.winner == "model_a" else (b.model_b, b.model_a)
            wins[index[winner], index[loser]] += 1
    decisive = wins + wins.T
    rates = [
        [float(wins[i, j] / decisive[i, j]) if decisive[i, j] else None for j in range(len(models))]
        for i in range(len(models))
    ]
    return rates, decisive.tolist()


def leaderboard(battles: Sequence[Battle], rounds: int = DEFAULT_ROUNDS, seed: int = 0, c: float = C) -> Leaderboard:
    """Ratings with bootstrap 95 % intervals, vote counts, ranks and the win-rate matrix of ``battles``."""
    battles = list(battles)
    point = mle_ratings(battles, c)
    models, boot = bootstrap_ratings(battles, rounds, seed, c)
    with warnings.catch_warnings():  # a model absent from every round has no interval: NaN, said in the table
        warnings.simplefilter("ignore", RuntimeWarning)
        lower, upper = np.nanpercentile(boot, [2.5, 97.5], axis=0) if len(boot) else np.full((2, len(models)), np.nan)
    bounds = {m: (float(lo), float(hi)) for m, lo, hi in zip(models, lower, upper, strict=True)}
    counts = record(battles)
    order = sorted(models, key=lambda m: (-point[m], m))
    ratings = tuple(
        ModelRating(
            model=m,
            rating=point[m],
            lower=bounds[m][0],
            upper=bounds[m][1],
            battles=sum(counts[m]),
            wins=counts[m][0],
            losses=counts[m][1],
            ties=counts[m][2],
            rank=1 + sum(bounds[o][0] > bounds[m][1] for o in models if o != m),
        )
        for m in order
    )
    rates, decisive = win_rates(battles, order)
    return Leaderboard(
        ratings=ratings,
        win_rate=tuple(tuple(row) for row in rates),
        decisive=tuple(tuple(row) for row in decisive),
        battles=len(battles),
        rounds=max(rounds, 0),
        seed=seed,
    )
