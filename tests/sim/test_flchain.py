"""The flchain scheme over the in-memory network: real daemons and roles (Ed25519, PBFT
among the MECs, torch on digits), each in its own thread. 3 MECs x 4 devices; mec1 tampers
with one device's update and mec2 malfunctions from round 2 (Byzantine MECs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from node.codec import Message
from node.config import LearningConfig
from node.contracts import flchain, task
from node.core.tx import Transaction
from node.daemon import Daemon
from node.learning.train import configure_torch_threads
from node.ledger.chain import verify_store
from node.roles.base import NodeContext, Role
from node.schemes import PlanInputs
from node.schemes.flchain.mec import FlchainMecRole
from node.schemes.flchain.messages import ChannelModel, ChannelShare, SharedUpdate
from node.schemes.flchain.scheme import FlchainScheme, channel_mecs
from node.schemes.vanilla.messages import GlobalModel, Stop
from orchestrator.collect import read_records
from tests.sim.vanilla_net import TASK_ID, VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind

ROUNDS = 3
MECS = ("mec0", "mec1", "mec2")
TAMPERER, TARGET = "mec1", "dev1-0"
MALFUNCTIONING = "mec2"
BEHAVIOURS: dict[str, list[dict[str, Any]]] = {
    TAMPERER: [
        {
            "from_round": 2,
            "name": "tamper",
            "params": {"target": TARGET, "action": "scale", "factor": 10.0},
        }
    ],
    MALFUNCTIONING: [
        {"from_round": 2, "name": "malfunction", "params": {"mode": "random", "scale": 0.5}}
    ],
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def learning(deadline_s: float = 120) -> LearningConfig:
    return learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=deadline_s,  # 120: generous, rounds end on answers, not the deadline
    )


def run_flchain(
    net: VanillaNet,
    tmp_path: Path,
    params: dict[str, Any],
    extra: dict[str, Any],
    *,
    deadline_s: float = 120,
    startup_timeout_s: float = 120,
    roles: dict[str, Role] | None = None,
    aggregator: dict[str, Any] | None = None,
) -> dict[str, Daemon]:
    """Every daemon of the flchain scheme to the end, each in a thread (`VanillaNet.run` with
    ``ledger.consensus: pbft``); `extra`: behaviours by node id; `roles`: replacement roles by
    node id."""
    config: dict[str, Any] = {
        "startup_timeout_s": startup_timeout_s,
        "behaviours": lambda node_id: extra.get(node_id, []),
    }
    if aggregator:
        config["aggregator"] = aggregator
    return net.run(
        tmp_path,
        learning(deadline_s),
        seed=5,
        reward_pool=1200,
        config=config,
        role=lambda spec: (roles or {}).get(spec.id),
        join_timeout_s=600,
        scheme="flchain",
        params=params,
        consensus="pbft",
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Daemon]]:
    tmp_path = tmp_path_factory.mktemp("flchain")
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=5, fixed_keys=True)
    return tmp_path, run_flchain(net, tmp_path, {"channels": 1}, BEHAVIOURS)


def records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r["event"] == event]


def test_every_round_is_recorded_by_the_mec_chain_and_every_replica_agrees(
    run: tuple[Path, dict[str, Daemon]],
) -> None:
    tmp_path, nodes = run

    rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == 12 and r["missing"] == [] for r in rounds)
    assert rounds[0]["accuracy"] > 0.3  # digits, 10 classes: chance is 0.1
    heads = {nid: (d.replica.height, d.replica.chain.head.hash) for nid, d in nodes.items()}
    assert len(set(heads.values())) == 1, "every replica holds the same chain"
    assert nodes["pub"].replica.height == 1 + ROUNDS + 1  # publish, rounds, rewards
    assert verify_store(nodes["mec0"].replica.chain.store).ok
    for mec in MECS:  # every MEC computed every round from all three shares
        channel = records(tmp_path, mec, "channel")
        assert [c["round"] for c in channel] == list(range(1, ROUNDS + 1))
        assert all(c["computed_on"] == "all_shares" and c["shares"] == 3 for c in channel)


def test_the_state_trie_holds_the_majority_model_and_outvotes_the_malfunctioning_mec(
    run: tuple[Path, dict[str, Daemon]],
) -> None:
    tmp_path, nodes = run
    state = nodes["dev0-0"].replica.chain.state

    entries = {r: flchain.channel_global(state, TASK_ID, 0, r) for r in range(1, ROUNDS + 1)}
    assert entries[1] is not None and entries[1]["holders"] == list(MECS)
    for r in range(2, ROUNDS + 1):
        assert entries[r] is not None and entries[r]["holders"] == ["mec0", "mec1"]
        recorded = state.get(task.NS_GLOBAL, task.global_key(TASK_ID, r))
        assert recorded["blob"] == entries[r]["blob"], "the publisher took the majority's model"
    outvoted = records(tmp_path, "pub", "outvoted")
    assert [(o["round"], o["mecs"]) for o in outvoted] == [
        (2, [MALFUNCTIONING]),
        (3, [MALFUNCTIONING]),
    ]


def test_what_a_mec_does_to_its_own_devices_updates_is_not_caught_but_auditable(
    run: tuple[Path, dict[str, Daemon]],
) -> None:
    """FLchain's trust model: the tampered and the garbage updates are aggregated (no device
    is rejected), yet the chain holds both the devices' signed hashes and the MECs'
    records, which differ exactly where a MEC altered an update."""
    tmp_path, nodes = run
    state = nodes["pub"].replica.chain.state
    rounds = records(tmp_path, "pub", "round")
    assert all(r["rejected"] == [] for r in rounds)

    altered: dict[int, set[str]] = {}
    for r in range(1, ROUNDS + 1):
        for mec in MECS:
            key = flchain.updates_key(TASK_ID, 0, r, mec)
            for node, blob, _ in state.get(flchain.NS_UPDATES, key)["updates"]:
                signed = state.get(task.NS_UPDATE, task.update_key(TASK_ID, r, node))
                if signed["blob"] != blob:
                    altered.setdefault(r, set()).add(node)
    mec2_devices = {f"dev2-{i}" for i in range(4)}
    assert altered == {r: {TARGET, *mec2_devices} for r in range(2, ROUNDS + 1)}


def test_the_attacks_cost_flchain_accuracy(
    run: tuple[Path, dict[str, Daemon]], tmp_path: Path
) -> None:
    """The same run without the Byzantine MECs ends well above the attacked one (what the
    paper's Fig. 5a shows for FLchain under malfunctioning MECs)."""
    attacked_dir, _ = run
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=5, fixed_keys=True)

    run_flchain(net, tmp_path, {"channels": 1}, {})

    clean = records(tmp_path, "pub", "round")[-1]["accuracy"]
    attacked = records(attacked_dir, "pub", "round")[-1]["accuracy"]
    assert clean > attacked + 0.2, (clean, attacked)


class DownMec(Role):
    """A MEC that is down for the whole run (it only honours ``stop``, so the test ends)."""

    def start(self, ctx: NodeContext) -> None:
        pass

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        if isinstance(msg.payload, Stop):
            ctx.stop()


def test_a_down_mec_holds_every_round_to_the_deadline_and_loses_its_devices(
    tmp_path: Path,
) -> None:
    """Synchronous transfer: the channel's other MECs wait for the down MEC's share until
    90% of the deadline, the publisher for its model until the deadline; the round then
    goes on without it and its devices (PBFT, 4 replicas with the publisher, tolerates it)."""
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)
    deadline = 8.0

    nodes = run_flchain(
        net,
        tmp_path,
        {"channels": 1},
        {},
        deadline_s=deadline,
        startup_timeout_s=5,
        roles={"mec2": DownMec()},
    )

    rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    for r in rounds:
        assert r["contributors"] == 4
        assert r["missing"] == ["mec2"]
        assert r["round_time_s"] >= deadline  # the publisher waited for mec2's model
    for mec in ("mec0", "mec1"):
        channel = records(tmp_path, mec, "channel")
        assert all(c["computed_on"] == "sync_deadline" and c["absent"] == ["mec2"] for c in channel)
    state = nodes["mec0"].replica.chain.state
    for r in range(1, ROUNDS + 1):
        assert flchain.channel_global(state, TASK_ID, 0, r)["holders"] == ["mec0", "mec1"]  # type: ignore[index]
    live = [n for n in nodes if n != "mec2"]
    assert len({nodes[n].replica.chain.head.hash for n in live}) == 1


class _AlteringInTransit:
    """The node, except that the update of dev1-0 it shares leaves with one byte altered
    (its MEC's signed record unchanged): a share corrupted on the way."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def multicast(self, dsts: Iterable[str], msg: object, payload: Any = None) -> None:
        if isinstance(msg, SharedUpdate) and msg.node == "dev1-0":
            msg = replace(msg, blob=msg.blob[:-1] + bytes([msg.blob[-1] ^ 1]))
        self._ctx.multicast(dsts, msg, payload)


class AlteringMec(FlchainMecRole):
    """An honest MEC whose shares are altered in transit."""

    def start(self, ctx: NodeContext) -> None:
        self.wrapped = cast(NodeContext, _AlteringInTransit(ctx))
        super().start(self.wrapped)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        super().on_message(self.wrapped, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        super().on_timer(self.wrapped, name)


def test_a_share_altered_in_transit_is_refused_by_the_channel(tmp_path: Path) -> None:
    """The record's hashes catch it: the other MECs drop mec1's share every round and
    compute without it at the sync deadline; mec1, which has every share, holds another
    model and is outvoted."""
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(
        net, tmp_path, {"channels": 1}, {}, deadline_s=8.0, roles={"mec1": AlteringMec()}
    )

    assert nodes["mec0"].drops["bad_share"] == ROUNDS
    assert nodes["mec2"].drops["bad_share"] == ROUNDS
    rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == 4 for r in rounds)  # mec1's devices are left out
    for mec in ("mec0", "mec2"):
        channel = records(tmp_path, mec, "channel")
        assert all(c["computed_on"] == "sync_deadline" and c["absent"] == ["mec1"] for c in channel)
    outvoted = records(tmp_path, "pub", "outvoted")
    assert [o["mecs"] for o in outvoted] == [["mec1"]] * ROUNDS


class _RecordLast:
    """The node, except that its share's record leaves after the updates it names."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._held: tuple[list[str], ChannelShare, int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def multicast(self, dsts: Iterable[str], msg: object, payload: Any = None) -> None:
        if isinstance(msg, ChannelShare):
            named = len(Transaction.from_bytes(msg.record).payload["updates"])
            self._held = (list(dsts), msg, named) if named else None
        if not isinstance(msg, ChannelShare) or self._held is None:
            self._ctx.multicast(dsts, msg, payload)
        if isinstance(msg, SharedUpdate) and self._held is not None:
            held_dsts, share, left = self._held
            self._held = (held_dsts, share, left - 1)
            if left - 1 == 0:
                self._ctx.multicast(held_dsts, share)
                self._held = None


class RecordLastMec(FlchainMecRole):
    """An honest MEC whose record reaches its peers after its updates."""

    def start(self, ctx: NodeContext) -> None:
        self.wrapped = cast(NodeContext, _RecordLast(ctx))
        super().start(self.wrapped)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        super().on_message(self.wrapped, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        super().on_timer(self.wrapped, name)


def test_updates_that_come_before_their_record_are_kept(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(
        net, tmp_path, {"channels": 1}, {}, deadline_s=30.0, roles={"mec1": RecordLastMec()}
    )

    assert all(nodes[m].drops.get("bad_share", 0) == 0 for m in ("mec0", "mec2"))
    for mec in ("mec0", "mec2"):
        channel = records(tmp_path, mec, "channel")
        assert [c["computed_on"] for c in channel] == ["all_shares"] * ROUNDS
    assert all(r["contributors"] == 6 for r in records(tmp_path, "pub", "round"))


class _HidingTx:
    """The node, except that dev1-0's signed update transaction is left out of everything
    it sends (its share and its model for the publisher), while its update is shared."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def _strip(self, msg: object) -> object:
        key = self._ctx.config.roster["dev1-0"]
        if isinstance(msg, ChannelShare | ChannelModel):
            kept = tuple(t for t in msg.txs if Transaction.from_bytes(t).sender.hex() != key)
            return replace(msg, txs=kept)
        return msg

    def multicast(self, dsts: Iterable[str], msg: object, payload: Any = None) -> None:
        self._ctx.multicast(dsts, self._strip(msg), payload)

    def send(self, dst: str, msg: object, payload: Any = None) -> None:
        self._ctx.send(dst, self._strip(msg), payload)


class HidingMec(FlchainMecRole):
    """A MEC that shares an update without the device's signed transaction."""

    def start(self, ctx: NodeContext) -> None:
        self.wrapped = cast(NodeContext, _HidingTx(ctx))
        super().start(self.wrapped)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        super().on_message(self.wrapped, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        super().on_timer(self.wrapped, name)


def test_a_share_without_the_devices_signed_transaction_is_refused(tmp_path: Path) -> None:
    """Every update a MEC shares must come with its device's signed update transaction (the
    chain's signature): else the round block would name a contributor without an update on
    chain, the task contract would revert the round's record, and every later round with it.
    The other MECs refuse the share; every round is recorded without mec1's devices."""
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(
        net, tmp_path, {"channels": 1}, {}, deadline_s=8.0, roles={"mec1": HidingMec()}
    )

    assert nodes["mec0"].drops["bad_share"] == ROUNDS
    task_record = nodes["pub"].replica.chain.state.get(task.NS, TASK_ID)
    assert task_record["round"] == ROUNDS, "every round's global model is on chain"
    assert all(r["contributors"] == 4 for r in records(tmp_path, "pub", "round"))


def test_the_publisher_leaves_out_contributors_without_a_signed_update(tmp_path: Path) -> None:
    """One MEC per channel: nobody checks mec1's share, so its model names dev1-0 without
    dev1-0's transaction; the publisher records the round without it (and says why)."""
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(net, tmp_path, {"channels": 3}, {}, roles={"mec1": HidingMec()})

    task_record = nodes["pub"].replica.chain.state.get(task.NS, TASK_ID)
    assert task_record["round"] == ROUNDS, "every round's global model is on chain"
    for r in records(tmp_path, "pub", "round"):
        assert r["contributors"] == 5
        assert r["rejected_reasons"] == {"dev1-0": "unsigned_update"}


class LateMec(FlchainMecRole):
    """An honest MEC that takes each round's global model only after a peer's share of that
    round has reached it (as if the model came late): that share is early, kept and used."""

    def start(self, ctx: NodeContext) -> None:
        self.held: Message | None = None
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        body = msg.payload
        if isinstance(body, GlobalModel) and msg.sender == "pub":
            self.held = msg
            return
        super().on_message(ctx, msg)
        held = self.held
        if isinstance(body, ChannelShare) and held is not None and body.round == held.payload.round:
            self.held = None
            super().on_message(ctx, held)


def test_a_share_that_comes_before_the_global_model_is_kept_for_its_round(
    tmp_path: Path,
) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(net, tmp_path, {"channels": 1}, {}, roles={"mec2": LateMec()})

    assert nodes["mec2"].drops.get("stale_round", 0) == 0
    channel = records(tmp_path, "mec2", "channel")
    assert [(c["computed_on"], c["shares"]) for c in channel] == [("all_shares", 3)] * ROUNDS
    assert all(r["contributors"] == 6 for r in records(tmp_path, "pub", "round"))


def test_every_mec_selects_with_an_accuracy_rule_alike(tmp_path: Path) -> None:
    """top_k_accuracy: each MEC measures every shared update's accuracy itself and keeps the
    same k, so the channel agrees on one model; the 2 of 6 left out are rejected."""
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5, fixed_keys=True)
    aggregator = {"name": "top_k_accuracy", "params": {"k": 4}}

    nodes = run_flchain(net, tmp_path, {"channels": 1}, {}, aggregator=aggregator)

    for r in records(tmp_path, "pub", "round"):
        assert r["contributors"] == 4
        assert len(r["rejected"]) == 2
        assert set(r["rejected_reasons"].values()) == {"not_top_k"}
    assert records(tmp_path, "pub", "outvoted") == []
    state = nodes["pub"].replica.chain.state
    for r in range(1, ROUNDS + 1):
        entry = flchain.channel_global(state, TASK_ID, 0, r)
        assert entry is not None and entry["holders"] == list(MECS)


def test_two_channels_keep_their_own_models_and_share_only_inside(tmp_path: Path) -> None:
    """4 MECs (PBFT among them alone) in 2 channels: each channel's MECs exchange shares
    with each other only and agree on their channel's model; the round's model averages
    the two."""
    net = VanillaNet.build(mecs=4, devices_per_mec=2, seed=5, fixed_keys=True)

    nodes = run_flchain(net, tmp_path, {"channels": 2}, {})

    rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == 8 for r in rounds)
    for mec in ("mec0", "mec1", "mec2", "mec3"):
        channel = records(tmp_path, mec, "channel")
        assert all(c["computed_on"] == "all_shares" and c["shares"] == 2 for c in channel)
    state = nodes["pub"].replica.chain.state
    for r in range(1, ROUNDS + 1):
        first = flchain.channel_global(state, TASK_ID, 0, r)
        second = flchain.channel_global(state, TASK_ID, 1, r)
        assert first is not None and first["holders"] == ["mec0", "mec1"]
        assert second is not None and second["holders"] == ["mec2", "mec3"]
        assert first["blob"] != second["blob"]
        recorded = state.get(task.NS_GLOBAL, task.global_key(TASK_ID, r))["blob"]
        assert recorded not in (first["blob"], second["blob"])  # their average
    assert records(tmp_path, "pub", "outvoted") == []
    finality = nodes["pub"].replica.chain.config.finality
    assert nodes["pub"].replica.key.public_key not in finality.signers


def test_plan_and_channels() -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=1, seed=1)
    keys = {nid: k.public_key for nid, k in net.keys.items()}
    assert channel_mecs(net.topology, 2) == [["mec0"], ["mec1", "mec2"]]
    scheme = FlchainScheme(FlchainScheme.parse_params({"channels": 3}))

    plan = scheme.plan(net.topology, keys, PlanInputs("r", "t", 1, 0, "pbft"))

    finality = plan.chains["main"].config.finality
    assert finality.signers == (*(keys[m] for m in MECS), keys["pub"])  # 3 MECs: pub is 4th
    assert finality.quorum == 3
    assert {n.role for n in plan.nodes.values()} == {"publisher", "mec", "device"}
    assert plan.nodes["mec1"].peers == ("pub", "dev1-0", "mec0", "mec2")
    assert [n.id for n in net.topology.of_kind(NodeKind.MEC)] == list(MECS)
    with pytest.raises(ValueError, match="allowed: pbft"):
        scheme.plan(net.topology, keys, PlanInputs("r", "t", 1, 0, "single"))
    with pytest.raises(ValueError, match=r"allowed: 1\.\.3"):
        FlchainScheme(FlchainScheme.parse_params({"channels": 4})).plan(
            net.topology, keys, PlanInputs("r", "t", 1, 0, "pbft")
        )
    with pytest.raises(ValueError, match="channels"):
        FlchainScheme.parse_params({"channels": 0})
    two = VanillaNet.build(mecs=2, devices_per_mec=1, seed=1)
    two_keys = {nid: k.public_key for nid, k in two.keys.items()}
    with pytest.raises(ValueError, match="at least 3 MECs"):
        FlchainScheme().plan(two.topology, two_keys, PlanInputs("r", "t", 1, 0, "pbft"))
    four = VanillaNet.build(mecs=4, devices_per_mec=1, seed=1)
    four_keys = {nid: k.public_key for nid, k in four.keys.items()}
    four_plan = FlchainScheme().plan(four.topology, four_keys, PlanInputs("r", "t", 1, 0, "pbft"))
    assert four_keys["pub"] not in four_plan.chains["main"].config.finality.signers
