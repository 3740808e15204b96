"""Bounded, expiring maps for the gossip core: the seen-set, the rejected set, the item store."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """Insertion-ordered entries, each with an expiry time; the oldest go first when full.

    Time is passed in. Entries are assumed inserted at non-decreasing times with one
    lifetime, so expiry pops from the front. `on_evict` sees every entry that leaves by
    expiry or overflow (not by `pop`).
    """

    def __init__(
        self,
        lifetime_s: float,
        max_entries: int,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if lifetime_s <= 0 or max_entries < 1:
            raise ValueError("lifetime_s must be > 0 and max_entries >= 1")
        self.lifetime_s = lifetime_s
        self.max_entries = max_entries
        self._on_evict = on_evict
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def get(self, key: K, now: float) -> V | None:
        """The live value for `key`, or None (also when it has expired)."""
        hit = self._data.get(key)
        if hit is None or hit[0] <= now:
            return None
        return hit[1]

    def contains(self, key: K, now: float) -> bool:
        """Whether `key` holds a live entry."""
        hit = self._data.get(key)
        return hit is not None and hit[0] > now

    def put(self, key: K, value: V, now: float) -> None:
        """Insert or replace `key` (it then expires `lifetime_s` from `now`)."""
        self._data.pop(key, None)
        self._data[key] = (now + self.lifetime_s, value)
        while len(self._data) > self.max_entries:
            self._evict_first()

    def pop(self, key: K) -> V | None:
        """Remove `key`; its value or None."""
        hit = self._data.pop(key, None)
        return None if hit is None else hit[1]

    def expire(self, now: float) -> None:
        """Drop every entry whose time is up."""
        while self._data:
            first = next(iter(self._data.values()))
            if first[0] > now:
                return
            self._evict_first()

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs, oldest first (expired ones included until `expire`)."""
        for key, (_, value) in self._data.items():
            yield key, value

    def _evict_first(self) -> None:
        key, (_, value) = self._data.popitem(last=False)
        if self._on_evict is not None:
            self._on_evict(key, value)
