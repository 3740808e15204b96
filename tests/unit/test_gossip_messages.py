"""Gossip wire messages: round trips, framing through the signed codec, refusal reasons."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import pytest

from node.codec import Codec
from node.gossip import (
    CODEC_TYPE,
    GossipError,
    GossipMessage,
    IHave,
    Item,
    IWant,
    decode,
    encode,
    from_payload,
    to_payload,
)
from node.keys import NodeKey, Roster

ID = bytes(range(32))
MESSAGES: list[GossipMessage] = [
    Item("lmuc/mec-0/tx", 7, b"\x00signed tx\xff"),
    IHave("gmuc.task-1", (ID, bytes(32)), 3),
    IHave("gmuc.task-1", (ID,), 0),
    IHave("gmuc.task-1", (ID, bytes(32)), 5, (5, 2)),
    IWant("lmuc/mec-0/block", (ID,)),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_encode_decode_round_trip(msg: GossipMessage) -> None:
    assert decode(encode(msg)) == msg
    assert from_payload(to_payload(msg)) == msg
    assert encode(msg) == encode(type(msg)(**vars(msg)))  # one encoding per message


@pytest.mark.parametrize("msg", MESSAGES)
def test_payload_travels_in_a_signed_codec_frame(msg: GossipMessage) -> None:
    keys = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(["d1", "d2"])}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    frame = Codec("d1", keys["d1"], roster).encode(CODEC_TYPE, to_payload(msg))

    got = Codec("d2", keys["d2"], roster).decode(frame)

    assert got.type == CODEC_TYPE and got.sender == "d1"
    assert from_payload(got.payload) == msg


def _reason(data: bytes, **limits: int) -> str:
    with pytest.raises(GossipError) as err:
        decode(data, **limits)
    return err.value.reason


def _packed(payload: Any) -> bytes:
    data: bytes = msgpack.packb(payload, use_bin_type=True)
    return data


GOOD_ITEM = {"v": 1, "k": "item", "t": "lmuc", "ttl": 3, "d": b"x"}
GOOD_IHAVE = {"v": 1, "k": "ihave", "t": "lmuc", "ids": [ID], "ttl": 1}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, "item"], "malformed"),
        ({**GOOD_ITEM, "v": 2}, "bad_version"),
        ({**GOOD_ITEM, "v": True}, "bad_version"),
        ({**GOOD_ITEM, "k": "graft"}, "malformed"),
        ({**GOOD_ITEM, "extra": 1}, "malformed"),
        ({k: v for k, v in GOOD_ITEM.items() if k != "d"}, "malformed"),
        ({**GOOD_ITEM, "t": "LMUC"}, "bad_topic"),
        ({**GOOD_ITEM, "t": ""}, "bad_topic"),
        ({**GOOD_ITEM, "t": "a" * 65}, "bad_topic"),
        ({**GOOD_ITEM, "t": 5}, "bad_topic"),
        ({**GOOD_ITEM, "ttl": 0}, "bad_ttl"),
        ({**GOOD_ITEM, "ttl": 256}, "bad_ttl"),
        ({**GOOD_ITEM, "ttl": True}, "bad_ttl"),
        ({**GOOD_ITEM, "ttl": 2.0}, "bad_ttl"),
        ({**GOOD_ITEM, "d": "text"}, "malformed"),
        ({**GOOD_IHAVE, "ttl": -1}, "bad_ttl"),
        ({**GOOD_IHAVE, "ids": []}, "bad_ids"),
        ({**GOOD_IHAVE, "ids": [ID[:31]]}, "bad_ids"),
        ({**GOOD_IHAVE, "ids": ID}, "bad_ids"),
        ({"v": 1, "k": "iwant", "t": "lmuc", "ids": [ID], "ttl": 1}, "malformed"),
        ({**GOOD_IHAVE, "ttls": []}, "bad_ttl"),
        ({**GOOD_IHAVE, "ttls": [1, 2]}, "bad_ttl"),
        ({**GOOD_IHAVE, "ttls": [256]}, "bad_ttl"),
        ({**GOOD_IHAVE, "ttls": [True]}, "bad_ttl"),
        ({**GOOD_IHAVE, "ttls": 1}, "bad_ttl"),
        ({"v": 1, "k": "iwant", "t": "lmuc", "ids": [ID], "ttls": [1]}, "malformed"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(payload: Any, reason: str) -> None:
    assert _reason(_packed(payload)) == reason


def test_garbage_and_pickles_are_refused_without_unpickling() -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pytest.fail, ("unpickled!",))

    assert _reason(pickle.dumps(Boom())) == "malformed"
    assert _reason(b"\xc1") == "malformed"
    assert _reason(b"") == "malformed"
    assert _reason(_packed(GOOD_ITEM)[:-1]) == "malformed"


def test_size_limits() -> None:
    big = encode(Item("lmuc", 1, bytes(1000)))
    assert _reason(big, max_item_bytes=999) == "oversize"
    assert decode(big, max_item_bytes=1000) == Item("lmuc", 1, bytes(1000))
    many = encode(IWant("lmuc", tuple(bytes([i]) * 32 for i in range(9))))
    assert _reason(many, max_ids=8) == "bad_ids"
    assert len(decode(many, max_ids=9).ids) == 9  # type: ignore[union-attr]


def test_an_ihave_announces_each_id_with_its_own_ttl_or_the_common_one() -> None:
    other = bytes(32)
    assert IHave("t", (ID, other), 4).announced() == {ID: 4, other: 4}
    assert IHave("t", (ID, other), 4, (4, 1)).announced() == {ID: 4, other: 1}
    assert IHave("t", (ID, ID), 4, (1, 3)).announced() == {ID: 3}  # a repeat: its largest
