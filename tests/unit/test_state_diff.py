"""`State.diff` gives exactly what changed, however the two states came to be (a guard for a
diff that looks only at the keys written since `copy`)."""

from __future__ import annotations

import random

from node.contracts.state import Key, State


def brute_diff(new: State, base: State) -> dict[Key, bytes | None]:
    rows_new = {(ns, k): v for ns, k, v in new.to_rows()}
    rows_base = {(ns, k): v for ns, k, v in base.to_rows()}
    out: dict[Key, bytes | None] = {}
    for k in sorted(set(rows_new) | set(rows_base)):
        if rows_new.get(k) != rows_base.get(k):
            out[k] = rows_new.get(k)
    return out


def _random_writes(state: State, rng: random.Random, n: int) -> None:
    for _ in range(n):
        key = f"k{rng.randrange(12)}"
        if rng.random() < 0.2:
            state.delete("ns", key)
        else:
            state.set("ns", key, {"v": rng.randrange(3)})


def test_diff_of_a_copy_matches_a_full_comparison() -> None:
    rng = random.Random(5)
    for _ in range(200):
        base = State()
        _random_writes(base, rng, 10)
        new = base.copy()
        new.begin()
        _random_writes(new, rng, rng.randrange(6))
        if rng.random() < 0.5:
            new.rollback()
        else:
            new.commit()
        _random_writes(new, rng, rng.randrange(4))
        assert new.diff(base) == brute_diff(new, base)
        assert list(new.diff(base)) == sorted(new.diff(base))
        if rng.random() < 0.5:  # the base changes after the copy
            _random_writes(base, rng, 1 + rng.randrange(3))
        assert new.diff(base) == brute_diff(new, base)
        other = State.from_rows(base.to_rows())  # equal contents, another object
        assert new.diff(other) == brute_diff(new, other)
        assert base.diff(new) == brute_diff(base, new)
        copy2 = new.copy()
        _random_writes(copy2, rng, 2)
        assert copy2.diff(base) == brute_diff(copy2, base)
        assert copy2.diff(new) == brute_diff(copy2, new)


def test_diff_of_a_frozen_bases_copy() -> None:
    base = State()
    base.set("a", "x", 1)
    base.freeze()
    new = base.copy()
    new.set("a", "x", 2)
    new.set("a", "y", 3)
    assert new.diff(base) == brute_diff(new, base)
