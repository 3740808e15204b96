"""A MEC's partial with updates forwarded one by one, split into messages of a byte budget
and joined back: the join is the partial, each part fits the budget (or holds one update),
and parts that do not make up one partial are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.codec import Codec
from node.keys import NodeKey, Roster
from node.messages import from_payload, to_payload
from node.schemes.vanilla.messages import (
    IndividualUpdate,
    Partial,
    join_parts,
    split_partial,
)

UPDATE_FLOATS = 5_000  # 20 KB of float32 per update


def partial_of(devices: int) -> Partial:
    rng = np.random.default_rng(devices)
    updates = tuple(
        IndividualUpdate(
            f"dev0-{i}", {"w": rng.standard_normal(UPDATE_FLOATS).astype(np.float32)}, 10 + i
        )
        for i in range(devices)
    )
    return Partial(
        round=3,
        samples=sum(u.samples for u in updates),
        contributors=tuple(u.node for u in updates),
        missing=("dev0-99",),
        txs=tuple(bytes([i]) * 300 for i in range(devices)),
        updates=updates,
    )


def same(a: Partial, b: Partial) -> bool:
    plain = [
        (a.round, a.samples, a.contributors, a.missing, a.txs, a.part, a.parts),
        (b.round, b.samples, b.contributors, b.missing, b.txs, b.part, b.parts),
    ]

    def updates(p: Partial) -> list[tuple[str, int, bytes]]:
        return [(u.node, u.samples, u.weights["w"].tobytes()) for u in p.updates or ()]

    return plain[0] == plain[1] and updates(a) == updates(b)


@given(devices=st.integers(1, 12), budget=st.integers(1_000, 200_000))
def test_split_then_join_is_the_partial(devices: int, budget: int) -> None:
    partial = partial_of(devices)
    parts = split_partial(partial, budget)
    assert [p.part for p in parts] == list(range(len(parts)))
    assert all(p.parts == len(parts) for p in parts)
    for p in parts:
        size = sum(u.weights["w"].nbytes + 1024 for u in p.updates or ())
        assert len(p.updates or ()) == 1 or size + sum(len(t) for t in p.txs) <= budget
    joined = join_parts(parts) if len(parts) > 1 else parts[0]
    assert same(joined, partial)


def test_a_partial_that_fits_is_sent_whole() -> None:
    partial = partial_of(3)
    assert split_partial(partial, 10**9) == [partial]
    averaged = Partial(1, 5, ("dev0-0",), (), (b"t",), weights={"w": np.zeros(3)})
    assert split_partial(averaged, 10) == [averaged]


def test_each_part_is_a_message_the_codec_takes_under_its_limit() -> None:
    limit = 64 * 1024
    key = NodeKey.generate()
    codec = Codec("mec0", key, Roster({"mec0": key.public_key}), limit)
    parts = split_partial(partial_of(8), limit // 2)
    assert len(parts) == 8
    for p in parts:
        assert len(codec.encode("partial", to_payload(p))) <= limit
        assert same(from_payload("partial", to_payload(p)), p)  # the fields check out
    with pytest.raises(ValueError):  # whole, it would not have been
        codec.encode("partial", to_payload(partial_of(8)))


@pytest.mark.parametrize(
    "damage",
    [
        lambda ps: ps[:-1],  # one missing
        lambda ps: [ps[0], ps[0], *ps[2:]],  # one twice
        lambda ps: [ps[1], ps[0], *ps[2:]],  # out of order
        lambda ps: [ps[0], replace(ps[1], round=4), *ps[2:]],  # another round's
        lambda ps: [ps[0], replace(ps[1], samples=5), *ps[2:]],  # more than updates
        lambda ps: [ps[0], replace(ps[1], txs=(b"x",)), *ps[2:]],
        lambda ps: [ps[0], replace(ps[1], parts=9), *ps[2:]],  # of another split
    ],
)
def test_parts_that_do_not_make_up_one_partial_are_refused(damage: object) -> None:
    parts = split_partial(partial_of(4), 25_000)
    assert len(parts) == 4
    with pytest.raises(ValueError):
        join_parts(damage(parts))  # type: ignore[operator]
