"""State.root with its kept key order: after any mix of writes, deletes, rollbacks and copies
it equals the root computed from scratch (a fresh State from the same rows)."""

from __future__ import annotations

import random

import pytest

from node.contracts.state import State


def _fresh_root(state: State) -> bytes:
    return State.from_rows(state.to_rows()).root()


@pytest.mark.parametrize("seed", range(5))
def test_root_follows_every_change(seed: int) -> None:
    rng = random.Random(seed)
    states = [State()]
    for step in range(400):
        state = rng.choice(states)
        if state.frozen:
            continue
        op = rng.random()
        ns, key = rng.choice("abc"), str(rng.randrange(40))
        if op < 0.5:
            state.set(ns, key, rng.randrange(5))
        elif op < 0.65:
            state.delete(ns, key)
        elif op < 0.75:
            state.begin()
            state.set(ns, key + "x", step)
            state.delete(rng.choice("abc"), str(rng.randrange(40)))
            if rng.random() < 0.5:
                state.rollback()
            else:
                state.commit()
        elif op < 0.85:
            states.append(state.copy())
        elif op < 0.9 and len(states) < 6:
            states.append(state.copy().freeze())
        if rng.random() < 0.5:
            assert state.root() == _fresh_root(state), step
    for state in states:
        assert state.root() == _fresh_root(state)
