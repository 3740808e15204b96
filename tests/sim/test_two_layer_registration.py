"""Two-layer Steps 1-2 over the in-memory network (3 MECs x 4 devices): devices register on
their MEC's LMUC and answer the task request on the GMUC through their MEC; a device whose
registration is not its own signature is never registered, never selected and has no update
on chain; a device below the task's CPU requirement is registered but never selected. The
MECs aggregate with an aggregator that needs accuracies (they measure them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.contracts import gmuc_request, identity
from node.learning.settings import AggregatorSettings
from node.roles.base import NodeContext
from node.schemes.two_layer.common import declared_resources
from node.schemes.two_layer.device import TwoLayerDeviceRole
from node.schemes.two_layer.messages import JoinRequest
from tests.sim.test_two_layer import PARAMS, records
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import TASK_ID, VanillaNet

ROUNDS = 2
SEED = 9
IMPOSTOR = "dev0-3"  # its registration is signed with another key's signature
DEVICES = [f"dev{m}-{d}" for m in range(3) for d in range(4)]


def test_registration_and_requirements_decide_who_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the CPU requirement: just above the slowest honest device's declared CPU
    cpu = {d: declared_resources(SEED, d)["cpu_mhz"] for d in DEVICES if d != IMPOSTOR}
    slow = min(cpu, key=cpu.__getitem__)
    assert sorted(cpu.values())[1] > cpu[slow]  # exactly one device falls below
    params = {**PARAMS, "min_cpu_mhz": cpu[slow] + 1}
    join_request = TwoLayerDeviceRole._join_request

    def forged(self: TwoLayerDeviceRole, ctx: NodeContext) -> JoinRequest:
        req = join_request(self, ctx)
        if ctx.node_id != IMPOSTOR:
            return req
        return dataclasses.replace(req, registration=bytes(64))

    monkeypatch.setattr(TwoLayerDeviceRole, "_join_request", forged)
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=SEED)
    learning = digits_learning(ROUNDS)

    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=params,
        seed=SEED,
        reward_pool=0,
        config={
            "startup_timeout_s": 120,
            "aggregator": AggregatorSettings(name="accuracy_threshold", params={"threshold": 0.0}),
        },
    )

    # Step 1: every device but the impostor is registered on its LMUC (on every replica)
    for mec in ("mec0", "mec1", "mec2"):
        for holder in [mec, *(d for d in DEVICES if d.startswith(f"dev{mec[-1]}-"))]:
            state = nodes[holder].chains[f"lmuc-{mec}"].replica.chain.state
            for d in DEVICES:
                if d.startswith(f"dev{mec[-1]}-"):
                    key = net.keys[d].public_key
                    assert identity.is_registered(state, key) == (d != IMPOSTOR), (holder, d)
    assert dict(nodes["mec0"].drops) == {"bad_join": nodes["mec0"].drops["bad_join"]}
    assert nodes["mec0"].drops["bad_join"] >= 1
    # Step 2: the request and every other device's response are on the GMUC
    gmuc_state = nodes["pub"].chains["gmuc-t0"].replica.chain.state
    request = gmuc_request.get_request(gmuc_state, TASK_ID)
    assert request is not None and request["min_cpu_mhz"] == cpu[slow] + 1
    for d in DEVICES:
        response = gmuc_request.get_response(gmuc_state, TASK_ID, d)
        if d == IMPOSTOR:
            assert response is None
            continue
        assert response is not None and response["eligible"] == (d != slow), d
        assert response["cpu_mhz"] == cpu[d] and response["samples"] > 0
    # selection: the registered devices that meet the requirements, every round
    workers = sorted(d for d in DEVICES if d not in (IMPOSTOR, slow))
    selected = sorted(
        d
        for m in ("mec0", "mec1", "mec2")
        for d in records(tmp_path, m, "selection")[0]["selected"]
    )
    assert selected == workers
    for m in ("mec0", "mec1", "mec2"):
        assert all(
            IMPOSTOR not in r["selected"] and slow not in r["selected"]
            for r in records(tmp_path, m, "selection")
        )
    # no update of the impostor or the slow device on any LMUC; the others' on chain
    for mec in ("mec0", "mec1", "mec2"):
        store = nodes[mec].chains[f"lmuc-{mec}"].replica.chain.store
        senders = {
            identity.node_id_of(nodes[mec].chains[f"lmuc-{mec}"].replica.chain.state, tx.sender)
            for h in range(1, nodes[mec].chains[f"lmuc-{mec}"].height + 1)
            for tx in store.block(h).txs
            if tx.type == "task.record_update"
        }
        assert senders == {d for d in workers if d.startswith(f"dev{mec[-1]}-")}, mec
    # the accuracy aggregator got the MECs' accuracies: every worker's update kept
    pub_rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in pub_rounds] == list(range(1, ROUNDS + 1))
    assert pub_rounds[-1]["accuracy"] > 0.5
    votes = [r for m in ("mec0", "mec1") for r in records(tmp_path, m, "round")]
    assert all(v["contributors"] == len(workers) for v in votes)
