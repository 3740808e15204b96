"""The gossip core in a seeded in-memory network: 100+ nodes, lossy links, Byzantine relays.

The harness is a discrete-event network (heap of (time, tiebreak, event)): every message
travels as bytes (`node.gossip.encode` → `GossipNode.handle_bytes`) with a per-link delay
plus jitter, may be lost by a seeded loss schedule, and every node ticks its heartbeat.
Items are real Ed25519-signed records; each topic's validation hook verifies them.
Byzantine relays wrap an honest core and rewrite what it sends: drop (a black hole that
still announces), corrupt (flip a byte of each item it sends), replay (resend every item
it holds at each heartbeat with the largest ttl), squash (forward first, with ttl 1) and
lie (announce made-up ids).
The harness checks on every send that no honest node sends an invalid item.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from node.codec import Codec
from node.core.encoding import EncodingError, canonical, decode_canonical, sha256
from node.gossip import (
    ACCEPT,
    CODEC_TYPE,
    GossipAction,
    GossipConfig,
    GossipNode,
    IHave,
    Item,
    IWant,
    Send,
    Topic,
    Verdict,
    decode,
    encode,
    from_payload,
    reject,
    to_payload,
)
from node.gossip.messages import MAX_TTL
from node.keys import NodeKey, Roster
from node.transport.memory import InMemoryNetwork

TOPIC = "lmuc/mec-0/tx"
HEARTBEAT_S = 0.5

Graph = dict[str, list[str]]


# ---- topologies ---------------------------------------------------------------------------


def random_connected(n: int, extra_degree: float, rng: random.Random) -> Graph:
    """A random spanning tree plus random extra edges (mean degree about 2 + extra_degree)."""
    ids = [f"n{i}" for i in range(n)]
    edges: set[tuple[str, str]] = set()
    order = ids[:]
    rng.shuffle(order)
    for i in range(1, n):
        a, b = order[i], order[rng.randrange(i)]
        edges.add((min(a, b), max(a, b)))
    while len(edges) < (n - 1) + int(n * extra_degree / 2):
        a, b = rng.sample(ids, 2)
        edges.add((min(a, b), max(a, b)))
    graph: Graph = {i: [] for i in ids}
    for a, b in sorted(edges):
        graph[a].append(b)
        graph[b].append(a)
    return graph


def line(n: int, ring: bool = False) -> Graph:
    """n0 - n1 - … - n(n-1), closed into a ring if asked."""
    graph: Graph = {f"n{i}": [] for i in range(n)}
    for i in range(n - 1 + int(ring)):
        a, b = f"n{i}", f"n{(i + 1) % n}"
        graph[a].append(b)
        graph[b].append(a)
    return graph


def reachable(graph: Graph, source: str, allowed: set[str]) -> set[str]:
    """Nodes reachable from `source` through nodes in `allowed` only."""
    seen = {source}
    todo = deque([source])
    while todo:
        for nxt in graph[todo.popleft()]:
            if nxt in allowed and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# ---- signed items -------------------------------------------------------------------------


class Signer:
    """Real Ed25519 keys for every node, and the topic's validation hook."""

    def __init__(self, ids: list[str], seed: int) -> None:
        self.keys = {i: NodeKey.from_seed(sha256(b"gossip-%d-" % seed + i.encode())) for i in ids}
        self.roster = Roster({i: k.public_key for i, k in self.keys.items()})

    def item(self, origin: str, seq: int, size: int = 200) -> bytes:
        """A signed item of about `size` bytes."""
        body = bytes((seq * 7 + j) % 251 for j in range(size))
        sig = self.keys[origin].sign(canonical([origin, seq, body]))
        return canonical([origin, seq, body, sig])

    def validate(self, data: bytes) -> Verdict:
        """Accept an item whose signature verifies against the roster."""
        try:
            obj = decode_canonical(data)
        except EncodingError:
            return reject("malformed")
        if not (isinstance(obj, list) and len(obj) == 4 and isinstance(obj[0], str)):
            return reject("malformed")
        origin, seq, body, sig = obj
        if not isinstance(sig, bytes) or not self.roster.verify(
            origin, canonical([origin, seq, body]), sig
        ):
            return reject("bad_signature")
        return ACCEPT


# ---- Byzantine relays ---------------------------------------------------------------------


class Honest:
    """An honest endpoint: the core as is."""

    byzantine = False

    def __init__(self, core: GossipNode, rng: random.Random) -> None:
        self.core = core
        self.id = core.id
        self.rng = rng

    def rewrite(self, actions: list[GossipAction]) -> list[GossipAction]:
        """What this endpoint really does with the core's actions."""
        return actions

    def publish(self, data: bytes, now: float) -> list[GossipAction]:
        return self.rewrite(self.core.publish(TOPIC, data, now))

    def handle(self, sender: str, raw: bytes, now: float) -> list[GossipAction]:
        return self.rewrite(self.core.handle_bytes(sender, raw, now))

    def tick(self, now: float) -> list[GossipAction]:
        return self.rewrite(self.core.tick(now))


class Dropper(Honest):
    """A black hole: relays and serves nothing, but announces what it holds (IHAVE)."""

    byzantine = True

    def rewrite(self, actions: list[GossipAction]) -> list[GossipAction]:
        return [a for a in actions if isinstance(a, Send) and not isinstance(a.message, Item)]


class Corrupter(Honest):
    """Relays and serves every item with one byte flipped (announces the true ids)."""

    byzantine = True

    def rewrite(self, actions: list[GossipAction]) -> list[GossipAction]:
        out: list[GossipAction] = []
        for act in actions:
            if isinstance(act, Send) and isinstance(act.message, Item):
                data = bytearray(act.message.data)
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
                act = Send(act.dst, Item(act.message.topic, act.message.ttl, bytes(data)))
            out.append(act)
        return out


class Replayer(Honest):
    """Honest, plus: at every heartbeat resends every (valid) item it holds to every
    neighbour with the largest ttl the wire allows."""

    byzantine = True

    def __init__(self, core: GossipNode, rng: random.Random) -> None:
        super().__init__(core, rng)
        self.held: list[bytes] = []

    def handle(self, sender: str, raw: bytes, now: float) -> list[GossipAction]:
        out = super().handle(sender, raw, now)
        msg = decode(raw)
        data = msg.data if isinstance(msg, Item) else b""
        if data and data not in self.held and self.core.has(TOPIC, GossipNode.item_id(data), now):
            self.held.append(data)
        return out

    def tick(self, now: float) -> list[GossipAction]:
        replays: list[GossipAction] = [
            Send(peer, Item(TOPIC, MAX_TTL, data))
            for data in self.held
            for peer in self.core.peers(TOPIC)
        ]
        return super().tick(now) + replays


class Squasher(Honest):
    """Forwards every new valid item at once to every neighbour with ttl 1 (so they would
    not relay it), and relays and serves nothing else."""

    byzantine = True

    def rewrite(self, actions: list[GossipAction]) -> list[GossipAction]:
        out: list[GossipAction] = []
        for act in actions:
            if isinstance(act, Send) and isinstance(act.message, Item):
                continue
            out.append(act)
        return out

    def handle(self, sender: str, raw: bytes, now: float) -> list[GossipAction]:
        received = self.core.stats.received
        out = super().handle(sender, raw, now)
        msg = decode(raw)
        if self.core.stats.received > received and isinstance(msg, Item):
            out += [Send(p, Item(TOPIC, 1, msg.data)) for p in self.core.peers(TOPIC)]
        return out


class Liar(Honest):
    """Honest, plus: at every heartbeat announces 50 made-up ids to every neighbour."""

    byzantine = True

    def tick(self, now: float) -> list[GossipAction]:
        fake = tuple(self.rng.randbytes(32) for _ in range(50))
        lies: list[GossipAction] = [Send(p, IHave(TOPIC, fake, 9)) for p in self.core.peers(TOPIC)]
        return super().tick(now) + lies


BEHAVIOURS: dict[str, type[Honest]] = {
    "drop": Dropper,
    "corrupt": Corrupter,
    "replay": Replayer,
    "squash": Squasher,
    "lie": Liar,
}


# ---- the network --------------------------------------------------------------------------


@dataclass
class Loss:
    """A seeded loss schedule: each message is lost with `rate` while now < `until`;
    links in `cut` lose everything in that window."""

    rate: float = 0.0
    until: float = float("inf")
    cut: set[frozenset[str]] = field(default_factory=set)

    def lost(self, src: str, dst: str, now: float, rng: random.Random) -> bool:
        if now >= self.until:
            return False
        return frozenset((src, dst)) in self.cut or rng.random() < self.rate


class GossipNet:
    """Endpoints on a graph, a fake clock, a heap of deliveries and heartbeats."""

    def __init__(
        self,
        graph: Graph,
        config: GossipConfig,
        seed: int,
        byzantine: dict[str, str] | None = None,
        loss: Loss | None = None,
        uplink_bytes_per_s: float | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        """`uplink_bytes_per_s`: each node sends one message at a time at that rate (its
        messages queue behind each other), so large items take their size's time; None:
        every message takes only its link's delay."""
        self.graph = graph
        self.uplink_bytes_per_s = uplink_bytes_per_s
        self.heartbeat_s = heartbeat_s
        self._uplink_free: dict[str, float] = {}
        self.rng = random.Random(seed)
        self.signer = Signer(sorted(graph), seed)
        self.loss = loss or Loss()
        self.now = 0.0
        self._queue: list[tuple[float, int, str, str, Any]] = []
        self._tick = 0
        self.delay = {
            frozenset((a, b)): self.rng.uniform(0.002, 0.05) for a in graph for b in graph[a]
        }
        byzantine = byzantine or {}
        self.nodes: dict[str, Honest] = {}
        for nid in sorted(graph):
            topic = Topic(TOPIC, tuple(graph[nid]), self.signer.validate)
            core = GossipNode(nid, [topic], config)
            kind = BEHAVIOURS.get(byzantine.get(nid, ""), Honest)
            self.nodes[nid] = kind(core, random.Random(f"{seed}-{nid}"))
            self._push(self.rng.uniform(0, heartbeat_s), "tick", nid, None)
        self.honest = {n for n, ep in self.nodes.items() if not ep.byzantine}
        self.truth: dict[bytes, bytes] = {}
        self.delivered: dict[str, Counter[bytes]] = {n: Counter() for n in graph}
        self.item_sends: Counter[bytes] = Counter()
        self.item_serves: Counter[bytes] = Counter()
        self.origin: dict[bytes, str] = {}
        self.forwarded: Counter[str] = Counter()  # item bytes sent of others' items
        self.forwarded_to: Counter[tuple[str, str]] = Counter()
        self.corrupt_to_honest = 0
        self.dup_to_honest = 0
        self.sent_msgs = 0

    def _push(self, at: float, kind: str, node: str, payload: Any) -> None:
        self._tick += 1
        heapq.heappush(self._queue, (at, self._tick, kind, node, payload))

    def publish(self, at: float, origin: str, seq: int, size: int = 200) -> bytes:
        """Schedule `origin` to publish a new signed item at `at`; returns its id."""
        data = self.signer.item(origin, seq, size)
        item_id = GossipNode.item_id(data)
        self.truth[item_id] = data
        self.origin[item_id] = origin
        self._push(at, "publish", origin, data)
        return item_id

    def _apply(self, src: str, actions: list[GossipAction], serving: bool = False) -> None:
        for act in actions:
            if not isinstance(act, Send):
                self.delivered[src][act.item_id] += 1
                assert src not in self.honest or self.signer.validate(act.data).ok
                continue
            msg = act.message
            if isinstance(msg, Item) and src in self.honest:
                assert self.signer.validate(msg.data).ok, f"honest {src} sent an invalid item"
                counter = self.item_serves if serving else self.item_sends
                counter[GossipNode.item_id(msg.data)] += 1
                if self.origin.get(GossipNode.item_id(msg.data)) != src:
                    self.forwarded[src] += len(msg.data)
                    self.forwarded_to[(src, act.dst)] += len(msg.data)
            self.sent_msgs += 1
            if self.loss.lost(src, act.dst, self.now, self.rng):
                continue
            raw = encode(msg)
            leaves = self.now
            if self.uplink_bytes_per_s is not None:
                leaves = max(leaves, self._uplink_free.get(src, 0.0))
                leaves += len(raw) / self.uplink_bytes_per_s
                self._uplink_free[src] = leaves
            at = leaves + self.delay[frozenset((src, act.dst))] * self.rng.uniform(1, 1.5)
            self._push(at, "msg", act.dst, (src, raw))

    def run(self, until: float, max_events: int = 200_000) -> None:
        """Process events up to time `until` (a message storm fails after `max_events`)."""
        events = 0
        while self._queue and self._queue[0][0] <= until:
            events += 1
            assert events <= max_events, f"more than {max_events} events by t={self.now:.2f}"
            at, _, kind, node, payload = heapq.heappop(self._queue)
            self.now = at
            ep = self.nodes[node]
            if kind == "tick":
                self._apply(node, ep.tick(at))
                self._push(at + self.heartbeat_s, "tick", node, None)
            elif kind == "publish":
                self._apply(node, ep.publish(payload, at))
            else:
                src, raw = payload
                if node in self.honest:
                    self._observe(node, raw, at)
                self._apply(node, ep.handle(src, raw, at), isinstance(decode(raw), IWant))

    def _observe(self, node: str, raw: bytes, now: float) -> None:
        msg = decode(raw)
        if isinstance(msg, Item):
            item_id = GossipNode.item_id(msg.data)
            if item_id not in self.truth:
                self.corrupt_to_honest += 1
            elif self.nodes[node].core.has(TOPIC, item_id, now):
                self.dup_to_honest += 1

    def stat(self, name: str, nodes: set[str] | None = None) -> int:
        """A counter summed over `nodes` (default: the honest ones)."""
        total = 0
        for nid in nodes if nodes is not None else self.honest:
            value = getattr(self.nodes[nid].core.stats, name)
            total += sum(value.values()) if isinstance(value, Counter) else value
        return total

    def missing(self, item_ids: list[bytes], source: str) -> dict[str, int]:
        """Honest nodes with an honest path from `source` that lack some item: {node: n}."""
        out = {}
        for nid in reachable(self.graph, source, self.honest):
            lacking = sum(1 for i in item_ids if self.delivered[nid][i] == 0)
            if nid != source and lacking:
                out[nid] = lacking
        return out


# ---- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "lazy"), [(1, None), (2, None), (3, None), (1, 2), (2, 3)])
def test_byzantine_mix_on_random_graph_every_reachable_honest_node_gets_every_item(
    seed: int, lazy: int | None
) -> None:
    rng = random.Random(seed)
    graph = random_connected(120, 4.0, rng)
    ids = sorted(graph)
    bad = rng.sample(ids, 20)
    kinds = sorted(BEHAVIOURS)
    byzantine = {nid: kinds[i % len(kinds)] for i, nid in enumerate(bad)}
    config = GossipConfig(ttl=32, fanout=3, seed=b"%d" % seed, want_timeout_s=0.5, lazy_fanout=lazy)
    net = GossipNet(graph, config, seed, byzantine, Loss(rate=0.05, until=10.0))
    source = max(sorted(net.honest), key=lambda n: len(reachable(graph, n, net.honest)))
    assert len(reachable(graph, source, net.honest)) >= 0.9 * len(net.honest)
    items = [net.publish(0.1 + 0.3 * k, source, k) for k in range(6)]

    net.run(until=30.0)

    assert net.missing(items, source) == {}
    for nid in net.honest:
        assert all(c <= 1 for c in net.delivered[nid].values()), f"{nid} delivered twice"
    assert net.corrupt_to_honest > 0
    assert net.stat("invalid") == net.corrupt_to_honest  # every corrupted copy dropped+counted
    assert net.stat("invalid_from", net.honest) == net.corrupt_to_honest
    blamed = set().union(*(net.nodes[n].core.stats.invalid_from for n in net.honest))
    assert blamed & {n for n, kind in byzantine.items() if kind == "corrupt"}
    assert blamed <= set(byzantine)  # no honest node is ever blamed for an invalid item
    assert net.dup_to_honest > 0
    assert net.stat("duplicates") == net.dup_to_honest  # every replayed copy suppressed
    for item in items:  # an honest node pushes an item once (ttl upgrades send ids only)
        assert net.item_sends[item] <= config.fanout * len(net.honest)
    assert net.stat("want_failed") > 0  # the liars' made-up ids were asked for, then dropped
    assert all(net.nodes[n].core.pending_wants() <= 2 * 50 * 5 for n in net.honest)


def test_lossless_push_sends_each_item_at_most_fanout_times_per_node() -> None:
    rng = random.Random(11)
    graph = random_connected(150, 4.0, rng)
    config = GossipConfig(ttl=32, fanout=3)
    net = GossipNet(graph, config, seed=11)
    items = [net.publish(0.1 * k, f"n{k}", k) for k in range(5)]

    net.run(until=20.0)

    for k, item in enumerate(items):
        assert net.missing([item], f"n{k}") == {}
        assert net.item_sends[item] <= config.fanout * len(graph)  # pushes: once per node
        assert net.item_serves[item] < len(graph)  # each node pulls an item at most once
    assert net.stat("received") == 5 * 149
    assert net.stat("invalid") == 0


@pytest.mark.parametrize("seed", [3, 8])
def test_forwarded_bytes_count_what_each_node_relayed_and_serves(seed: int) -> None:
    """The relay figure of the two-layer incentives: every node's forwarded bytes (pushes
    and pull answers of others' items) are exactly what it sent, they grow with how much it
    relayed, a leaf that only receives reports 0, and each node's `relayed_from` is a lower
    bound of what that peer forwarded to it."""
    rng = random.Random(seed)
    graph = random_connected(80, 3.0, rng)
    core_ids = sorted(graph)
    leaves = [f"leaf{i}" for i in range(8)]
    for leaf in leaves:  # one link each: whatever reaches a leaf came from its only peer
        anchor = rng.choice(core_ids)
        graph[leaf] = [anchor]
        graph[anchor].append(leaf)
    config = GossipConfig(ttl=32, fanout=3, seed=b"%d" % seed, want_timeout_s=0.5)
    net = GossipNet(graph, config, seed, loss=Loss(rate=0.05, until=6.0))
    sources = rng.sample(core_ids, 6)
    items = [net.publish(0.1 + 0.2 * k, src, k, size=300 + 50 * k) for k, src in enumerate(sources)]

    net.run(until=30.0)

    for k, src in enumerate(sources):
        assert net.missing([items[k]], src) == {}
    stats = {nid: net.nodes[nid].core.stats for nid in graph}
    for nid, st in stats.items():
        assert st.forwarded_bytes == net.forwarded[nid], nid
        assert st.forwarded_bytes == st.relayed_bytes + st.served_bytes
        assert st.as_record()["gossip_forwarded_bytes"] == st.forwarded_bytes
        for peer, got in st.relayed_from.items():
            assert 0 < got <= net.forwarded_to[(peer, nid)], (peer, nid)
    total = sum(len(net.truth[i]) for i in items)
    for leaf in leaves:
        assert stats[leaf].received_bytes == total  # it got every item…
        assert stats[leaf].forwarded_bytes == 0  # …and forwarded nothing
    forwarded = sorted(stats[n].forwarded_bytes for n in core_ids)
    assert forwarded[-1] > forwarded[len(forwarded) // 2] > forwarded[0]  # not flat
    assert len(set(forwarded)) > 5
    by_received = {stats[n].received_bytes for n in core_ids if n not in sources}
    assert by_received == {total}  # what every relay received is the same figure


def test_small_fanout_leaves_nodes_out_without_pull_and_pull_recovers_them() -> None:
    rng = random.Random(5)
    graph = random_connected(100, 4.0, rng)
    push_only = GossipNet(graph, GossipConfig(ttl=32, fanout=1, announce_ticks=0), seed=5)
    with_pull = GossipNet(graph, GossipConfig(ttl=32, fanout=1, announce_ticks=3), seed=5)
    a = [push_only.publish(0.1, "n0", 0)]
    b = [with_pull.publish(0.1, "n0", 0)]

    push_only.run(until=20.0)
    with_pull.run(until=20.0)

    assert len(push_only.missing(a, "n0")) > 10
    assert with_pull.missing(b, "n0") == {}
    assert with_pull.stat("pulled") > 0
    assert with_pull.stat("served") >= with_pull.stat("pulled")


@pytest.mark.parametrize("seed", [1, 4, 8])
def test_pull_recovers_items_lost_on_lossy_links(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_connected(100, 3.0, rng)
    loss = Loss(rate=0.3, until=5.0)
    config = GossipConfig(ttl=32, fanout=2, want_timeout_s=0.5)
    net = GossipNet(graph, config, seed=seed, loss=loss)
    items = [net.publish(0.1 + 0.2 * k, "n3", k) for k in range(5)]

    net.run(until=20.0)

    assert net.missing(items, "n3") == {}  # (seed 1: a peer whose pulls were all lost
    assert net.stat("pulled") > 0  # is served again in a later window)


def test_line_worst_case_with_loss_reaches_the_far_end() -> None:
    graph = line(100)
    loss = Loss(rate=0.2, until=30.0)
    config = GossipConfig(ttl=120, fanout=1, want_timeout_s=0.3, announce_ticks=8)
    net = GossipNet(graph, config, seed=4, loss=loss)
    items = [net.publish(0.0, "n0", 0), net.publish(1.0, "n0", 1)]

    net.run(until=120.0)

    assert net.missing(items, "n0") == {}
    assert net.stat("pulled") > 0


@pytest.mark.parametrize("kind", sorted(BEHAVIOURS))
def test_ring_with_one_byzantine_relay_still_reaches_every_honest_node(kind: str) -> None:
    graph = line(100, ring=True)
    net = GossipNet(graph, GossipConfig(ttl=120, fanout=2), seed=9, byzantine={"n40": kind})
    items = [net.publish(0.0, "n0", 0), net.publish(0.5, "n0", 1)]

    net.run(until=60.0)

    assert net.missing(items, "n0") == {}
    assert net.stat("invalid") == net.corrupt_to_honest
    assert net.stat("duplicates") == net.dup_to_honest


def test_ring_cut_by_a_dropper_and_a_corrupter_cut_off_nodes_get_nothing_valid() -> None:
    graph = line(100, ring=True)
    byzantine = {"n30": "drop", "n70": "corrupt"}
    net = GossipNet(graph, GossipConfig(ttl=120, fanout=2), seed=9, byzantine=byzantine)
    items = [net.publish(0.0, "n0", 0)]

    net.run(until=60.0)

    assert net.missing(items, "n0") == {}
    cut_off = {f"n{i}" for i in range(31, 70)}
    assert cut_off == set(graph) - reachable(graph, "n0", net.honest) - set(byzantine)
    assert all(not net.delivered[n] for n in cut_off)
    assert net.nodes["n69"].core.stats.invalid_from["n70"] > 0
    assert net.stat("invalid") == net.corrupt_to_honest


def test_ttl_bounds_propagation_on_a_line_even_with_pull() -> None:
    net = GossipNet(line(30), GossipConfig(ttl=5, fanout=2), seed=2)
    item = net.publish(0.0, "n0", 0)

    net.run(until=30.0)

    got = {n for n in net.graph if net.delivered[n][item]}
    assert got == {f"n{i}" for i in range(1, 6)}


def test_a_replayer_can_extend_reach_only_ttl_hops_beyond_itself() -> None:
    net = GossipNet(line(30), GossipConfig(ttl=5, fanout=2), seed=2, byzantine={"n3": "replay"})
    item = net.publish(0.0, "n0", 0)

    net.run(until=30.0)

    got = {n for n in net.graph if net.delivered[n][item]}
    assert got == {f"n{i}" for i in range(1, 9)}


@pytest.mark.parametrize("lazy", [None, 1])
def test_squashed_ttl_is_upgraded_by_the_honest_copy(lazy: int | None) -> None:
    # n1 squashes (forwards at once with ttl 1, faster than anyone); n0 - n2 is a slow link
    graph = {"n0": ["n1", "n2"], "n1": ["n0", "n2"], "n2": ["n0", "n1", "n3"]}
    graph.update({f"n{i}": [f"n{i - 1}", f"n{i + 1}"] for i in range(3, 20)})
    graph["n20"] = ["n19"]
    config = GossipConfig(ttl=32, fanout=3, announce_ticks=0, lazy_fanout=lazy)
    net = GossipNet(graph, config, seed=1, byzantine={"n1": "squash"})
    net.delay[frozenset(("n0", "n2"))] = 1.0
    item = net.publish(0.0, "n0", 0)

    net.run(until=30.0)

    assert net.missing([item], "n0") == {}
    assert net.nodes["n2"].core.stats.ttl_upgrades == 1


def test_same_seed_same_run() -> None:
    def once() -> list[dict[str, Any]]:
        rng = random.Random(21)
        graph = random_connected(100, 4.0, rng)
        byz = {"n1": "corrupt", "n2": "replay", "n3": "drop"}
        net = GossipNet(graph, GossipConfig(fanout=2, seed=b"x"), 21, byz, Loss(0.1, 5.0))
        net.publish(0.0, "n0", 0)
        net.run(until=15.0)
        return [net.nodes[n].core.stats.as_record() for n in sorted(graph)]

    assert once() == once()


def test_iwant_for_unknown_ids_is_answered_with_nothing() -> None:
    net = GossipNet(line(3), GossipConfig(), seed=1)
    raw = encode(IWant(TOPIC, (bytes(32),)))
    assert net.nodes["n1"].handle("n0", raw, 0.0) == []
    assert net.nodes["n1"].core.stats.dropped["want_unknown"] == 1


def test_over_the_signed_codec_and_the_in_memory_transport() -> None:
    # 100 nodes on a ring, each with its own Ed25519 key and `node.codec.Codec`; frames travel
    # through `InMemoryNetwork`; the clock is the sweep number. n50 signs corrupted items with
    # its own (valid) key: the codec accepts the frame, the topic's hook drops the item.
    graph = line(100, ring=True)
    signer = Signer(sorted(graph), seed=3)
    network = InMemoryNetwork()
    nodes = {
        n: (
            GossipNode(n, [Topic(TOPIC, tuple(graph[n]), signer.validate)], GossipConfig(ttl=60)),
            Codec(n, signer.keys[n], signer.roster),
            network.attach(n),
        )
        for n in sorted(graph)
    }
    delivered: Counter[str] = Counter()

    def carry(src: str, actions: list[GossipAction]) -> None:
        codec, transport = nodes[src][1], nodes[src][2]
        for act in actions:
            if isinstance(act, Send):
                msg = act.message
                if src == "n50" and isinstance(msg, Item):
                    msg = Item(msg.topic, msg.ttl, msg.data[:-1] + bytes([msg.data[-1] ^ 1]))
                transport.send(act.dst, codec.encode(CODEC_TYPE, to_payload(msg)))
            else:
                delivered[src] += 1

    carry("n0", nodes["n0"][0].publish(TOPIC, signer.item("n0", 0, size=5000), 0.0))
    for sweep in range(1, 200):
        for nid in sorted(graph):
            core, codec, transport = nodes[nid]
            while (frame := transport.recv(0)) is not None:
                message = codec.decode(frame)
                carry(nid, core.handle(message.sender, from_payload(message.payload), sweep))
            carry(nid, core.tick(float(sweep)))
        if all(delivered[n] for n in graph if n not in {"n0", "n50"}):
            break

    assert all(delivered[n] == 1 for n in graph if n not in {"n0", "n50"})
    blamed = sum((nodes[n][0].stats.invalid_from for n in graph), Counter())
    assert list(blamed) == ["n50"]
    assert all(nodes[n][2].stats.dropped == Counter() for n in graph)
