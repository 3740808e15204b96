"""Nodes keeping several chains (ChainSet) on an in-memory, seeded, lossy network: routing by
chain id, catch-up per chain, one blob store per node serving every chain, unknown ids counted."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from node.core.encoding import sha256
from node.keys import NodeKey
from node.ledger.blobs import MemoryBlobStore
from node.ledger.chains import ChainSet, UnknownChain, open_chains
from node.ledger.sync import CHAIN_FIELD, REQUEST_TIMEOUT_S, Outgoing, referenced_blobs
from tests.sim.test_chain_sync import PUB, Writer, _config

N_BLOCKS = 12
CHAINS = ("a", "b")


class Net:
    """Delivers messages in a seeded random order, losing a fraction of ``chain.*`` ones."""

    def __init__(self, seed: int, drop: float, nodes: dict[str, ChainSet]) -> None:
        self.rng = random.Random(seed)
        self.drop = drop
        self.nodes = nodes
        self.queue: list[tuple[str, Outgoing]] = []
        self.now = 0.0
        self.unknown: Counter[str] = Counter()
        self.cut = False  # True: every chain.get is lost (live blocks only)

    def send(self, src: str, outs: list[Outgoing]) -> None:
        self.queue.extend((src, o) for o in outs)

    def run(self) -> None:
        for _ in range(200_000):
            if not self.queue:
                return
            i = self.rng.randrange(len(self.queue))
            self.queue[i], self.queue[-1] = self.queue[-1], self.queue[i]
            src, msg = self.queue.pop()
            lost = msg.type.startswith("chain.") and self.rng.random() < self.drop
            if lost or (self.cut and msg.type == "chain.get"):
                continue
            try:
                out = self.nodes[msg.dst].handle(src, msg.type, dict(msg.payload), self.now)
            except UnknownChain:
                self.unknown[msg.dst] += 1
                continue
            self.send(msg.dst, out)
        raise AssertionError("the network did not go quiet")


def _has_all_blobs(chains: ChainSet) -> bool:
    for _, replica in chains.replicas():
        for height in range(1, replica.height + 1):
            block = replica.chain.store.block(height)
            assert block is not None
            for tx in block.txs:
                for key in referenced_blobs(tx):
                    data = replica.blobs.get(key)
                    if data is None or sha256(data) != key:
                        return False
    return True


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, ChainSet]]:
    configs = {cid: _config(cid) for cid in CHAINS}
    keys = {n: NodeKey.from_seed(bytes([40 + i]) * 32) for i, n in enumerate(["f0", "f1", "f2"])}
    out = {"w": open_chains(tmp_path / "w", configs, PUB)}
    out.update({n: open_chains(tmp_path / n, configs, k) for n, k in keys.items()})
    out["only_a"] = open_chains(tmp_path / "only_a", {"a": configs["a"]}, PUB)
    yield out
    for chains in out.values():
        chains.close()


@pytest.mark.parametrize(("seed", "drop"), [(1, 0.0), (2, 0.3)])
def test_followers_converge_on_every_chain_they_keep(
    nodes: dict[str, ChainSet], seed: int, drop: float
) -> None:
    w = nodes["w"]
    assert w.blobs is not None
    blobs = cast(MemoryBlobStore, w.blobs)  # Writer only calls put()
    # the same seed for both chains: their blocks reference the same blobs (one copy per node)
    writers = {cid: Writer(w[cid].replica.chain, blobs, random.Random(seed)) for cid in CHAINS}
    followers = [n for n in nodes if n != "w"]
    net = Net(seed, drop, nodes)
    net.cut = True
    rng = random.Random(seed)
    for _ in range(N_BLOCKS):
        for cid, writer in writers.items():
            block = writer.next_block()
            w[cid].append_block(block)
            payload: dict[str, Any] = {
                "block": block.to_bytes(),
                "height": block.height,
                CHAIN_FIELD: cid,
            }
            live = [n for n in followers if rng.random() < 0.4]
            net.send("w", [Outgoing(n, "chain.block", payload) for n in live])
        net.run()
    net.cut = False
    everyone = list(nodes)

    def done() -> bool:
        return all(
            nodes[n][cid].head == w[cid].head and _has_all_blobs(nodes[n])
            for n in followers
            for cid in nodes[n]
        )

    for _ in range(60):
        net.run()
        if done():
            break
        net.now += REQUEST_TIMEOUT_S + 1
        for name, chains in nodes.items():
            net.send(name, chains.tick(net.now))
            for cid in chains:
                others = [p for p in everyone if p != name]
                net.send(name, chains[cid].replica.sync.announce(others))
    assert done()
    for name in followers:
        for cid in nodes[name]:
            replica = nodes[name][cid].replica
            assert replica.height == N_BLOCKS
            assert replica.chain.state.root() == w[cid].replica.chain.state.root()
            assert replica.sync.failures["bad_blob"] == 0
    assert list(nodes["only_a"]) == ["a"]
    assert net.unknown["only_a"] > 0  # chain b's live blocks and statuses: counted, not kept
    assert not any(net.unknown[n] for n in followers if n != "only_a")
