"""The vanilla round's critical path: the publisher sends round r+1's global model before it
evaluates and records round r; the model travels as the bytes the publisher encoded once
(the MEC forwards them unchanged) and is the blob the chain records, so no node fetches with
``blob.get`` a global model it holds (only the last round's, never sent as a global, or one
whose block overtook the global on the way).

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.codec import Message
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.learning.train import configure_torch_threads
from node.ledger.sync import Outgoing
from node.roles.base import NodeContext, Role
from node.schemes.vanilla import DeviceRole, MecRole, PublisherRole
from node.schemes.vanilla.messages import GlobalModel
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind, NodeSpec

ROUNDS = 4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


class WatchedPublisher(PublisherRole):
    """Notes, whenever it records a round, which round its global model is out for."""

    def __init__(self) -> None:
        self.recorded: list[tuple[int, int]] = []  # (round recorded, round in progress)

    def _record_round(self, ctx: NodeContext, round_no: int, *args: Any) -> None:
        self.recorded.append((round_no, self.round))
        super()._record_round(ctx, round_no, *args)


class GlobalsKept:
    """Keeps the model bytes of each global a node receives, and notes every ``blob.get`` its
    ledger replica sends for a global model the node already holds (a re-fetch)."""

    received: dict[int, bytes]
    refetched: list[bytes]

    def watch_fetches(self, ctx: NodeContext) -> None:
        self.received, self.refetched = {}, []
        assert ctx.replica is not None
        sync = ctx.replica.sync
        handle, tick = sync.handle, sync.tick

        def note(out: list[Outgoing]) -> list[Outgoing]:
            held = {sha256(model) for model in self.received.values()}
            self.refetched += [
                o.payload["hash"] for o in out if o.type == "blob.get" and o.payload["hash"] in held
            ]
            return out

        sync.handle = lambda *a: note(handle(*a))  # type: ignore[method-assign]
        sync.tick = lambda now: note(tick(now))  # type: ignore[method-assign]

    def keep(self, msg: Message) -> None:
        if isinstance(msg.payload, GlobalModel):
            self.received[msg.payload.round] = msg.payload.model


class WatchedMec(GlobalsKept, MecRole):
    def start(self, ctx: NodeContext) -> None:
        self.watch_fetches(ctx)
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.keep(msg)
        super().on_message(ctx, msg)


class WatchedDevice(GlobalsKept, DeviceRole):
    def start(self, ctx: NodeContext) -> None:
        self.watch_fetches(ctx)
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.keep(msg)
        super().on_message(ctx, msg)


def test_next_global_goes_out_first_and_is_the_recorded_blob(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=2, devices_per_mec=2, seed=3, fixed_keys=True)
    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=120,
    )
    roles: dict[str, Role] = {}

    def watched(spec: NodeSpec) -> Role:
        kinds = {NodeKind.PUBLISHER: WatchedPublisher, NodeKind.MEC: WatchedMec}
        roles[spec.id] = kinds.get(spec.kind, WatchedDevice)()
        return roles[spec.id]

    nodes = net.run(
        tmp_path, learning, seed=3, reward_pool=100, config={"startup_timeout_s": 120}, role=watched
    )
    pub = roles["pub"]
    assert isinstance(pub, WatchedPublisher)
    # round r is evaluated and recorded once round r+1's global model is out (the last
    # round has no next one)
    assert pub.recorded == [(r, min(r + 1, ROUNDS)) for r in range(1, ROUNDS + 1)]
    records = [r for r in read_records(tmp_path / "pub") if r["event"] == "round"]
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == 4 for r in records)

    # what the chain records as round r's global model is what every MEC and device got
    # as round r+1's, byte for byte
    replica = nodes["pub"].replica
    assert replica is not None
    recorded: dict[int, bytes] = {}
    for height in range(1, replica.height + 1):
        raw = replica.chain.store.block_bytes(height)
        assert raw is not None
        for tx in _txs(raw):
            if tx.type == "task.record_global":
                recorded[tx.payload["round"]] = tx.payload["blob"]
    assert sorted(recorded) == list(range(1, ROUNDS + 1))
    others = {nid: r for nid, r in roles.items() if isinstance(r, WatchedMec | WatchedDevice)}
    for nid, role in others.items():
        assert sorted(role.received) == list(range(1, ROUNDS + 1)), nid
        for r in range(1, ROUNDS):
            assert sha256(role.received[r + 1]) == recorded[r], (nid, r)
        node_replica = nodes[nid].replica
        assert node_replica is not None
        assert all(node_replica.blobs.get(recorded[r]) is not None for r in range(1, ROUNDS)), nid
    # the global models the nodes received need no fetching: a node asks for the last
    # round's (never sent as a global), and for another only when its block overtook the
    # global on the way (a race: the block comes from the publisher, the global via the MEC)
    assert all(not role.refetched for role in others.values()), {
        nid: role.refetched for nid, role in others.items()
    }
    heads = {(d.replica.height, d.replica.chain.head.hash) for d in nodes.values() if d.replica}
    assert len(heads) == 1, "every replica holds the same chain"


def _txs(raw: bytes) -> list[Transaction]:
    from node.core.block import Block

    return list(Block.from_bytes(raw).txs)
