"""The gossip-fedavg scheme over the in-memory network: real daemons and roles (Ed25519,
torch on digits), each in its own thread; updates and blocks travel by D2D gossip."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from node.codec import Message
from node.config import LearningConfig, NodePlan
from node.core.encoding import canonical, sha256
from node.core.tx import Transaction
from node.gossip import CODEC_TYPE
from node.keys import NodeKey
from node.ledger.chain import verify_store
from node.roles.base import NodeContext, Role
from node.schemes.base import PlanInputs
from node.schemes.gossip_fedavg import GossipFedAvgScheme
from node.schemes.gossip_fedavg.roles import (
    GossipDeviceRole,
    UpdateCheck,
    blocks_topic,
    update_item,
    updates_topic,
)
from node.schemes.gossip_fedavg.scheme import d2d_neighbours
from node.schemes.vanilla.messages import DeviceUpdate
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind, NodeSpec

ROUNDS = 3
PARAMS = {"fanout": 1, "ttl": 4, "heartbeat_s": 0.1, "want_timeout_s": 0.5}
CORRUPTER = "dev1-0"


class CorruptingDevice(GossipDeviceRole):
    """An honest trainer whose every relayed gossip item (not its own update) leaves with a
    flipped byte: its neighbours must drop and count those copies and still get every
    update and block from the others."""

    def start(self, ctx: NodeContext) -> None:
        self.own: set[bytes] = set()
        self.wrapped = cast(NodeContext, _Corrupting(ctx, self.own))
        super().start(self.wrapped)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        super().on_message(self.wrapped, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        super().on_timer(self.wrapped, name)

    def send_update(self, ctx: NodeContext, update: DeviceUpdate) -> None:
        self.own.add(update_item(update.blob, update.tx))
        super().send_update(ctx, update)


class _Corrupting:
    """The node, except that gossip items other than `own` leave with a flipped byte."""

    def __init__(self, ctx: NodeContext, own: set[bytes]) -> None:
        self._ctx = ctx
        self._own = own

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def multicast(self, dsts: Iterable[str], msg_type: str, payload: Mapping[str, Any]) -> None:
        data = payload.get("d")
        if msg_type == CODEC_TYPE and isinstance(data, bytes) and data not in self._own:
            payload = {**payload, "d": data[:-1] + bytes([data[-1] ^ 1])}
        self._ctx.multicast(dsts, msg_type, payload)


def learning() -> LearningConfig:
    return learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=60,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VanillaNet, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("gossip-fedavg")
    net = VanillaNet.build(mecs=2, devices_per_mec=4, seed=11)
    scheme = GossipFedAvgScheme(GossipFedAvgScheme.parse_params(PARAMS))

    def role(spec: NodeSpec) -> Role:
        plan = NodePlan(node_id=spec.id, role=str(spec.kind), chains=("main",))
        if spec.id == CORRUPTER:
            return CorruptingDevice()
        return scheme.role(plan)

    nodes = net.run(
        tmp_path,
        learning(),
        seed=11,
        reward_pool=800,
        config={"startup_timeout_s": 60, "scheme_params": PARAMS},
        role=role,
        join_timeout_s=300,
    )
    return tmp_path, net, nodes


def records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r["event"] == event]


def test_every_update_reaches_its_mec_by_gossip_and_every_replica_agrees(
    run: tuple[Path, VanillaNet, dict[str, Any]],
) -> None:
    tmp_path, _, nodes = run

    pub_rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in pub_rounds] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == 8 for r in pub_rounds)
    mec_rounds = [r for m in ("mec0", "mec1") for r in records(tmp_path, m, "round")]
    assert all(r["forwarded_on"] == "all_answered" for r in mec_rounds)
    heads = {nid: (d.replica.height, d.replica.chain.head.hash) for nid, d in nodes.items()}
    assert len(set(heads.values())) == 1, "every replica holds the same chain"
    final = nodes["pub"].replica.height
    assert final == 1 + ROUNDS + 1
    assert verify_store(nodes["pub"].replica.chain.store).ok


def test_gossip_counters_show_the_traffic_and_the_corrupted_copies(
    run: tuple[Path, VanillaNet, dict[str, Any]],
) -> None:
    tmp_path, net, nodes = run
    devices = [n.id for n in net.topology.of_kind(NodeKind.DEVICE)]
    final = nodes["pub"].replica.height

    gossip = {nid: records(tmp_path, nid, "gossip")[0] for nid in [*devices, "mec0", "mec1"]}
    for dev in devices:
        assert gossip[dev]["gossip_published"] == ROUNDS  # its own update each round
        assert 1 <= gossip[dev]["gossip_delivered"] <= final  # blocks, each at most once
    for mec in ("mec0", "mec1"):
        assert gossip[mec]["gossip_delivered"] == 4 * ROUNDS  # every update of its devices
        assert gossip[mec]["gossip_published"] >= final - 1  # the blocks it spread
    assert sum(g["gossip_relayed"] for g in gossip.values()) > 0
    assert sum(g["gossip_pulled"] for g in gossip.values()) > 0  # fanout 1: pull fills in
    blamed = {nid: g["gossip_invalid_from"] for nid, g in gossip.items() if g["gossip_invalid"]}
    assert blamed, "the corrupted copies were dropped and counted"
    assert all(set(b) == {CORRUPTER} for b in blamed.values())
    neighbours = {*d2d_neighbours(net.topology, CORRUPTER), "mec1"}
    assert set(blamed) <= neighbours


def test_plan_gives_devices_their_d2d_group_and_refuses_pbft() -> None:
    net = VanillaNet.build(mecs=2, devices_per_mec=3, seed=1)
    keys = {nid: k.public_key for nid, k in net.keys.items()}
    scheme = GossipFedAvgScheme()
    inputs = PlanInputs(run_id="r", task_id="t", seed=1, reward_pool=0, consensus="single")

    plan = scheme.plan(net.topology, keys, inputs)

    assert plan.nodes["dev0-1"].peers == ("pub", "dev0-0", "dev0-2", "mec0")
    assert plan.nodes["mec1"].peers == ("pub", "dev1-0", "dev1-1", "dev1-2")
    assert plan.nodes["dev0-1"].role == "device" and plan.nodes["dev0-1"].chains == ("main",)
    assert updates_topic("mec0") != blocks_topic("mec0")
    with pytest.raises(ValueError, match="allowed: single"):
        scheme.plan(net.topology, keys, PlanInputs("r", "t", 1, 0, "pbft"))
    with pytest.raises(ValueError, match="fanout"):
        GossipFedAvgScheme.parse_params({"fanout": 0})


def _update_item(
    key: NodeKey, tx_blob: bytes = b"weights", tx_type: str = "task.record_update"
) -> bytes:
    payload = {"task_id": "t", "round": 1, "blob": sha256(tx_blob), "size": len(tx_blob)}
    tx = Transaction.create(key, tx_type, 0, {**payload, "samples": 5})
    return update_item(b"weights", tx.to_bytes())


def test_the_update_check_refuses_forgeries_outsiders_and_mismatches() -> None:
    member, outsider = NodeKey.generate(), NodeKey.generate()
    check = UpdateCheck({member.public_key: "dev0-0"}, 1 << 20)
    good = _update_item(member)

    device, update = check.parse(good)
    assert (device, update.round, update.blob) == ("dev0-0", 1, b"weights")
    assert check(good).ok
    assert check(_update_item(outsider)).reason == "not_member"
    assert check(_update_item(member, tx_blob=b"other")).reason == "blob_mismatch"
    assert check(_update_item(member, tx_type="task.record_global")).reason == "bad_tx"
    for i in range(len(good)):  # every single-byte flip is refused
        flipped = good[:i] + bytes([good[i] ^ 1]) + good[i + 1 :]
        assert not check(flipped).ok, i
    assert check(canonical({"blob": b"x", "tx": b"y", "extra": 1})).reason == "malformed"
    assert check(b"\xc1garbage").reason == "malformed"
