"""Kept KV caches, so a chat's next turn prefills only what is new (its previous prompt and answer are cached).

An entry is a conversation side's token ids and the ``DynamicCache`` holding exactly those ids, keyed by
``(chat id, side)``. :meth:`KeptCaches.take` REMOVES the entry it hands out, so one cache object never serves two
generations at once (the two sides of a chat generate in threads); the generation puts its grown cache back with
:meth:`KeptCaches.keep`. Reuse is decided by the token ids alone: the new prompt must start with the kept ids, and
when the chat template renders the previous answer differently (whitespace, the stop token), the cache is cropped
to the common prefix. The model is held by a weak reference, so a kept cache never keeps unloaded weights alive and
a reloaded model never sees another model's cache.

No torch import here: the Chat tab forgets conversations without loading torch.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

CHAT_CACHE_CAPACITY = 4  # two conversations of two sides; each holds (layers x 2 x tokens x kv width) floats


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading token ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def croppable(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a plain growing one that can be cropped and sliced by position."""
    return all(getattr(layer, "is_croppable", False) and not getattr(layer, "is_sliding", True) for layer in
               getattr(cache, "layers", ()))


@dataclass
class _Kept:
    model: weakref.ref
    ids: tuple[int, ...]
    cache: Any  # a transformers DynamicCache over exactly ``ids``


class KeptCaches:
    """At most ``capacity`` caches, least recently used dropped first; thread-safe."""

    def __init__(self, capacity: int = CHAT_CACHE_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, model: Any, key: Hashable, ids: Sequence[int]) -> tuple[Any, int]:
        """The cache kept under ``key`` cropped to the longest prefix it shares with ``ids`` (at most all but the
        last id: generation needs one new token to start from), and that length; ``(None, 0)`` when none fits.
        The entry leaves the store either way."""
        with self._lock:
            kept = self._entries.pop(key, None)
        if kept is None or kept.model() is not model:
            return None, 0
        n = min(common_prefix(kept.ids, ids), len(ids) - 1)
        if n <= 0 or not croppable(kept.cache):
            return None, 0
        n = min(n, kept.cache.get_seq_length())
        kept.cache.crop(n - kept.cache.get_seq_length())  # a negative count: how many trailing tokens to remove
        return kept.cache, n

    def keep(self, model: Any, key: Hashable, ids: Sequence[int], cache: Any) -> None:
        """Keep ``cache`` (over exactly ``ids``) for ``key``'s next turn."""
        with self._lock:
            for stale in [k for k, kept in self._entries.items() if kept.model() is None]:
                del self._entries[stale]
            self._entries[key] = _Kept(weakref.ref(model), tuple(ids), cache)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, chat: Hashable) -> None:
        """Drop every cache of the conversation ``chat`` (keys ``(chat, side)``): cleared, or its models changed."""
        with self._lock:
            for key in [k for k in self._entries if isinstance(k, tuple) and k and k[0] == chat]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


CHAT_CACHES = KeptCaches()
