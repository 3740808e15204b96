"""A device trains off its event loop (`ctx.run_background`): the block recording round r-1,
which the publisher commits right after sending round r's global model, reaches the device's
ledger while the device trains round r — straight from the publisher (vanilla) or by the
group's D2D gossip, which the device relays (gossip-fedavg). Each training of round r >= 2
waits (on an event, with a generous deadline) until that block is stored: with training on
the loop, nothing is stored while it trains and the wait runs out.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from node.core.block import Block
from node.learning.train import TrainResult, configure_torch_threads
from node.roles.base import NodeContext, Role
from node.schemes.gossip_fedavg.roles import GossipDeviceRole
from node.schemes.vanilla import DeviceRole
from node.schemes.vanilla.common import replica_of
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind, NodeSpec

ROUNDS = 3
WAIT_S = 60.0  # generous: the machine may be loaded
GOSSIP = {"fanout": 1, "ttl": 4, "heartbeat_s": 0.1, "want_timeout_s": 0.5}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


class Watch:
    """Notes, on the device's loop, each block stored and whether a training was out then;
    makes round r's training (on the worker) wait until round r-1's block is stored."""

    def watch(self, ctx: NodeContext, role: DeviceRole) -> None:
        self.events: list[tuple[str, int, int | None]] = []  # (what, round, training round)
        self.recorded: dict[int, threading.Event] = {
            r: threading.Event() for r in range(ROUNDS + 1)
        }
        self.waited: dict[int, bool] = {}
        replica_of(ctx).chain.subscribe(lambda block: self._stored(role, block))
        train = role.learner.train

        def gated(round_no: int, *args: Any) -> TrainResult:
            if round_no >= 2:
                self.waited[round_no] = self.recorded[round_no - 1].wait(WAIT_S)
            return train(round_no, *args)

        role.learner.train = gated  # type: ignore[method-assign,assignment]

    def _stored(self, role: DeviceRole, block: Block) -> None:
        training = role._training.round if role._training is not None else None
        for tx in block.txs:
            if tx.type == "task.record_update":
                self.events.append(("stored", tx.payload["round"], training))
                self.recorded[tx.payload["round"]].set()
                return


class WatchedDevice(Watch, DeviceRole):
    def start(self, ctx: NodeContext) -> None:
        super().start(ctx)
        self.watch(ctx, self)


class WatchedGossipDevice(Watch, GossipDeviceRole):
    def start(self, ctx: NodeContext) -> None:
        super().start(ctx)
        self.watch(ctx, self)


@pytest.mark.parametrize("scheme", ["vanilla", "gossip-fedavg"])
def test_a_device_stores_the_last_rounds_block_while_it_trains(tmp_path: Path, scheme: str) -> None:
    net = VanillaNet.build(mecs=1, devices_per_mec=3, seed=5)
    learning = learning_config(
        rounds=ROUNDS, local_epochs=1, batch_size=16, learning_rate=0.1, round_deadline_s=300
    )
    params = GOSSIP if scheme == "gossip-fedavg" else {}
    devices: dict[str, Watch] = {}

    def role(spec: NodeSpec) -> Role | None:
        if spec.kind != NodeKind.DEVICE:
            return None
        device = WatchedGossipDevice() if scheme == "gossip-fedavg" else WatchedDevice()
        devices[spec.id] = device
        return device

    net.run(
        tmp_path,
        learning,
        seed=5,
        reward_pool=100,
        config={"startup_timeout_s": 120, "scheme_params": params},
        role=role,
        scheme=scheme,
        params=params,
    )
    during = 0
    for nid, device in devices.items():
        # every round r >= 2 found round r-1's block stored (at the latest while it waited
        # to train: with training on the loop, the wait runs out)
        assert device.waited == {r: True for r in range(2, ROUNDS + 1)}, nid
        stored = {r: training for what, r, training in device.events if what == "stored"}
        assert sorted(stored) == list(range(1, ROUNDS + 1)), nid
        # stored while round r trained (unless the block overtook round r's global model
        # on the way: a race, the block comes from the publisher, the global via the MEC)
        during += sum(stored[r - 1] == r for r in range(2, ROUNDS + 1))
        rounds = [r for r in read_records(tmp_path / nid) if r["event"] == "round"]
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1)), nid
    assert during > 0, {nid: d.events for nid, d in devices.items()}
    pub = [r for r in read_records(tmp_path / "pub") if r["event"] == "round"]
    assert [r["contributors"] for r in pub] == [3] * ROUNDS
