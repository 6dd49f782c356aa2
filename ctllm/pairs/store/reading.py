"""Reading pairs: by id, version chains, a collection in id order, and its pairs with labels resolved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.resolve import resolve
from ctllm.pairs.schema import Pair
from ctllm.pairs.store.connection import Connections
from ctllm.pairs.store.records import PAIR_COLUMNS, Collection, StoredPair, to_stored_pair
from ctllm.pairs.store.sql import chunks, marks


class ReadMixin(Connections):
    """Reading pairs; part of ``Store`` (uses its ``get_collection`` and ``choices_by_root``)."""

    def get_pair(self, pair_id: int) -> StoredPair:
        found = self._pairs_by_id([pair_id])
        if not found:
            raise UserError(f"no pair with id {pair_id}")
        return found[0]

    def latest_version(self, pair_id: int) -> StoredPair:
        row = self.db.execute(
            "SELECT id FROM pairs WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?) AND is_latest = 1",
            (pair_id,),
        ).fetchone()
        if row is None:
            raise UserError(f"no pair with id {pair_id}")
        return self.get_pair(row[0])

    def versions(self, pair_id: int) -> list[StoredPair]:
        """Every version of a pair's chain, oldest first."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM pairs WHERE root_id = (SELECT root_id FROM pairs WHERE id = ?) ORDER BY id", (pair_id,)
            )
        ]
        return self._pairs_by_id(ids)

    def _pairs_by_id(self, ids: Sequence[int]) -> list[StoredPair]:
        """Pairs in the order of ``ids``."""
        if not ids:
            return []
        found: dict[int, StoredPair] = {}
        for chunk in chunks(list(ids), 500):
            rows = self.db.execute(
                f"SELECT {PAIR_COLUMNS}, t.prompt, t.chosen, t.rejected, t.meta"
                f" FROM pairs p JOIN pair_texts t ON t.pair_id = p.id WHERE p.id IN ({marks(chunk)})",
                chunk,
            )
            for row in rows:
                found[row[0]] = to_stored_pair(row)
        return [found[i] for i in ids if i in found]

    def iter_pairs(
        self, collection: str | int | Collection, split: str | None = None, batch: int = 1000
    ) -> Iterator[StoredPair]:
        """Latest versions in id order (consistent pages of ``batch``; safe to write meanwhile)."""
        cid = self.get_collection(collection).id
        after = 0
        split_sql = " AND p.split = ?" if split is not None else ""
        while True:
            params: list[Any] = [cid, after, *([split] if split is not None else []), batch]
            rows = self.db.execute(
                f"SELECT {PAIR_COLUMNS}, t.prompt, t.chosen, t.rejected, t.meta FROM pairs p"
                f" JOIN pair_texts t ON t.pair_id = p.id WHERE p.collection_id = ? AND p.is_latest = 1"
                f" AND p.id > ?{split_sql} ORDER BY p.id LIMIT ?",
                params,
            ).fetchall()
            if not rows:
                return
            yield from (to_stored_pair(r) for r in rows)
            after = rows[-1][0]

    def resolved_pairs(
        self, collection: str | int | Collection, split: str | None = None
    ) -> tuple[list[Pair], Counter[str]]:
        """What an export or a training run gets: latest versions with labels resolved (see ``resolve``).

        Returns the pairs and how many pairs had each outcome (resolve.KEPT and resolve.LEFT_OUT).
        """
        choices = self.choices_by_root(collection)
        pairs: list[Pair] = []
        outcomes: Counter[str] = Counter()
        for stored in self.iter_pairs(collection, split):
            resolution = resolve(stored.pair, choices.get(stored.root_id, ()))
            outcomes[resolution.outcome] += 1
            if resolution.pair is not None:
                pairs.append(resolution.pair)
        return pairs, outcomes

    def collection_pairs(self, collection: str | int | Collection, split: str | None = None) -> list[Pair]:
        """The resolved pairs of a collection (labels applied; ties, both-bad and no-majority pairs left out)."""
        return self.resolved_pairs(collection, split)[0]
