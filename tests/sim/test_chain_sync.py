"""ChainSync replicas on an in-memory, seeded network: live blocks, catch-up, restarts, liars."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block
from node.core.encoding import sha256
from node.core.finality import SingleWriter
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import MemoryBlobStore
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import ChainStore, open_store
from node.ledger.sync import REQUEST_TIMEOUT_S, ChainSync, Outgoing, referenced_blobs

N_DEVICES = 2
N_BLOCKS = 30
TASK = "t1"

Handler = Callable[[str, str, dict[str, Any], float], list[Outgoing]]


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


PUB = _key(1)
DEVICES = [_key(10 + i) for i in range(N_DEVICES)]


def _config(chain_id: str = "sim") -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher")}
    members.update({f"dev{i}": (k.public_key, "device") for i, k in enumerate(DEVICES)})
    return ChainConfig(Genesis(members, {"pub": 1000}, chain_id), SingleWriter(PUB.public_key))


class Writer:
    """The publisher: builds one FL round per block, its blobs put in its own blob store."""

    def __init__(self, chain: Chain, blobs: MemoryBlobStore, rng: random.Random) -> None:
        self.chain, self.blobs, self.rng = chain, blobs, rng
        self.nonces: Counter[bytes] = Counter()
        self.round = 0
        self.ts = 0

    def _tx(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Transaction:
        self.nonces[key.public_key] += 1
        return Transaction.create(key, type_, self.nonces[key.public_key], payload)

    def _blob(self) -> bytes:
        return self.blobs.put(self.rng.randbytes(self.rng.randrange(64, 2048)))

    def next_block(self) -> Block:
        if self.chain.height == 0:
            txs = [
                self._tx(
                    PUB,
                    "task.publish",
                    {
                        "task_id": TASK,
                        "reward_pool": 100,
                        "rounds": 1000,
                        "model": "m",
                        "dataset": "d",
                    },
                )
            ]
        else:
            r = self.round = self.round + 1
            txs = [
                self._tx(
                    dev,
                    "task.record_update",
                    {"task_id": TASK, "round": r, "blob": self._blob(), "size": 1, "samples": 1},
                )
                for dev in DEVICES
            ]
            txs.append(
                self._tx(
                    PUB,
                    "task.record_global",
                    {
                        "task_id": TASK,
                        "round": r,
                        "blob": self._blob(),
                        "size": 1,
                        "accuracy": 0.5,
                        "contributors": [f"dev{i}" for i in range(N_DEVICES)],
                    },
                )
            )
        self.ts += 1000
        block = self.chain.build(txs, PUB, self.ts)
        assert len(block.txs) == len(txs)
        return block


class Replica:
    def __init__(self, name: str, node_dir: Path, config: ChainConfig) -> None:
        self.name = name
        self.store: ChainStore = open_store(node_dir)
        self.chain = Chain(self.store, config)
        self.blobs = MemoryBlobStore()
        self.sync = ChainSync(self.chain, self.blobs)


class Net:
    """Delivers messages one at a time in a seeded random order; may drop chain.* messages."""

    def __init__(self, seed: int, drop: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.drop = drop
        self.handlers: dict[str, Handler] = {}
        self.queue: list[tuple[str, Outgoing]] = []
        self.now = 0.0
        self.delivered: Counter[str] = Counter()
        self.dropped = 0
        self.cut: set[str] = set()  # message types lost while set (a partial partition)

    def send(self, src: str, outs: list[Outgoing]) -> None:
        self.queue.extend((src, o) for o in outs)

    def run(self, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            if not self.queue:
                return
            i = self.rng.randrange(len(self.queue))
            self.queue[i], self.queue[-1] = self.queue[-1], self.queue[i]
            src, msg = self.queue.pop()
            handler = self.handlers.get(msg.dst)
            if handler is None:
                continue
            lost = self.drop and msg.type.startswith("chain.") and self.rng.random() < self.drop
            if lost or msg.type in self.cut:
                self.dropped += 1
                continue
            self.delivered[msg.type] += 1
            self.send(msg.dst, handler(src, msg.type, msg.payload, self.now))
        raise AssertionError("the network did not go quiet")

    def settle(
        self, replicas: list[Replica], peers: dict[str, list[str]], done: Callable[[], bool]
    ) -> int:
        """Rounds of (announce, tick with a later fake clock, deliver) until `done`."""
        for rounds in range(50):
            self.run()
            if done():
                return rounds
            self.now += REQUEST_TIMEOUT_S + 1
            for r in replicas:
                self.send(r.name, r.sync.tick(self.now))
                self.send(r.name, r.sync.announce(peers[r.name]))
        raise AssertionError("did not converge")


def _has_all_blobs(replica: Replica) -> bool:
    for height in range(1, replica.chain.height + 1):
        block = replica.store.block(height)
        assert block is not None
        for tx in block.txs:
            for key in referenced_blobs(tx):
                data = replica.blobs.get(key)
                if data is None or sha256(data) != key:
                    return False
    return True


@pytest.fixture
def closing() -> Iterator[list[Replica]]:
    opened: list[Replica] = []
    yield opened
    for r in opened:
        r.store.close()


def _setup(
    tmp_path: Path, closing: list[Replica], names: list[str], seed: int, drop: float = 0.0
) -> tuple[Net, Replica, list[Replica], Writer]:
    net = Net(seed, drop)
    writer = Replica("w", tmp_path / "w", _config())
    replicas = [Replica(n, tmp_path / n, _config()) for n in names]
    closing.extend([writer, *replicas])
    for r in [writer, *replicas]:
        net.handlers[r.name] = r.sync.handle
    return net, writer, replicas, Writer(writer.chain, writer.blobs, random.Random(seed))


def _peers(names: list[str]) -> dict[str, list[str]]:
    return {n: [m for m in names if m != n] for n in names}


@pytest.mark.parametrize(("seed", "drop"), [(1, 0.0), (2, 0.2), (3, 0.4)])
def test_five_replicas_converge_with_blobs(
    tmp_path: Path, closing: list[Replica], seed: int, drop: float
) -> None:
    names = [f"r{i}" for i in range(5)]
    net, w, replicas, writer = _setup(tmp_path, closing, names, seed)
    rng = random.Random(seed)
    net.cut = {"chain.get"}  # live phase: replicas get only some blocks, and cannot catch up
    for _ in range(N_BLOCKS):
        block = writer.next_block()
        w.chain.append(block)
        live = [r.name for r in replicas if rng.random() < 0.3]
        net.send(
            "w",
            [
                Outgoing(n, "chain.block", {"block": block.to_bytes(), "height": block.height})
                for n in live
            ],
        )
        if rng.random() < 0.5:
            net.run()
    net.run()
    assert all(r.chain.height < N_BLOCKS for r in replicas)  # all still behind
    net.cut = set()
    net.drop = drop
    everyone = ["w", *names]
    head = w.chain.head.hash
    net.settle(
        [w, *replicas],
        _peers(everyone),
        lambda: all(r.chain.head.hash == head and _has_all_blobs(r) for r in replicas),
    )
    assert net.delivered["chain.get"] > 0 and net.delivered["chain.blocks"] > 0
    for r in replicas:
        assert r.chain.height == N_BLOCKS
        assert r.chain.state.root() == w.chain.state.root()
        assert r.store.state_rows() == w.store.state_rows()
        assert not r.sync.missing_blobs
        assert r.sync.failures["bad_blob"] == 0


def test_restarted_replica_with_empty_store_syncs(tmp_path: Path, closing: list[Replica]) -> None:
    names = ["r0", "r1"]
    net, w, replicas, writer = _setup(tmp_path, closing, names, seed=7)
    for _ in range(N_BLOCKS):
        block = writer.next_block()
        w.chain.append(block)
        net.send(
            "w",
            [
                Outgoing(r.name, "chain.block", {"block": block.to_bytes(), "height": block.height})
                for r in replicas
            ],
        )
        net.run()
    assert all(r.chain.head.hash == w.chain.head.hash for r in replicas)
    # r1 restarts with an empty store in a new directory; the writer is gone.
    fresh = Replica("r1", tmp_path / "r1-new", _config())
    closing.append(fresh)
    assert fresh.chain.height == 0
    net.handlers["r1"] = fresh.sync.handle
    del net.handlers["w"]
    net.send("r1", fresh.sync.announce(["r0"]))
    net.run()
    assert fresh.chain.height == N_BLOCKS
    assert fresh.chain.head.hash == w.chain.head.hash
    assert fresh.chain.state.root() == w.chain.state.root()
    assert _has_all_blobs(fresh)


# -- Byzantine peers -------------------------------------------------------------------------


def _tamper_one_byte(raw: bytes, block: Block) -> bytes:
    at = raw.index(block.header.state_root) + 3
    return raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :]


class Liar:
    """A peer that holds a real chain but answers chain.get / blob.get dishonestly."""

    def __init__(self, replica: Replica, mode: str, other: Replica | None = None) -> None:
        self.replica, self.mode, self.other = replica, mode, other

    def handle(
        self, sender: str, type_: str, payload: dict[str, Any], now: float
    ) -> list[Outgoing]:
        outs = self.replica.sync.handle(sender, type_, payload, now)
        fixed = []
        for o in outs:
            p = dict(o.payload)
            if o.type == "chain.blocks" and self.mode == "tamper":
                blocks = list(p["blocks"])
                if len(blocks) >= 4:
                    parsed = Block.from_bytes(blocks[3])
                    blocks[3] = _tamper_one_byte(blocks[3], parsed)
                p["blocks"] = blocks
            elif o.type == "chain.blocks" and self.mode == "other_chain":
                assert self.other is not None
                start = payload["from"]
                p["blocks"] = [self.other.store.block_bytes(h) for h in range(start, start + 5)]
            elif o.type == "blob.data" and self.mode == "bad_blob" and "data" in p:
                p["data"] = p["data"][:-1] + bytes([p["data"][-1] ^ 1])
            fixed.append(Outgoing(o.dst, o.type, p))
        return fixed


def _full_chain(
    tmp_path: Path, closing: list[Replica], name: str, chain_id: str, seed: int, n: int = N_BLOCKS
) -> Replica:
    r = Replica(name, tmp_path / name, _config(chain_id))
    closing.append(r)
    writer = Writer(r.chain, r.blobs, random.Random(seed))
    for _ in range(n):
        r.chain.append(writer.next_block())
    return r


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("tamper", "bad_certificate"), ("other_chain", "bad_prev_hash"), ("bad_blob", "bad_blob")],
)
def test_byzantine_peer_is_refused(
    tmp_path: Path, closing: list[Replica], mode: str, reason: str
) -> None:
    honest = _full_chain(tmp_path, closing, "honest", "sim", seed=11)
    if mode == "bad_blob":
        # The liar serves valid blocks (it is behind) but corrupt blobs.
        liar_replica = _full_chain(tmp_path, closing, "zliar", "sim", seed=11, n=N_BLOCKS // 2)
        liar_replica.blobs = honest.blobs
        liar_replica.sync.blobs = honest.blobs
    else:
        liar_replica = _full_chain(tmp_path, closing, "zliar", "sim", seed=11)
    other = _full_chain(tmp_path, closing, "other", "another", seed=12)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    liar = Liar(liar_replica, mode, other)
    net = Net(seed=5)
    net.handlers = {"honest": honest.sync.handle, "zliar": liar.handle, "node": node.sync.handle}

    # First the node only hears of the liar.
    net.send("zliar", liar_replica.sync.announce(["node"]))
    net.run()
    assert node.sync.failures[reason] >= 1, node.sync.failures
    prefix = node.chain.height
    if mode == "tamper":
        assert prefix == 3  # the three valid blocks before the tampered one were kept
    elif mode == "other_chain":
        assert prefix == 0
    else:
        assert prefix == N_BLOCKS // 2 and node.sync.missing_blobs
    for h in range(1, prefix + 1):
        assert node.store.block_bytes(h) == honest.store.block_bytes(h)

    # Then it hears of the honest peer and reaches the head through it.
    net.send("honest", honest.sync.announce(["node"]))
    net.settle(
        [node],
        {"node": ["honest", "zliar"]},
        lambda: node.chain.head.hash == honest.chain.head.hash and _has_all_blobs(node),
    )
    assert node.chain.state.root() == honest.chain.state.root()
    assert not node.sync.missing_blobs


def test_unsolicited_blocks_are_ignored(tmp_path: Path, closing: list[Replica]) -> None:
    source = _full_chain(tmp_path, closing, "src", "sim", seed=3, n=3)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    blocks = [source.store.block_bytes(h) for h in (1, 2)]
    assert node.sync.handle("src", "chain.blocks", {"blocks": blocks, "height": 3}, 0.0) == []
    assert node.sync.failures["unsolicited"] == 1
    assert node.chain.height == 0
    # A request is outstanding to src; an answer from someone else is still unsolicited.
    outs = node.sync.handle("src", "chain.status", {"height": 3, "head": b""}, 0.0)
    assert [(o.dst, o.type) for o in outs] == [("src", "chain.get")]
    node.sync.handle("mallory", "chain.blocks", {"blocks": blocks, "height": 3}, 0.0)
    assert node.sync.failures["unsolicited"] == 2
    assert node.chain.height == 0
    # The answer from src is taken.
    node.sync.handle("src", "chain.blocks", {"blocks": blocks, "height": 3}, 0.0)
    assert node.chain.height == 2


def test_timed_out_request_goes_to_another_peer(tmp_path: Path, closing: list[Replica]) -> None:
    source = _full_chain(tmp_path, closing, "src", "sim", seed=3, n=3)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    node.sync.handle("b", "chain.status", {"height": 3, "head": source.chain.head.hash}, 0.0)
    assert node.sync.syncing
    node.sync.handle("a", "chain.status", {"height": 3, "head": source.chain.head.hash}, 0.0)
    assert node.sync.tick(REQUEST_TIMEOUT_S) == []  # not yet
    outs = node.sync.tick(REQUEST_TIMEOUT_S + 0.1)
    assert node.sync.failures["timeout"] == 1
    assert [(o.dst, o.type) for o in outs] == [("a", "chain.get")], "not the silent peer again"
    outs = node.sync.tick(2 * REQUEST_TIMEOUT_S + 0.2)
    assert node.sync.failures["timeout"] == 2
    assert outs == [], "both peers are presumed gone until they speak again"
    outs = node.sync.handle("b", "chain.status", {"height": 3, "head": b""}, 20.0)
    assert [(o.dst, o.type) for o in outs] == [("b", "chain.get")]


def test_seek_reaches_the_head_past_a_dead_and_a_short_peer(
    tmp_path: Path, closing: list[Replica]
) -> None:
    """The final catch-up: the first candidate is dead (its messages are lost), the second
    holds only part of the chain; the node still reaches the head through the third."""
    source = _full_chain(tmp_path, closing, "src", "sim", seed=3)
    short = Replica("short", tmp_path / "short", _config())
    closing.append(short)
    for h in range(1, 6):
        short.chain.append_bytes(source.store.block_bytes(h) or b"")
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    net = Net(seed=9)
    net.handlers = {"src": source.sync.handle, "short": short.sync.handle, "node": node.sync.handle}

    net.send("node", node.sync.seek(N_BLOCKS, ["gone", "short", "src"], net.now))
    net.run()
    assert node.chain.height == 0 and node.sync.syncing  # waiting for the dead peer

    net.now += REQUEST_TIMEOUT_S + 0.1
    net.send("node", node.sync.tick(net.now))
    net.run()

    assert node.sync.failures["timeout"] == 1
    assert node.chain.height == N_BLOCKS
    assert node.chain.head.hash == source.chain.head.hash
    assert node.chain.state.root() == source.chain.state.root()
    assert _has_all_blobs(node) and not node.sync.missing_blobs
    assert not node.sync.syncing


def test_missing_blob_is_fetched_later_from_another_peer(
    tmp_path: Path, closing: list[Replica]
) -> None:
    honest = _full_chain(tmp_path, closing, "honest", "sim", seed=11)
    bare = Replica("bare", tmp_path / "bare", _config())  # has the blocks, not the blobs
    closing.append(bare)
    for h in range(1, N_BLOCKS + 1):
        bare.chain.append_bytes(honest.store.block_bytes(h) or b"")
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    net = Net(seed=5)
    net.handlers = {
        "honest": honest.sync.handle,
        "bare": bare.sync.handle,
        "node": node.sync.handle,
    }
    net.send("bare", bare.sync.announce(["node"]))
    net.run()
    assert node.chain.height == N_BLOCKS and node.sync.failures["blob_missing"] > 0
    net.send("honest", honest.sync.announce(["node"]))
    net.settle([node], {"node": ["honest", "bare"]}, lambda: _has_all_blobs(node))


def test_seek_pauses_after_a_pass_that_brought_nothing(
    tmp_path: Path, closing: list[Replica]
) -> None:
    """Candidates that are alive but behind answer at once; the node must not ask them
    again and again, but once per REQUEST_TIMEOUT_S."""
    source = _full_chain(tmp_path, closing, "src", "sim", seed=3, n=5)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    net = Net(seed=2)
    net.handlers = {"src": source.sync.handle, "node": node.sync.handle}

    net.send("node", node.sync.seek(N_BLOCKS, ["src"], net.now))
    net.run()  # raises if the network never goes quiet

    assert node.chain.height == 5
    first = net.delivered["chain.get"]
    assert first == 2  # one that brought blocks 1..5, one that brought nothing
    net.send("node", node.sync.tick(net.now + 1.0))
    net.run()
    assert net.delivered["chain.get"] == first, "paused"
    net.send("node", node.sync.tick(net.now + REQUEST_TIMEOUT_S + 0.1))
    net.run()
    assert net.delivered["chain.get"] == first + 1, "one more pass after the pause"
