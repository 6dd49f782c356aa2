"""What the store returns: collections, stored pairs, labels, progress; and the rows they are read from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.schema import Pair, RatedAnswer


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    kind: str
    source: str
    format: str
    created: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StoredPair:
    id: int
    collection_id: int
    pair: Pair
    root_id: int
    parent_id: int | None
    is_latest: bool
    split: str
    created_by: str
    created: float


@dataclass(frozen=True)
class StoredRated:
    """An unpaired rated answer in the store (``rated_answers``)."""

    id: int
    collection_id: int
    answer: RatedAnswer
    created_by: str
    created: float


@dataclass(frozen=True)
class Label:
    id: int
    pair_id: int
    root_id: int
    annotator: str
    verdict: str
    shown_first: str
    choice: str  # the verdict in terms of the stored sides (see resolve.choice_of)
    reason: str
    created: float


@dataclass(frozen=True)
class LabelProgress:
    """Labelling progress in one collection; a skip is not a judgement (it only moves the annotator on)."""

    total: int  # latest pairs
    judged: int  # pairs the annotator judged (skips left out)
    skipped: int  # pairs the annotator skipped
    anyone: int  # pairs judged by at least one annotator
    judgements: int  # labels that are not skips
    annotators: int  # annotators with at least one judgement
    labels: int  # label rows, skips included

    @property
    def mine(self) -> int:
        """Pairs the annotator has moved past, judged or skipped."""
        return self.judged + self.skipped


class DuplicatePair(UserError):
    def __init__(self, collection: str, existing_id: int) -> None:
        super().__init__(f"collection {collection!r} already holds this pair (pair {existing_id})")
        self.existing_id = existing_id


COLLECTION_COLUMNS = "id, name, kind, source, format, created, meta"
PAIR_COLUMNS = (
    "p.id, p.collection_id, p.root_id, p.parent_id, p.is_latest, p.language, p.source, p.split, p.created_by, "
    "p.created"
)
LABEL_COLUMNS = "id, pair_id, root_id, annotator, verdict, shown_first, choice, reason, created"


def to_collection(row: Sequence[Any]) -> Collection:
    """A Collection from a row of COLLECTION_COLUMNS."""
    return Collection(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


def to_stored_pair(row: Sequence[Any]) -> StoredPair:
    """A StoredPair from a row of PAIR_COLUMNS followed by the pair_texts columns (prompt, chosen, rejected, meta)."""
    pid, cid, root, parent, latest, language, source, split, by, created, prompt, chosen, rejected, meta = row
    meta = json.loads(meta)
    if split != str(meta.get("split") or "train"):  # set_split changed it: the pair carries the store's split
        meta["split"] = split
    pair = Pair(
        prompt=tuple(json.loads(prompt)),
        chosen=chosen,
        rejected=rejected,
        source=source,
        language=language,
        meta=meta,
    )
    return StoredPair(pid, cid, pair, root, parent, bool(latest), split, by, created)
