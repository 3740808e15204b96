"""GossipService in real node daemons: 30 `Daemon`s (each in its own thread, its own Ed25519
key and codec, its real event loop and timers) over the in-memory transport, on a ring with
seeded chords, three of them Byzantine relays.

Each honest node publishes one signed block; a test role spreads blocks with `GossipService`
and checks each with its topic hook (Ed25519 over the block's body). The Byzantine relays
run the same service behind a host that rewrites what it sends: the *dropper* never sends an
item (it still announces and asks), the *corrupter* flips a byte of every item it sends (and
at start sends a malformed gossip message to its neighbours and an item to a node that is not
its neighbour), the *replayer* resends every block it receives, three times, with the largest
ttl. Every honest role also counts, before its service sees them, the items that reach it
that do not verify and those it already holds, so the service's counters are checked against
an independent count. The run ends when every honest node holds every block and every attack
was seen (waited for, with a deadline; no sleeps); the outcome is the same for every
interleaving of the threads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec, Message
from node.config import NodePlan
from node.daemon import Daemon
from node.gossip import (
    ACCEPT,
    CODEC_TYPE,
    Deliver,
    GossipConfig,
    GossipService,
    Item,
    Verdict,
    reject,
    to_payload,
)
from node.gossip.messages import MAX_TTL
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.transport import InMemoryNetwork
from orchestrator.collect import collect
from tests.unit.node_configs import learning_config, node_config
from topologies import HierarchyParams, TopologySpec, build_hierarchy

SEED = 13
N = 30
TOPIC = "d2d/blocks"
HEARTBEAT_S = 0.05
POLL_S = 0.05
REPLAY_S = 0.1
REPLAYS = 3
DEADLINE_S = 180.0
CONFIG = GossipConfig(ttl=16, fanout=2, want_timeout_s=0.5, seed=b"13")
LEARNING = learning_config(
    dataset="digits",
    model="mlp",
    partition="iid",
    rounds=1,
    local_epochs=1,
    batch_size=16,
    learning_rate=0.1,
    round_deadline_s=10,
)

Graph = dict[str, list[str]]


def ring_with_chords(ids: list[str], rng: random.Random) -> Graph:
    """A ring, plus a chord from every third node to one 4-10 places further on."""
    edges = {frozenset((ids[i], ids[(i + 1) % len(ids)])) for i in range(len(ids))}
    for i in range(0, len(ids), 3):
        edges.add(frozenset((ids[i], ids[(i + rng.randint(4, 10)) % len(ids)])))
    graph: Graph = {i: [] for i in ids}
    for a, b in sorted(tuple(sorted(e)) for e in edges):
        graph[a].append(b)
        graph[b].append(a)
    return graph


def connected(graph: Graph, nodes: set[str]) -> bool:
    """Whether `nodes` are connected by paths inside `nodes`."""
    start = min(nodes)
    seen, todo = {start}, deque([start])
    while todo:
        for peer in graph[todo.popleft()]:
            if peer in nodes and peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen == nodes


@dataclass
class Blocks:
    """Signed blocks: 64-byte Ed25519 signature || ``src:n:`` || random body."""

    keys: dict[str, NodeKey]
    roster: Roster

    def make(self, src: str, n: int, rng: random.Random) -> bytes:
        body = f"{src}:{n}:".encode() + rng.randbytes(1500)
        return self.keys[src].sign(body) + body

    def validate(self, data: bytes) -> Verdict:
        sig, body = data[:64], data[64:]
        src = body.split(b":", 1)[0].decode("ascii", "replace")
        if len(sig) < 64 or src not in self.roster:
            return reject("malformed")
        return ACCEPT if self.roster.verify(src, body, sig) else reject("bad_signature")


@dataclass
class Report:
    """What a node tells the tracker at each poll (from its own thread)."""

    delivered: int = 0
    invalid: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    dups_from: Counter[str] = field(default_factory=Counter)


class Tracker:
    """Shared by the test's roles: the run is done when every honest node holds every block
    and each attack was seen by the honest nodes it aims at."""

    def __init__(self, expected: Mapping[str, int], needs: Mapping[str, Report]) -> None:
        self._lock = threading.Lock()
        self._expected = dict(expected)  # honest node -> blocks it must be delivered
        self._needs = dict(needs)  # node -> minimum counts it must report
        self._reports: dict[str, Report] = {}
        self.done = threading.Event()
        self.started = time.monotonic()

    def report(self, node: str, report: Report) -> None:
        with self._lock:
            self._reports[node] = report
            if not self.done.is_set() and self._all_seen():
                self.done.set()

    def _all_seen(self) -> bool:
        for node, want in self._expected.items():
            got = self._reports.get(node)
            if got is None or got.delivered < want:
                return False
        for node, need in self._needs.items():
            got = self._reports.get(node, Report())
            if got.invalid < need.invalid or any(
                got.dropped[k] < v for k, v in need.dropped.items()
            ):
                return False
            if any(got.dups_from[k] < v for k, v in need.dups_from.items()):
                return False
        return True

    def expired(self) -> bool:
        return time.monotonic() - self.started > DEADLINE_S

    def missing(self) -> dict[str, Any]:
        with self._lock:
            return {n: vars(r) for n, r in self._reports.items()}


class ByzantineHost:
    """The node as a Byzantine relay's service sees it: rewrites the items it sends."""

    def __init__(self, ctx: NodeContext, behaviour: str) -> None:
        self._ctx = ctx
        self.behaviour = behaviour
        self.node_id = ctx.node_id
        self.config = ctx.config
        self.metrics = ctx.metrics

    def now(self) -> float:
        return self._ctx.now()

    def set_timer(self, name: str, delay_s: float) -> None:
        self._ctx.set_timer(name, delay_s)

    def drop(self, reason: str, detail: str = "") -> None:
        self._ctx.drop(reason, detail)

    def multicast(self, dsts: Iterable[str], msg_type: str, payload: Mapping[str, Any]) -> None:
        if msg_type == CODEC_TYPE and payload.get("k") == "item":
            if self.behaviour == "drop":
                return
            if self.behaviour == "corrupt":
                data = payload["d"]
                payload = {**payload, "d": data[:-1] + bytes([data[-1] ^ 0x55])}
        self._ctx.multicast(dsts, msg_type, payload)


class GossipRole(Role):
    """Spreads blocks with a GossipService; honest roles count what reaches them."""

    kind = "device"

    def __init__(
        self,
        neighbours: list[str],
        own: list[bytes],
        behaviour: str,
        blocks: Blocks,
        tracker: Tracker,
        stray_to: str = "",
    ) -> None:
        self.neighbours = neighbours
        self.own = own
        self.behaviour = behaviour
        self.blocks = blocks
        self.tracker = tracker
        self.stray_to = stray_to
        self.delivered: list[bytes] = []
        self.replays: dict[bytes, int] = {}
        self.seen = Report()
        self.items_from: Counter[str] = Counter()
        self.service: GossipService
        self.host: Any

    def start(self, ctx: NodeContext) -> None:
        self.host = ctx if self.behaviour == "honest" else ByzantineHost(ctx, self.behaviour)
        self.service = GossipService(self.host, self.neighbours, CONFIG, HEARTBEAT_S)
        self.service.subscribe(TOPIC, self.blocks.validate, self.on_deliver)
        self.service.start()
        for block in self.own:
            self.service.publish(TOPIC, block)
        if self.behaviour == "corrupt":
            ctx.multicast(self.neighbours, CODEC_TYPE, {"v": 1, "k": "item", "t": TOPIC})
            ctx.send(self.stray_to, CODEC_TYPE, to_payload(Item(TOPIC, 3, b"not a neighbour")))
        if self.behaviour == "replay":
            ctx.set_timer("byz.replay", REPLAY_S)
        ctx.set_timer("test.poll", POLL_S)

    def on_deliver(self, item: Deliver) -> None:
        self.delivered.append(item.data)
        self.replays[item.data] = 0

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        data = msg.payload.get("d")
        if (
            msg.type == CODEC_TYPE
            and msg.payload.get("k") == "item"
            and isinstance(data, bytes)
            and msg.sender in self.neighbours
        ):
            self.items_from[msg.sender] += 1
            if not self.blocks.validate(data).ok:
                self.seen.invalid += 1
            elif self.service.has(TOPIC, hashlib.sha256(data).digest()):
                self.seen.dups_from[msg.sender] += 1
        if not self.service.on_message(self.host, msg):
            ctx.drop("unknown_type", msg.type)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        if self.service.on_timer(self.host, name):
            return
        if name == "byz.replay":
            for data, times in self.replays.items():
                if times < REPLAYS:
                    self.replays[data] = times + 1
                    item = Item(TOPIC, MAX_TTL, data)
                    ctx.multicast(self.neighbours, CODEC_TYPE, to_payload(item))
            ctx.set_timer("byz.replay", REPLAY_S)
        elif name == "test.poll":
            stats = self.service.stats
            report = Report(len(self.delivered), sum(stats.invalid.values()), +stats.dropped)
            report.dups_from = +self.seen.dups_from
            self.tracker.report(ctx.node_id, report)
            if self.tracker.done.is_set() or self.tracker.expired():
                ctx.stop()
            else:
                ctx.set_timer("test.poll", POLL_S)

    def finish(self, ctx: NodeContext) -> None:
        self.service.finish(ctx)


@dataclass
class Run:
    dir: Path
    topology: TopologySpec
    graph: Graph
    byzantine: dict[str, str]
    stray_to: str
    blocks: dict[str, list[bytes]]
    roles: dict[str, GossipRole]
    daemons: dict[str, Daemon]
    tracker: Tracker

    @property
    def honest(self) -> list[str]:
        return [n for n in self.graph if n not in self.byzantine]

    def neighbours_of(self, behaviour: str) -> list[str]:
        (byz,) = [n for n, b in self.byzantine.items() if b == behaviour]
        return [n for n in self.graph[byz] if n not in self.byzantine]


def run_network(tmp_path: Path) -> Run:
    rng = random.Random(SEED)
    topology = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=1, devices_per_mec=N), SEED)
    ids = [n.id for n in topology.daemons() if n.id.startswith("dev")]
    graph = ring_with_chords(ids, rng)
    while True:
        chosen = rng.sample(ids, 3)
        if connected(graph, set(ids) - set(chosen)) and not set(chosen) & {
            p for c in chosen for p in graph[c]
        }:
            break
    byzantine = dict(zip(chosen, ("drop", "corrupt", "replay"), strict=True))
    corrupter = chosen[1]
    stray_to = min(n for n in ids if n not in graph[corrupter] and n not in byzantine)
    keys = {n: NodeKey.from_seed(hashlib.sha256(f"{SEED}:{n}".encode()).digest()) for n in ids}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    blocks = Blocks(keys, roster)
    honest = [n for n in ids if n not in byzantine]
    publishers = sorted(rng.sample(honest, 10))
    own = {n: [blocks.make(n, 0, rng)] if n in publishers else [] for n in ids}
    expected = {n: len(publishers) - len(own[n]) for n in honest}
    needs = {n: Report(invalid=1, dropped=Counter(malformed=1)) for n in graph[corrupter]}
    for n in graph[chosen[2]]:
        needs.setdefault(n, Report()).dups_from[chosen[2]] = 1
    needs.setdefault(stray_to, Report()).dropped["not_peer"] = 1
    tracker = Tracker(expected, needs)

    network = InMemoryNetwork()
    roles: dict[str, GossipRole] = {}
    daemons: dict[str, Daemon] = {}
    for nid in ids:
        node_dir = tmp_path / "nodes" / nid
        node_dir.mkdir(parents=True)
        config = node_config(
            LEARNING,
            node_id=nid,
            plan=NodePlan(node_id=nid, role="gossip", peers=tuple(graph[nid])),
        )
        roles[nid] = GossipRole(
            graph[nid], own[nid], byzantine.get(nid, "honest"), blocks, tracker, stray_to
        )
        daemons[nid] = Daemon(
            config,
            topology,
            network.attach(nid),
            Codec(nid, keys[nid], roster, config.max_message_bytes),
            roles[nid],
            MetricsWriter(node_dir / "metrics.jsonl", {"node": nid, "role": "device"}),
        )
    threads = [
        threading.Thread(target=d.run, kwargs={"install_signal_handlers": False})
        for d in daemons.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DEADLINE_S + 60)
    assert not any(t.is_alive() for t in threads), "the run did not finish"
    for d in daemons.values():
        d.close()
    return Run(tmp_path, topology, graph, byzantine, stray_to, own, roles, daemons, tracker)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_network(tmp_path_factory.mktemp("gossip-run"))


def test_blocks_reach_every_honest_node_through_byzantine_relays(run: Run) -> None:

    assert run.tracker.done.is_set(), f"not every block arrived: {run.tracker.missing()}"
    published = {b for bs in run.blocks.values() for b in bs}
    for nid in run.honest:
        role = run.roles[nid]
        stats = role.service.stats
        mine = set(run.blocks[nid])
        assert sorted(role.delivered) == sorted(published - mine), nid  # each block once
        assert stats.published == len(mine)
        assert stats.received == stats.delivered == len(published) - len(mine)
        # the service's counters against the role's own count of what reached it
        assert sum(stats.invalid.values()) == role.seen.invalid, nid
        assert stats.duplicates == sum(role.seen.dups_from.values()), nid
        assert set(stats.invalid) <= {"bad_signature"}
        assert set(stats.invalid_from) <= {n for n, b in run.byzantine.items() if b == "corrupt"}
    for nid in run.neighbours_of("drop"):
        dropper = next(n for n, b in run.byzantine.items() if b == "drop")
        assert run.roles[nid].items_from[dropper] == 0
    for nid in run.neighbours_of("corrupt"):
        assert run.roles[nid].service.stats.invalid["bad_signature"] >= 1
        assert run.daemons[nid].drops["gossip_malformed"] == 1
    assert run.daemons[run.stray_to].drops["gossip_not_peer"] == 1
    assert sum(run.roles[n].service.stats.relayed for n in run.honest) > 0


def test_each_node_writes_its_gossip_record_and_counters_csv_shows_it(run: Run) -> None:
    collect(run.dir)

    with (run.dir / "counters.csv").open() as f:
        rows = {r["node"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(run.graph)
    for nid, role in run.roles.items():
        records = [
            json.loads(line)
            for line in (run.dir / "nodes" / nid / "metrics.jsonl").read_text().splitlines()
        ]
        (gossip,) = [r for r in records if r["event"] == "gossip"]
        (counters,) = [r for r in records if r["event"] == "counters"]
        assert {k: v for k, v in gossip.items() if k.startswith("gossip_")} == json.loads(
            json.dumps(role.service.record())
        )
        row = rows[nid]
        assert row["gossip_delivered"] == str(role.service.stats.delivered)
        assert row["gossip_relayed"] == str(role.service.stats.relayed)
        assert row["gossip_duplicates"] == str(role.service.stats.duplicates)
        assert row["sent_msgs"] == str(counters["sent_msgs"])
        if nid not in run.byzantine:  # honest roles send only gossip
            unreachable = counters["dropped"].get("peer_unreachable", 0)  # peers already done
            assert role.service.service_stats.sent_msgs == counters["sent_msgs"] + unreachable
    for nid in run.neighbours_of("corrupt"):
        assert "bad_signature=" in rows[nid]["gossip_invalid"]
        assert "gossip_malformed=1" in rows[nid]["dropped"]
