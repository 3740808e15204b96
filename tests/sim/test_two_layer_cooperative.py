"""Cooperative sharding over the in-memory network: 6 MECs x 3 devices, tasks: 2,
cooperative: true — two GMUC shards, each ordered by its 3 MECs and the publisher, decide
their own aggregates; every round the publisher combines them into one global model that
both shards record and train next; the model learns; each device has one reputation record
across the shards."""

from __future__ import annotations

from pathlib import Path

from node.contracts import reputation, task
from node.contracts.reputation import NS as REPUTATION
from tests.sim.test_two_layer import PARAMS, records
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import TASK_ID, VanillaNet

ROUNDS = 3
SHARDS = {"gmuc-t0": ("mec0", "mec1", "mec2"), "gmuc-t1": ("mec3", "mec4", "mec5")}


def test_cooperative_shards_share_one_global_model_that_learns(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=6, devices_per_mec=3, seed=12)
    learning = digits_learning(ROUNDS)

    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params={**PARAMS, "tasks": 2, "cooperative": True},
        seed=12,
        reward_pool=0,
        config={"startup_timeout_s": 120},
    )

    shared: dict[str, list[str]] = {}
    for cid, mecs in SHARDS.items():
        heads = {
            (nodes[n].chains[cid].height, nodes[n].chains[cid].head.hash) for n in ("pub", *mecs)
        }
        assert len(heads) == 1, cid
        state = nodes["pub"].chains[cid].replica.chain.state
        globals_ = [
            state.get(task.NS_GLOBAL, task.global_key(TASK_ID, r)) for r in range(1, ROUNDS + 1)
        ]
        shared[cid] = [g["blob"] for g in globals_ if g is not None]
    # one global model per round, the same on both shards (each decided its own aggregate)
    assert shared["gmuc-t0"] == shared["gmuc-t1"] and len(shared["gmuc-t0"]) == ROUNDS
    assert len(set(shared["gmuc-t0"])) == ROUNDS
    rounds = records(tmp_path, "pub", "round")
    accuracy = {(r["task_chain"], r["round"]): r["accuracy"] for r in rounds}
    assert sorted(accuracy) == [(c, r) for c in sorted(SHARDS) for r in range(1, ROUNDS + 1)]
    curve = [accuracy[("gmuc-t0", r)] for r in range(1, ROUNDS + 1)]
    assert curve == [accuracy[("gmuc-t1", r)] for r in range(1, ROUNDS + 1)]  # one model
    assert curve[-1] > curve[0] and curve[-1] > 0.5, curve
    # one reputation record per device across the shards, judged every round
    devices = [n.id for n in net.topology.daemons() if n.id.startswith("dev")]
    held: dict[str, list[str]] = {d: [] for d in devices}
    for cid in SHARDS:
        state = nodes["pub"].chains[cid].replica.chain.state
        for device, _ in state.items(REPUTATION):
            held[device].append(cid)
        for d in devices:
            if held[d] == [cid]:
                opinion = reputation.opinion(state, d)
                assert opinion.reputation > 0.5
                assert all(reputation.event(state, TASK_ID, r, d) for r in range(1, ROUNDS + 1))
    assert all(len(chains) == 1 for chains in held.values()), held
    assert {nid: dict(d.drops) for nid, d in nodes.items() if d.drops} == {}
