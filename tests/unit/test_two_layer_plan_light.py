"""Which nodes of a two-layer plan keep their MEC's LMUC as a light replica
(NodePlan.light_chains): the devices outside the LMUC's committee, when
``ledger.device_replica`` is light."""

from __future__ import annotations

from node.keys import NodeKey
from node.schemes import PlanInputs, make_scheme
from topologies import HierarchyParams, NodeKind, build_hierarchy

TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=3, devices_per_mec=5), 5)
KEYS = {
    n.id: NodeKey.from_seed(n.id.encode().ljust(32, b"\0")).public_key for n in TOPOLOGY.daemons()
}


def _light(device_replica: str) -> dict[str, tuple[str, ...]]:
    inputs = PlanInputs("r1", "t", 5, 100, "pbft", device_replica)
    plan = make_scheme("two-layer", {"full_devices": 3}).plan(TOPOLOGY, KEYS, inputs)
    return {n.id: plan.nodes[n.id].light_chains for n in TOPOLOGY.daemons()}


def test_devices_outside_the_lmuc_committee_are_light_and_nobody_else() -> None:
    light = _light("light")
    for mec in TOPOLOGY.of_kind(NodeKind.MEC):
        devices = [n.id for n in TOPOLOGY.of_kind(NodeKind.DEVICE) if n.parent == mec.id]
        assert [light[d] for d in devices] == [(), (), (), (f"lmuc-{mec.id}",), (f"lmuc-{mec.id}",)]
        assert light[mec.id] == ()
    assert light["pub"] == ()


def test_full_device_replica_keeps_every_lmuc_full() -> None:
    assert not any(_light("full").values())
