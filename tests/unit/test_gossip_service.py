"""GossipService: the gossip core bound to a node's signed codec, timers, drops and metrics.

Each test node is a small host with a real `Codec` (Ed25519) and a real `MetricsWriter`; its
frames are decoded by the receiver's codec before the service sees them, as in the daemon.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec, Message
from node.gossip import (
    ACCEPT,
    CODEC_TYPE,
    Deliver,
    GossipConfig,
    GossipService,
    IHave,
    Item,
    Verdict,
    reject,
    to_payload,
)
from node.gossip.messages import ID_BYTES
from node.gossip.service import FRAME_OVERHEAD, fit_config
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter

T = "lmuc/mec-0/tx"
IDS = ("a", "b", "c", "d")
KEYS = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(IDS)}
ROSTER = Roster({n: k.public_key for n, k in KEYS.items()})


def valid(data: bytes) -> Verdict:
    return ACCEPT if data.startswith(b"ok") else reject("bad_signature")


@dataclass
class Cfg:
    max_message_bytes: int = 1 << 20


@dataclass
class Host:
    """A `GossipHost` with a real codec: what it multicasts lands in `out` as frames."""

    node_id: str
    metrics: MetricsWriter
    config: Cfg = field(default_factory=Cfg)
    clock: float = 0.0
    out: list[tuple[str, bytes]] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    drops: Counter[str] = field(default_factory=Counter)
    codec: Codec = field(init=False)

    def __post_init__(self) -> None:
        self.codec = Codec(self.node_id, KEYS[self.node_id], ROSTER, self.config.max_message_bytes)

    def now(self) -> float:
        return self.clock

    def multicast(self, dsts: Iterable[str], msg_type: str, payload: Mapping[str, Any]) -> None:
        frame = self.codec.encode(msg_type, payload)
        self.out += [(d, frame) for d in dsts]

    def set_timer(self, name: str, delay_s: float) -> None:
        self.timers[name] = self.clock + delay_s

    def drop(self, reason: str, detail: str = "") -> None:
        self.drops[reason] += 1

    def take(self) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        return out


@dataclass
class Node:
    host: Host
    service: GossipService
    delivered: list[Deliver] = field(default_factory=list)


def make(tmp_path: Path, nid: str, peers: tuple[str, ...], **cfg: Any) -> Node:
    host = Host(nid, MetricsWriter(tmp_path / f"{nid}.jsonl", {"node": nid}))
    service = GossipService(host, peers, GossipConfig(**cfg), heartbeat_s=0.5)
    node = Node(host, service)
    service.subscribe(T, valid, node.delivered.append)
    service.start()
    return node


def line(tmp_path: Path, **cfg: Any) -> dict[str, Node]:
    """a - b - c - d"""
    return {
        n: make(tmp_path, n, tuple(IDS[j] for j in (i - 1, i + 1) if 0 <= j < len(IDS)), **cfg)
        for i, n in enumerate(IDS)
    }


def run(nodes: dict[str, Node], rounds: int = 10) -> None:
    """Carry frames until none are left: each through the receiver's codec, then its service."""
    for _ in range(rounds):
        moved = False
        for nid in IDS:
            for dst, frame in nodes[nid].host.take():
                moved = True
                dst_node = nodes[dst]
                msg = dst_node.host.codec.decode(frame)
                assert dst_node.service.on_message(dst_node.host, msg)
        if not moved:
            return


def msg_from(sender: str, payload: dict[str, Any], receiver: str = "b") -> Message:
    frame = Codec(sender, KEYS[sender], ROSTER).encode(CODEC_TYPE, payload)
    return Codec(receiver, KEYS[receiver], ROSTER).decode(frame)


def test_a_published_item_reaches_every_node_of_a_line_once(tmp_path: Path) -> None:
    nodes = line(tmp_path)

    item_id = nodes["a"].service.publish(T, b"ok block 1")
    run(nodes)

    assert nodes["a"].delivered == []  # a publisher is not delivered its own item
    for nid in "bcd":
        assert [d.data for d in nodes[nid].delivered] == [b"ok block 1"]
        assert nodes[nid].service.has(T, item_id)
    assert nodes["b"].delivered[0].sender == "a" and nodes["c"].delivered[0].sender == "b"
    assert nodes["a"].service.stats.published == 1
    assert [nodes[n].service.stats.relayed for n in IDS] == [0, 1, 1, 0]
    assert nodes["a"].service.record()["gossip_sent_msgs"] == 1


def test_gossip_frames_from_one_multicast_are_encoded_once(tmp_path: Path) -> None:
    hub = make(tmp_path, "a", ("b", "c", "d"))

    hub.service.publish(T, b"ok x")

    frames = hub.host.take()
    assert sorted(d for d, _ in frames) == ["b", "c", "d"]
    assert len({f for _, f in frames}) == 1
    assert hub.service.service_stats.sent_msgs == 3


def test_other_messages_and_timers_are_left_to_the_role(tmp_path: Path) -> None:
    node = make(tmp_path, "b", ("a", "c"))

    assert not node.service.on_message(node.host, Message("tx", "a", 0, {"x": 1}))
    assert not node.service.on_timer(node.host, "round")
    assert node.host.timers == {"gossip.tick": 0.5}


def test_the_heartbeat_announces_and_rearms_until_stopped(tmp_path: Path) -> None:
    node = make(tmp_path, "b", ("a", "c"))
    node.service.publish(T, b"ok y")
    node.host.take()
    node.host.clock = 0.5

    assert node.service.on_timer(node.host, "gossip.tick")

    frames = node.host.take()
    sent = [node.host.codec.decode(f) for _, f in frames]
    assert sorted((m.payload["k"], d) for (d, _), m in zip(frames, sent, strict=True)) == [
        ("ihave", "a"),
        ("ihave", "c"),
    ]
    assert node.host.timers["gossip.tick"] == 1.0
    node.service.stop()
    del node.host.timers["gossip.tick"]
    assert node.service.on_timer(node.host, "gossip.tick")
    assert "gossip.tick" not in node.host.timers


def test_a_corrupted_item_is_dropped_counted_and_not_relayed(tmp_path: Path) -> None:
    nodes = line(tmp_path)
    bad = msg_from("a", to_payload(Item(T, 5, b"XX corrupted")))

    assert nodes["b"].service.on_message(nodes["b"].host, bad)

    assert nodes["b"].delivered == [] and nodes["b"].host.take() == []
    record = nodes["b"].service.record()
    assert record["gossip_invalid"] == {"bad_signature": 1}
    assert record["gossip_invalid_from"] == {"a": 1}
    nodes["a"].service.publish(T, b"ok after")  # the node goes on
    run(nodes)
    assert [d.data for d in nodes["d"].delivered] == [b"ok after"]


@pytest.mark.parametrize(
    ("sender", "payload", "reason"),
    [
        ("a", {"v": 1, "k": "item", "t": T, "ttl": 3}, "malformed"),
        ("a", {"v": 2, "k": "item", "t": T, "ttl": 3, "d": b"ok"}, "bad_version"),
        ("a", {"v": 1, "k": "item", "t": "Bad Topic", "ttl": 3, "d": b"ok"}, "bad_topic"),
        ("a", {"v": 1, "k": "item", "t": T, "ttl": 0, "d": b"ok"}, "bad_ttl"),
        ("a", {"v": 1, "k": "ihave", "t": T, "ids": [b"short"], "ttl": 1}, "bad_ids"),
        ("a", to_payload(Item("other-topic", 3, b"ok")), "unknown_topic"),
        ("d", to_payload(Item(T, 3, b"ok from afar")), "not_peer"),
    ],
)
def test_bad_gossip_messages_are_dropped_with_a_counted_reason(
    tmp_path: Path, sender: str, payload: dict[str, Any], reason: str
) -> None:
    node = make(tmp_path, "b", ("a", "c"))

    assert node.service.on_message(node.host, msg_from(sender, payload))

    assert node.delivered == [] and node.host.take() == []
    assert node.service.stats.dropped == Counter({reason: 1})
    assert node.host.drops == Counter({f"gossip_{reason}": 1})


def test_items_are_capped_so_that_every_frame_fits_the_codec_limit(tmp_path: Path) -> None:
    limit = 64 * 1024
    host = Host("a", MetricsWriter(tmp_path / "a.jsonl", {}), Cfg(limit))
    service = GossipService(host, ("b",), GossipConfig(ttl=255))
    service.subscribe("t" * 64, valid, None)
    cap = service.core.config.max_item_bytes
    assert cap == limit - FRAME_OVERHEAD

    service.publish("t" * 64, b"ok" + bytes(cap - 2))  # the codec refuses nothing
    with pytest.raises(ValueError, match="max_item_bytes"):
        service.publish("t" * 64, b"ok" + bytes(cap - 1))
    ids = tuple(
        bytes([i % 256, i // 256]) * (ID_BYTES // 2) for i in range(service.core.config.max_ids)
    )
    host.multicast(["b"], CODEC_TYPE, to_payload(IHave("t" * 64, ids, 255)))

    assert host.drops == Counter()
    assert len(host.take()) == 2
    with pytest.raises(ValueError, match="too small for gossip"):
        fit_config(GossipConfig(), FRAME_OVERHEAD)


def test_finish_writes_one_gossip_record_with_the_counters(tmp_path: Path) -> None:
    nodes = line(tmp_path)
    nodes["a"].service.publish(T, b"ok 1")
    nodes["d"].service.publish(T, b"ok 2")
    run(nodes)

    nodes["b"].service.finish(nodes["b"].host)
    nodes["b"].host.metrics.close()

    (record,) = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert record["event"] == "gossip" and record["node"] == "b"
    assert record["gossip_published"] == 0
    assert record["gossip_received"] == record["gossip_delivered"] == 2
    assert record["gossip_relayed"] == 2
    assert record["gossip_invalid"] == {} and record["gossip_dropped"] == {}
    assert record["gossip_sent_msgs"] == nodes["b"].service.service_stats.sent_msgs == 2


def test_a_message_the_daemon_already_decoded_is_taken_as_it_is(tmp_path: Path) -> None:
    node = make(tmp_path, "b", ("a", "c"), max_item_bytes=100)

    assert node.service.on_message(node.host, Message(CODEC_TYPE, "a", 0, Item(T, 3, b"ok 1")))  # type: ignore[arg-type]
    big = Item(T, 3, b"ok" + bytes(200))
    assert node.service.on_message(node.host, Message(CODEC_TYPE, "a", 1, big))  # type: ignore[arg-type]

    assert [d.data for d in node.delivered] == [b"ok 1"]
    assert node.service.stats.dropped == Counter({"oversize": 1})
