"""Gossip wire messages: three frozen dataclasses and their strict, pickle-free encodings.

How it works: a message is a map of plain values (``v`` version, ``k`` kind, ``t`` topic,
then ``ttl`` and ``d`` for an item, ``ids`` and ``ttl`` for IHAVE — and ``ttls``, one per
id, when they differ — ``ids`` for IWANT).
`to_payload`/`from_payload` convert to and from that map, which is what
``node.codec.Codec.encode(CODEC_TYPE, payload)`` signs and frames (the codec authenticates
the sender; this module checks only the shape). `encode`/`decode` are the same map as
canonical msgpack bytes, for a host that frames messages itself.
Decoding never unpickles, checks every field's type, length and range, refuses unknown or
missing keys, and raises `GossipError` whose `reason` is counted by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
CODEC_TYPE = "gossip"
"""The message type tag to frame gossip payloads with in `node.codec`."""
ID_BYTES = 32
MAX_TTL = 255
MAX_IDS = 4096
DEFAULT_MAX_ITEM_BYTES = 64 * 1024 * 1024
TOPIC_RE = re.compile(r"[a-z0-9][a-z0-9_.:/-]{0,63}")

DECODE_REASONS = ("malformed", "bad_version", "bad_topic", "bad_ttl", "bad_ids", "oversize")


class GossipError(ValueError):
    """A gossip message is refused; `reason` (one of DECODE_REASONS) is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in DECODE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Item:
    """One item (a transaction, block, model update…) pushed, relayed or served.

    `ttl` counts the hops this copy may still travel, this one included: the receiver
    relays it with ``ttl - 1`` if that is at least 1. The item's id is SHA-256(`data`),
    computed by every receiver, never carried.
    """

    topic: str
    ttl: int
    data: bytes


@dataclass(frozen=True)
class IHave:
    """The sender holds these items of `topic` (ids are SHA-256 of their bytes) and would
    send them with `ttl` (0: it cannot relay them further), or each with its own ttl in
    `ttls` (one per id; empty: all `ttl`). A receiver that holds an item with a smaller ttl
    raises its own (see `core`); one that lacks it may ask (IWANT)."""

    topic: str
    ids: tuple[bytes, ...]
    ttl: int = 0
    ttls: tuple[int, ...] = ()

    def announced(self) -> dict[bytes, int]:
        """Id -> the ttl announced for it (the largest, where an id is repeated)."""
        out: dict[bytes, int] = {}
        for item_id, ttl in zip(self.ids, self.ttls or (self.ttl,) * len(self.ids), strict=True):
            out[item_id] = max(ttl, out.get(item_id, -1))
        return out


@dataclass(frozen=True)
class IWant:
    """The sender asks for these items of `topic` (answer: one `Item` each)."""

    topic: str
    ids: tuple[bytes, ...]


GossipMessage = Item | IHave | IWant


def check_topic(topic: object) -> str:
    """`topic` if it is a valid topic name, else GossipError("bad_topic")."""
    if not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic):
        raise GossipError("bad_topic", f"topic must match {TOPIC_RE.pattern}")
    return topic


def _ids(value: object, max_ids: int) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= max_ids:
        raise GossipError("bad_ids", f"expected 1..{max_ids} ids")
    if not all(isinstance(i, bytes) and len(i) == ID_BYTES for i in value):
        raise GossipError("bad_ids", f"each id must be {ID_BYTES} bytes")
    return tuple(value)


def to_payload(msg: GossipMessage) -> dict[str, Any]:
    """The message as a map of plain values (what `node.codec` frames and signs)."""
    if isinstance(msg, Item):
        return {"v": VERSION, "k": "item", "t": msg.topic, "ttl": msg.ttl, "d": msg.data}
    if isinstance(msg, IHave):
        out = {"v": VERSION, "k": "ihave", "t": msg.topic, "ids": list(msg.ids), "ttl": msg.ttl}
        if msg.ttls:
            out["ttls"] = list(msg.ttls)
        return out
    return {"v": VERSION, "k": "iwant", "t": msg.topic, "ids": list(msg.ids)}


_KEYS = {
    "item": frozenset({"v", "k", "t", "ttl", "d"}),
    "ihave": frozenset({"v", "k", "t", "ids", "ttl"}),
    "iwant": frozenset({"v", "k", "t", "ids"}),
}


def from_payload(
    payload: Mapping[str, Any],
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
    max_ids: int = MAX_IDS,
) -> GossipMessage:
    """Inverse of `to_payload`; raises GossipError naming what is wrong."""
    if not isinstance(payload, Mapping):
        raise GossipError("malformed", "payload is not a map")
    version = payload.get("v")
    if type(version) is not int or version != VERSION:
        raise GossipError("bad_version", f"version {version!r}, expected {VERSION}")
    kind = payload.get("k")
    keys = _KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise GossipError("malformed", f"kind must be one of {sorted(_KEYS)}")
    if set(payload) != keys and not (kind == "ihave" and set(payload) == keys | {"ttls"}):
        raise GossipError("malformed", f"{kind} needs exactly the keys {sorted(keys)}")
    topic = check_topic(payload["t"])
    if kind == "item":
        ttl, data = payload["ttl"], payload["d"]
        if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
            raise GossipError("bad_ttl", f"ttl must be an integer in 1..{MAX_TTL}")
        if not isinstance(data, bytes):
            raise GossipError("malformed", "item data must be bytes")
        if len(data) > max_item_bytes:
            raise GossipError("oversize", f"item of {len(data)} bytes > {max_item_bytes}")
        return Item(topic, ttl, data)
    ids = _ids(payload["ids"], max_ids)
    if kind == "iwant":
        return IWant(topic, ids)
    ttl = payload["ttl"]
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL:
        raise GossipError("bad_ttl", f"ttl must be an integer in 0..{MAX_TTL}")
    if "ttls" not in payload:
        return IHave(topic, ids, ttl)
    ttls = payload["ttls"]
    if not isinstance(ttls, list | tuple) or len(ttls) != len(ids):
        raise GossipError("bad_ttl", "ttls must be a list of one ttl per id")
    if not all(type(t) is int and 0 <= t <= MAX_TTL for t in ttls):
        raise GossipError("bad_ttl", f"each of ttls must be an integer in 0..{MAX_TTL}")
    return IHave(topic, ids, ttl, tuple(ttls))


def encode(msg: GossipMessage) -> bytes:
    """The message as canonical msgpack bytes (map keys sorted)."""
    payload = to_payload(msg)
    data: bytes = msgpack.packb({k: payload[k] for k in sorted(payload)}, use_bin_type=True)
    return data


def decode(
    data: bytes,
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
    max_ids: int = MAX_IDS,
) -> GossipMessage:
    """Inverse of `encode`: bounded msgpack parsing, then `from_payload`'s checks."""
    if len(data) > max_item_bytes + ID_BYTES * max_ids + 1024:
        raise GossipError("oversize", f"message of {len(data)} bytes")
    try:
        payload = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=len(data),
            max_str_len=256,
            max_array_len=max_ids + 1,
            max_map_len=8,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types on garbage
        raise GossipError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        raise GossipError("malformed", "payload is not a map")
    return from_payload(payload, max_item_bytes, max_ids)
