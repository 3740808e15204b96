"""Contract state: a map of (namespace, key) to a canonical value, with a revert journal.

Values are kept as their canonical bytes, so `get` always hands out a fresh copy and the
state root is a pure function of the contents: SHA-256 over the concatenated row hashes
``SHA-256(canonical([ns, key, value_bytes]))`` in ``(ns, key)`` order. Row hashes are
kept up to date on every write, and so is the sorted list of keys once a root was asked
for (a new key is inserted in place, not the whole list re-sorted), so a root costs one
pass over 32-byte hashes, not a re-encoding or a sort of the whole state. `begin` opens a
journal level that records the first old value of every key written; `rollback` puts them
back and `commit` folds them into the enclosing level (levels nest).

A copy remembers the state it was copied from (a weak reference), that state's write count
then, and the keys written to the copy since: `copy.diff(original)` with the original
unchanged compares only those keys (a block's diff costs what the block wrote, not the
size of the state); any other pair of states is compared in full. Values are decoded with
`decode_known` (they were canonical when they were stored).
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterable
from typing import Any

from node.contracts.errors import ContractError
from node.core.encoding import EncodingError, canonical, decode_canonical, decode_known, sha256

Key = tuple[str, str]
Row = tuple[str, str, bytes]


def _check_name(ns: object, key: object) -> None:
    if not isinstance(ns, str) or not ns:
        raise ContractError(f"state namespace must be a non-empty string, not {ns!r}")
    if not isinstance(key, str):
        raise ContractError(f"state key must be a string, not {type(key).__name__}")


class State:
    """Contract state: namespaced key -> canonical value, with a journal for revert."""

    def __init__(self) -> None:
        self._data: dict[Key, bytes] = {}
        self._row_hash: dict[Key, bytes] = {}
        self._journal: list[dict[Key, bytes | None]] = []
        self._root: bytes | None = None
        self._keys: list[Key] | None = None  # the keys in order, kept once `root` built it
        self._frozen = False
        self._version = 0  # counts writes
        # (the state this is a copy of, its version then, the keys written here since)
        self._origin: tuple[weakref.ref[State], int, set[Key]] | None = None

    def get(self, ns: str, key: str, default: Any = None) -> Any:
        """The value at (ns, key) (a fresh copy), or `default` if absent."""
        data = self._data.get((ns, key))
        return default if data is None else decode_known(data)

    def get_bytes(self, ns: str, key: str) -> bytes | None:
        """The canonical bytes at (ns, key), or None if absent."""
        return self._data.get((ns, key))

    def __contains__(self, item: object) -> bool:
        return item in self._data

    def __len__(self) -> int:
        return len(self._data)

    def set(self, ns: str, key: str, value: Any) -> None:
        """Store `value`; raises ContractError if it cannot be encoded canonically."""
        _check_name(ns, key)
        try:
            data = canonical(value)
        except EncodingError as exc:
            raise ContractError(f"state {ns}/{key}: {exc}") from None
        self._write((ns, key), data)

    def delete(self, ns: str, key: str) -> None:
        """Remove (ns, key) if present."""
        if (ns, key) in self._data:
            self._write((ns, key), None)

    def freeze(self) -> State:
        """Refuse every later write (RuntimeError); `copy` gives a writable copy. For a state
        shared by many holders: a genesis state built once, before a fork server forks."""
        self.root()  # cached now: a holder computing it later would write into shared pages
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        """Whether writes are refused (see `freeze`)."""
        return self._frozen

    def _write(self, k: Key, data: bytes | None) -> None:
        if self._frozen:
            raise RuntimeError("this State is frozen (shared); copy() it to change it")
        old = self._data.get(k)
        if old == data:
            return
        if self._journal and k not in self._journal[-1]:
            self._journal[-1][k] = old
        self._put(k, data)
        self._root = None

    def _put(self, k: Key, data: bytes | None) -> None:
        self._version += 1
        if self._origin is not None:
            self._origin[2].add(k)
        keys = self._keys
        if data is None:
            if self._data.pop(k, None) is not None and keys is not None:
                del keys[bisect.bisect_left(keys, k)]
            self._row_hash.pop(k, None)
        else:
            if keys is not None and k not in self._data:
                bisect.insort(keys, k)
            self._data[k] = data
            self._row_hash[k] = sha256(canonical([k[0], k[1], data]))

    def items(self, ns: str) -> list[tuple[str, Any]]:
        """(key, value) pairs of namespace `ns`, sorted by key."""
        return sorted((key, decode_known(data)) for (n, key), data in self._data.items() if n == ns)

    def root(self) -> bytes:
        """SHA-256 over the row hashes in (ns, key) order; the empty state has a fixed root."""
        if self._root is None:
            hashes = self._row_hash
            if self._keys is None:
                self._keys = sorted(hashes)
            self._root = sha256(b"".join([hashes[k] for k in self._keys]))
        return self._root

    def copy(self) -> State:
        """An independent copy of the contents (without any open journal)."""
        other = State()
        other._data = dict(self._data)
        other._row_hash = dict(self._row_hash)
        other._root = self._root
        other._keys = None if self._keys is None else list(self._keys)
        other._origin = (weakref.ref(self), self._version, set())
        return other

    def begin(self) -> None:
        """Open a journal level: later writes can be undone by `rollback`."""
        if self._frozen:
            raise RuntimeError("this State is frozen (shared); copy() it to change it")
        self._journal.append({})

    def commit(self) -> None:
        """Keep the writes since the matching `begin`."""
        if not self._journal:
            raise RuntimeError("commit without begin")
        level = self._journal.pop()
        if self._journal:
            outer = self._journal[-1]
            for k, old in level.items():
                outer.setdefault(k, old)

    def rollback(self) -> None:
        """Undo every write since the matching `begin`."""
        if not self._journal:
            raise RuntimeError("rollback without begin")
        level = self._journal.pop()
        for k, old in level.items():
            self._put(k, old)
        if level:
            self._root = None

    @property
    def in_transaction(self) -> bool:
        """Whether a journal level is open."""
        return bool(self._journal)

    def diff(self, base: State) -> dict[Key, bytes | None]:
        """What changed from `base` to self: (ns, key) -> new canonical bytes, None if deleted."""
        changes: dict[Key, bytes | None] = {}
        origin = self._origin
        if origin is not None and origin[0]() is base and origin[1] == base._version:
            # a copy of `base`, which has not changed since: only the keys written here
            for k in origin[2]:
                data = self._data.get(k)
                if base._data.get(k) != data:
                    changes[k] = data
            return dict(sorted(changes.items()))
        for k, data in self._data.items():
            if base._data.get(k) != data:
                changes[k] = data
        for k in base._data:
            if k not in self._data:
                changes[k] = None
        return dict(sorted(changes.items()))

    def apply_diff(self, changes: dict[Key, bytes | None]) -> None:
        """Apply a `diff` result (bytes are checked to be canonical)."""
        for (ns, key), data in sorted(changes.items()):
            _check_name(ns, key)
            if data is not None:
                decode_canonical(data)
            self._write((ns, key), data)

    def to_rows(self) -> list[Row]:
        """All entries as (ns, key, canonical value bytes), sorted by (ns, key)."""
        return [(ns, key, data) for (ns, key), data in sorted(self._data.items())]

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> State:
        """A state from `to_rows` output; raises ValueError on bad or duplicate rows."""
        state = cls()
        for row in rows:
            ns, key, data = row
            try:
                _check_name(ns, key)
            except ContractError as exc:
                raise ValueError(str(exc)) from None
            if not isinstance(data, bytes):
                raise ValueError(f"row {ns}/{key}: value must be bytes")
            decode_canonical(data)  # EncodingError (a ValueError) if not canonical
            if (ns, key) in state._data:
                raise ValueError(f"duplicate row {ns}/{key}")
            state._put((ns, key), data)
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"State({len(self._data)} entries, root={self.root().hex()[:16]})"
