"""The Chat tab's votes as arena battles (``ctllm.evaluate.arena``), read from the pairs store.

Each pair in the chat votes collection is one vote: its meta names the two models (``chosen_model`` and
``rejected_model``, the preferred one first) and the verdict recorded when it was saved ("left better", "right
better", "tie", "both bad"), with the blind flag and the voter. That save-time verdict is the battle, even if the
voter later relabels the pair in the Pairs tab. Every other annotator's label on the pair (a second chat vote on
the same two answers, which the Chat tab stores as a label on the existing pair, or a verdict given in the Pairs
tab) is one more battle between the same models; whether it was given blind is not recorded, so it counts only
when all votes are asked for. Identical answers are never saved, so never counted. A pair whose two sides are the
same model rates nothing and is left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctllm.evaluate.arena import Battle
from ctllm.pairs.store import Store
from ctllm.pairs.store.records import StoredPair

CHAT_VOTES_COLLECTION = "chat votes"
VERDICT_WINNERS = {"left better": "model_a", "right better": "model_a", "tie": "tie", "both bad": "tie"}
CHOICE_WINNERS = {"chosen": "model_a", "rejected": "model_b", "tie": "tie", "both_bad": "tie"}


@dataclass(frozen=True)
class Votes:
    """The battles found in a collection, and what was left out and why."""

    battles: list[Battle] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> pairs or labels

    @property
    def languages(self) -> list[str]:
        return sorted({b.language for b in self.battles if b.language})

    @property
    def categories(self) -> list[str]:
        return sorted({b.category for b in self.battles if b.category})


def pair_battles(stored: StoredPair, labels: Iterable[tuple[str, str]], skipped: Counter[str]) -> list[Battle]:
    """The battles of one vote pair: its save-time verdict, then one per other annotator's label
    (``labels``: (annotator, choice) on the pair's version chain)."""
    pair, meta = stored.pair, stored.pair.meta
    chosen, rejected = meta.get("chosen_model"), meta.get("rejected_model")
    if not isinstance(chosen, str) or not isinstance(rejected, str) or not chosen or not rejected:
        skipped["no models in the meta"] += 1
        return []
    if chosen == rejected:
        skipped["same model on both sides"] += 1
        return []
    winner = VERDICT_WINNERS.get(str(meta.get("verdict")))
    if winner is None:
        skipped["unknown verdict"] += 1
        return []
    voter = str(meta.get("annotator") or "")
    common: Mapping[str, Any] = {
        "model_a": chosen,
        "model_b": rejected,
        "language": pair.language,
        "category": str(meta.get("category") or ""),
        "pair_id": stored.id,
    }
    out = [Battle(winner=winner, blind=bool(meta.get("blind")), annotator=voter, **common)]
    for annotator, choice in labels:
        if annotator == voter:
            continue
        if choice not in CHOICE_WINNERS:  # a skip is no judgement
            continue
        out.append(Battle(winner=CHOICE_WINNERS[choice], blind=None, annotator=annotator, **common))
    return out


def chat_battles(store: Store, collection: str = CHAT_VOTES_COLLECTION) -> Votes:
    """Every battle in the chat votes ``collection`` (none when it does not exist yet)."""
    if store.find_collection(collection) is None:
        return Votes()
    labels: dict[int, list[tuple[str, str]]] = {}
    for root, annotator, _verdict, choice, *_lengths in store.label_rows(collection):
        labels.setdefault(root, []).append((annotator, choice))
    votes = Votes()
    for stored in store.iter_pairs(collection):
        votes.battles.extend(pair_battles(stored, labels.get(stored.root_id, ()), votes.skipped))
    return votes


def votes_signature(store: Store, collection: str = CHAT_VOTES_COLLECTION) -> str:
    """Changes when a vote pair or a label is added or removed: what the leaderboard's poll compares."""
    if store.find_collection(collection) is None:
        return ""
    progress = store.label_progress(collection)
    return f"{progress.total}:{progress.labels}:{progress.judgements}"
