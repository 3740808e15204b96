"""The two-layer scheme over the in-memory network (3 MECs x 4 devices, 3 full devices per
MEC): LMUC blocks per MEC per round certified by PBFT, GMUC blocks with the MECs' votes,
every replica of each chain agreeing, and a tampering MEC outvoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.contracts import gmuc, incentive, reputation, task
from node.core.finality import Committee
from node.daemon import Daemon
from node.ledger.chain import verify_store
from node.ledger.light import verify_light_store
from node.schemes import PlanInputs, make_scheme
from orchestrator.collect import read_records
from tests.sim.two_layer_net import digits_learning, plan_of, run_two_layer
from tests.sim.vanilla_net import TASK_ID, VanillaNet

ROUNDS = 3
MECS = ("mec0", "mec1", "mec2")
PARAMS = {"full_devices": 3, "fanout": 2, "heartbeat_s": 0.1, "want_timeout_s": 0.5}
TAMPERER = "mec2"
TARGET = "dev0-1"  # a device of another MEC: the tamperer scales its update in its aggregate


def records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r["event"] == event]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VanillaNet, dict[str, Daemon]]:
    tmp_path = tmp_path_factory.mktemp("two-layer")
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=5)
    learning = digits_learning(ROUNDS)
    tamper = {
        "from_round": 2,
        "until_round": None,
        "name": "tamper",
        "params": {"target": TARGET, "action": "scale", "factor": 10.0},
    }
    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=PARAMS,
        seed=5,
        reward_pool=1200,
        config={
            "startup_timeout_s": 120,
            "behaviours": lambda nid: [tamper] if nid == TAMPERER else [],
        },
        light_devices=True,  # dev*-3, outside its LMUC's committee
    )
    return tmp_path, net, nodes


def test_plan_has_one_gmuc_and_an_lmuc_per_mec() -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=1)
    plan = plan_of(net, {"full_devices": 3}, 1, 0)

    assert sorted(plan.chains) == ["gmuc-t0", "lmuc-mec0", "lmuc-mec1", "lmuc-mec2"]
    gmuc_chain = plan.chains["gmuc-t0"]
    assert gmuc_chain.keepers == ("pub", *MECS)
    assert isinstance(gmuc_chain.config.finality, Committee)
    assert len(gmuc_chain.config.finality.members) == 4  # the MECs and the publisher
    lmuc = plan.chains["lmuc-mec1"]
    assert lmuc.keepers == ("mec1", "dev1-0", "dev1-1", "dev1-2", "dev1-3")
    keys = net.keys
    assert lmuc.config.finality.signers == tuple(
        keys[n].public_key for n in ("mec1", "dev1-0", "dev1-1", "dev1-2")
    )
    assert plan.nodes["mec1"].chains == ("gmuc-t0", "lmuc-mec1")
    assert plan.nodes["dev1-3"].chains == ("lmuc-mec1",)
    assert plan.nodes["pub"].chains == ("gmuc-t0",)
    with pytest.raises(ValueError, match="allowed: pbft"):
        make_scheme("two-layer").plan(
            net.topology,
            {n: k.public_key for n, k in keys.items()},
            PlanInputs("r", "t", 1, 0, "single"),
        )
    small = VanillaNet.build(mecs=2, devices_per_mec=4, seed=1)
    with pytest.raises(ValueError, match="at least 3 MECs"):
        plan_of(small, {}, 1, 0)
    few = VanillaNet.build(mecs=3, devices_per_mec=2, seed=1)
    with pytest.raises(ValueError, match="at least full_devices"):
        plan_of(few, {}, 1, 0)
    with pytest.raises(ValueError, match="at least 3 MECs per task"):
        plan_of(net, {"tasks": 2}, 1, 0)
    six = VanillaNet.build(mecs=6, devices_per_mec=3, seed=1)
    sharded = plan_of(six, {"tasks": 2}, 1, 1001)
    assert sharded.chains["gmuc-t1"].keepers == ("pub", "mec3", "mec4", "mec5")
    assert sharded.nodes["pub"].chains == ("gmuc-t0", "gmuc-t1")
    assert sharded.nodes["mec4"].chains == ("gmuc-t1", "lmuc-mec4")
    assert "dev4-0" in sharded.chains["gmuc-t1"].config.genesis.members
    assert "dev4-0" not in sharded.chains["gmuc-t0"].config.genesis.members
    pools = [sharded.chains[f"gmuc-t{i}"].config.genesis.balances["pub"] for i in (0, 1)]
    assert pools == [501, 500]
    with pytest.raises(ValueError, match="full_devices"):
        make_scheme("two-layer", {"full_devices": 2})


def test_lmuc_blocks_are_certified_per_mec_per_round(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    tmp_path, _, nodes = run
    for mec in MECS:
        chain = nodes[mec].chains[f"lmuc-{mec}"]
        finality = chain.config.finality
        assert isinstance(finality, Committee) and finality.quorum == 3
        store = chain.replica.chain.store
        update_blocks = {}
        for height in range(1, chain.height + 1):
            block = store.block(height)
            rounds = {tx.payload["round"] for tx in block.txs if tx.type == "task.record_update"}
            if rounds:
                assert len(block.certificate) >= finality.quorum
                finality.check(block)
                update_blocks[rounds.pop()] = len(block.txs)
        assert update_blocks == {r: 4 for r in range(1, ROUNDS + 1)}, (mec, update_blocks)
        subs = records(tmp_path, mec, "lmuc_submit")
        assert [s["submitted_on"] for s in subs] == ["all_answered"] * ROUNDS


def test_every_replica_of_each_chain_agrees(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    _, _, nodes = run
    heads: dict[str, set[tuple[int, bytes]]] = {}
    lights: set[str] = set()
    for node in nodes.values():
        for cid, replica in node.chains.replicas():
            heads.setdefault(cid, set()).add((replica.height, replica.chain.head.hash))
            verify = verify_light_store if replica.light else verify_store
            assert verify(replica.chain.store).ok, (node.node_id, cid)
            if replica.light:
                lights.add(node.node_id)
    assert set(heads) == {"gmuc-t0", "lmuc-mec0", "lmuc-mec1", "lmuc-mec2"}
    for cid, seen in heads.items():
        assert len(seen) == 1, (cid, seen)
    assert lights == {"dev0-3", "dev1-3", "dev2-3"}  # light replicas agree with the full ones
    # every task packet opened, every relayed LMUC block accepted, nothing refused
    assert {nid: dict(d.drops) for nid, d in nodes.items() if d.drops} == {}
    # GMUC: publish, one block per round (votes + record), rewards/close
    assert nodes["pub"].chains["gmuc-t0"].height == 1 + ROUNDS + 1


def test_gmuc_records_the_votes_and_outvotes_the_tampering_mec(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    tmp_path, _, nodes = run
    chain = nodes["pub"].chains["gmuc-t0"]
    state = chain.replica.chain.state
    store = chain.replica.chain.store
    votes_per_round: dict[int, int] = {}
    globals_: dict[int, str] = {}
    for height in range(1, chain.height + 1):
        block = store.block(height)
        for tx in block.txs:
            if tx.type == "gmuc.vote":
                votes_per_round[tx.payload["round"]] = (
                    votes_per_round.get(tx.payload["round"], 0) + 1
                )
            if tx.type == "task.record_global":
                globals_[tx.payload["round"]] = tx.payload["blob"].hex()
    assert votes_per_round == {r: 3 for r in range(1, ROUNDS + 1)}
    for r in range(1, ROUNDS + 1):
        tally = gmuc.get_round(state, TASK_ID, r)
        assert tally is not None
        assert tally["aggregate"] == globals_[r], r  # the global model is the decided hash
        assert tally["outvoted"] == ([] if r == 1 else [TAMPERER]), (r, tally)
        assert len(tally["contributors"]) == 12
    # the honest MECs computed the same aggregate, the decided one; the tamperer another
    voted = {m: {r["round"]: r["aggregate"] for r in records(tmp_path, m, "round")} for m in MECS}
    for r in range(1, ROUNDS + 1):
        assert voted["mec0"][r] == voted["mec1"][r] == globals_[r]
        assert (voted[TAMPERER][r] == globals_[r]) == (r == 1)
    pub_rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in pub_rounds] == list(range(1, ROUNDS + 1))
    assert pub_rounds[-1]["accuracy"] > 0.5
    votes = records(tmp_path, "pub", "votes")
    assert [v["outvoted"] for v in votes] == [[], [TAMPERER], [TAMPERER]]


FLIPPER = "dev1-1"  # a full device: unselected, it still orders its MEC's LMUC blocks
REP_ROUNDS = 4


def test_a_label_flipper_falls_below_the_threshold_and_is_no_longer_selected(
    tmp_path: Path,
) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=6)
    learning = digits_learning(REP_ROUNDS, local_epochs=2)
    flip = {"from_round": 1, "until_round": None, "name": "label_flip", "params": {"strength": 1.0}}
    params = {**PARAMS, "reputation_threshold": 0.5}

    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=params,
        seed=6,
        reward_pool=0,
        config={
            "startup_timeout_s": 120,
            "behaviours": lambda nid: [flip] if nid == FLIPPER else [],
        },
    )

    state = nodes["pub"].chains["gmuc-t0"].replica.chain.state
    reps = reputation.reputations(
        state, [n.id for n in net.topology.daemons() if n.id.startswith("dev")]
    )
    assert reps[FLIPPER] < 0.5, reps
    assert all(v > 0.5 for d, v in reps.items() if d != FLIPPER), reps
    assert reputation.event(state, TASK_ID, 1, FLIPPER) is False
    selections = {r["round"]: r["selected"] for r in records(tmp_path, "mec1", "selection")}
    assert FLIPPER in selections[1]
    dropped = [r for r, chosen in selections.items() if FLIPPER not in chosen]
    assert dropped and min(dropped) <= 3 and dropped == list(range(min(dropped), REP_ROUNDS + 1))
    assert all(len(selections[r]) == 3 for r in dropped)  # the others stay selected
    pub_rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in pub_rounds] == list(range(1, REP_ROUNDS + 1))


def test_two_tasks_learn_concurrently_on_their_own_shards(tmp_path: Path) -> None:
    """Isolation sharding: 6 MECs, tasks: 2 — each task's 3 MECs order their own GMUC shard
    and learn their own model; no node of one task keeps the other's chain."""
    net = VanillaNet.build(mecs=6, devices_per_mec=3, seed=8)
    learning = digits_learning(2)

    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params={**PARAMS, "tasks": 2},
        seed=8,
        reward_pool=0,
        config={"startup_timeout_s": 120},
    )

    shards = {"gmuc-t0": ("mec0", "mec1", "mec2"), "gmuc-t1": ("mec3", "mec4", "mec5")}
    decided = {}
    for cid, mecs in shards.items():
        heads = {
            (nodes[n].chains[cid].height, nodes[n].chains[cid].head.hash) for n in ("pub", *mecs)
        }
        assert len(heads) == 1, cid
        state = nodes["pub"].chains[cid].replica.chain.state
        tallies = [gmuc.get_round(state, TASK_ID, r) for r in (1, 2)]
        assert all(t is not None and t["aggregate"] and t["outvoted"] == [] for t in tallies)
        decided[cid] = [t["aggregate"] for t in tallies if t is not None]
        assert all(len(t["contributors"]) == 9 for t in tallies if t is not None)
        other = next(c for c in shards if c != cid)
        assert all(other not in nodes[m].chains for m in mecs)
    assert decided["gmuc-t0"] != decided["gmuc-t1"]  # two models
    rounds = records(tmp_path, "pub", "round")
    assert sorted((r["task_chain"], r["round"]) for r in rounds) == [
        (c, r) for c in sorted(shards) for r in (1, 2)
    ]
    assert {nid: dict(d.drops) for nid, d in nodes.items() if d.drops} == {}


def test_the_outvoted_mecs_pay_reports_are_refused(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    """Incentives: every MEC pays its devices in round 1; from round 2 the tampering MEC is
    outvoted and the contract refuses its ``incentive.pay``; the pool is never overdrawn."""
    _, _, nodes = run
    state = nodes["pub"].chains["gmuc-t0"].replica.chain.state
    paid = 0
    for r in range(1, ROUNDS + 1):
        record = incentive.payment(state, TASK_ID, r)
        assert record is not None, r
        payers = sorted(record["payers"])
        assert payers == (list(MECS) if r == 1 else ["mec0", "mec1"]), (r, payers)
        if r > 1:  # the tamperer's devices are its to report: nobody pays them
            assert not any(d.startswith("dev2-") for d in record["paid"]), (r, record)
        paid += record["total"]
    t = task.get_task(state, TASK_ID)
    assert t is not None and 0 < paid == int(t["paid"]) <= 1200
