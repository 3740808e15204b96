"""The vanilla scheme's protocol logic over an in-memory network, with a Byzantine device.

Every node runs the real `Daemon` and roles (real Ed25519, real torch training on digits)
in its own thread; only the transport is in memory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.codec import Codec, Message
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.daemon import Daemon
from node.keys import NodeKey
from node.learning.train import configure_torch_threads
from node.learning.weights import weights_to_bytes
from node.ledger.chain import verify_store
from node.messages import to_payload
from node.roles.base import NodeContext, Role
from node.schemes.vanilla import DeviceRole
from node.schemes.vanilla.messages import DeviceUpdate, GlobalModel
from node.transport import InMemoryNetwork
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind, NodeSpec

BYZANTINE = "dev1-0"


class ByzantineDevice(DeviceRole):
    """Before each honest update it sends garbage, a forgery, bad tensors, wrong rounds and a
    replay; the MEC must drop each under its reason and still use the honest update."""

    def __init__(self, network: InMemoryNetwork, impostor: Codec) -> None:
        self.network = network
        self.impostor = impostor

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        if isinstance(msg.payload, GlobalModel):
            self._attack(ctx, msg.payload.round)
        super().on_message(ctx, msg)

    def _update(self, ctx: NodeContext, round_no: int, weights: Any, key: NodeKey) -> DeviceUpdate:
        """An update message whose transaction matches its blob, signed by `key`."""
        blob = weights_to_bytes(weights)
        tx = Transaction.create(
            key,
            "task.record_update",
            round_no,
            {
                "task_id": "sim-task",
                "round": round_no,
                "blob": sha256(blob),
                "size": len(blob),
                "samples": 10,
            },
        )
        return DeviceUpdate(round_no, blob, tx.to_bytes(), 0.0, 0.0)

    def _attack(self, ctx: NodeContext, round_no: int) -> None:
        mec = str(ctx.me.parent)
        good = self.learner.weights()
        own = ctx.replica.key if ctx.replica is not None else NodeKey.generate()
        # Frames that fail in the codec: garbage, and a frame signed by a key not in the roster.
        self.network.deliver(mec, b"\x93garbage\xff" * 7)
        self.network.deliver(mec, self.impostor.encode("update", {"round": round_no}))
        # Well-signed messages carrying bad updates.
        nan = {k: np.full_like(v, np.nan) for k, v in good.items()}
        ctx.send(mec, self._update(ctx, round_no, nan, own))
        wrong = {k: v.reshape(-1)[:1].copy() for k, v in good.items()}
        ctx.send(mec, self._update(ctx, round_no, wrong, own))
        ctx.send(mec, self._update(ctx, round_no + 7, good, own))
        stolen = self._update(ctx, round_no, good, NodeKey.generate())  # tx of another key
        ctx.send(mec, stolen)
        forged = replace(self._update(ctx, round_no, good, own), blob=weights_to_bytes(nan))
        ctx.send(mec, forged)  # the blob is not the one the transaction names
        # Well-signed messages malformed in form: dropped by the typed decoding.
        valid = to_payload(self._update(ctx, round_no, good, own))
        ctx.send(mec, "update", {**valid, "round": "1"})
        ctx.send(mec, "update", {**valid, "accuracy": None})
        assert isinstance(ctx, Daemon)
        old = ctx._codec.encode("update", to_payload(self._update(ctx, round_no - 1, good, own)))
        self.network.deliver(mec, old)  # correctly signed but for a past round
        self.network.deliver(mec, old)  # the same frame again: a replay


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def test_vanilla_completes_and_drops_every_bad_message(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=2, devices_per_mec=3, seed=5)
    topology = net.topology
    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=6,
        local_epochs=2,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=30,
    )
    impostor = Codec(BYZANTINE, NodeKey.generate(), net.roster)

    def byzantine(spec: NodeSpec) -> Role | None:
        return ByzantineDevice(net.network, impostor) if spec.id == BYZANTINE else None

    nodes = net.run(
        tmp_path,
        learning,
        seed=5,
        reward_pool=600,
        config={"startup_timeout_s": 60},
        role=byzantine,
        join_timeout_s=240,
    )

    pub_rounds = [r for r in read_records(tmp_path / "pub") if r["event"] == "round"]
    assert [r["round"] for r in pub_rounds] == [1, 2, 3, 4, 5, 6]
    assert all(r["contributors"] == 6 for r in pub_rounds)
    assert pub_rounds[-1]["accuracy"] >= 0.9
    mec1 = nodes["mec1"].drops
    assert mec1["malformed"] == 6
    assert mec1["bad_signature"] == 6
    assert mec1["replay"] == 6
    assert mec1["bad_model"] == 6 * 2  # NaN weights and wrong shapes, every round
    assert mec1["bad_tx"] == 6 * 2  # another key's transaction, a blob not matching it
    assert mec1["stale_round"] == 6 * 2  # a past and a future round, every round
    assert mec1["bad_payload"] == 6 * 2  # a round as a string, an accuracy of None
    assert nodes["mec0"].drops == {}, "the honest MEC saw nothing bad"
    assert all(n.drops == {} for nid, n in nodes.items() if nid not in {"mec1"})
    heads = {
        nid: (d.replica.height, d.replica.chain.head.hash)
        for nid, d in nodes.items()
        if d.replica is not None
    }
    assert len(set(heads.values())) == 1, "every replica holds the same chain"
    pub_chain = nodes["pub"].replica
    assert pub_chain is not None
    assert pub_chain.height == 1 + 6 + 1  # publish, 6 rounds, rewards
    assert verify_store(pub_chain.chain.store).ok
    balances = dict(pub_chain.chain.state.items("token.balance"))
    assert sum(balances.values()) == 600
    assert set(balances) >= {n.id for n in topology.of_kind(NodeKind.DEVICE)}
