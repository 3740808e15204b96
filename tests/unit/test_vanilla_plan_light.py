"""Which nodes of a vanilla plan keep the task chain as a light replica (NodePlan.light_chains)."""

from __future__ import annotations

import pytest

from node.keys import NodeKey
from node.schemes import PlanInputs, make_scheme
from topologies import HierarchyParams, NodeKind, build_hierarchy

TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=3, devices_per_mec=2), 5)
KEYS = {
    n.id: NodeKey.from_seed(n.id.encode().ljust(32, b"\0")).public_key for n in TOPOLOGY.daemons()
}


def _light_kinds(scheme: str, consensus: str, device_replica: str) -> dict[NodeKind, set[bool]]:
    inputs = PlanInputs(
        run_id="r1",
        task_id="t",
        seed=5,
        reward_pool=100,
        consensus=consensus,
        device_replica=device_replica,
    )
    plan = make_scheme(scheme).plan(TOPOLOGY, KEYS, inputs)
    out: dict[NodeKind, set[bool]] = {}
    for node in TOPOLOGY.daemons():
        light = plan.nodes[node.id].light_chains
        assert set(light) <= set(plan.nodes[node.id].chains)
        out.setdefault(node.kind, set()).add(bool(light))
    return out


def test_single_writer_light_keeps_every_node_but_the_publisher_light() -> None:
    kinds = _light_kinds("vanilla", "single", "light")

    assert kinds[NodeKind.PUBLISHER] == {False}
    assert kinds[NodeKind.DEVICE] == {True}
    assert kinds[NodeKind.MEC] == {True}


def test_pbft_keeps_the_committee_mecs_full() -> None:
    kinds = _light_kinds("vanilla", "pbft", "light")

    assert kinds[NodeKind.MEC] == {False}
    assert kinds[NodeKind.DEVICE] == {True}
    assert kinds[NodeKind.PUBLISHER] == {False}


@pytest.mark.parametrize("consensus", ["single", "pbft"])
def test_device_replica_full_keeps_every_node_full(consensus: str) -> None:
    kinds = _light_kinds("vanilla", consensus, "full")

    assert all(v == {False} for v in kinds.values())


@pytest.mark.parametrize(
    ("scheme", "consensus"), [("gossip-fedavg", "single"), ("flchain", "pbft")]
)
def test_schemes_reusing_the_plan_keep_their_nodes_full(scheme: str, consensus: str) -> None:
    kinds = _light_kinds(scheme, consensus, "light")

    assert all(v == {False} for v in kinds.values())
