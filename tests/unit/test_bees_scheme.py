"""The bees / b-ei schemes' parameters and plan."""

from __future__ import annotations

import pytest

from node.core.finality import ProofOfLearning
from node.keys import NodeKey
from node.schemes import PlanInputs, make_scheme
from node.schemes.bees.common import profiles_of
from node.schemes.bees.model import uplink_rate_bps
from node.schemes.bees.scheme import BeesParams
from topologies import CellularParams, HierarchyParams, LinkKind, NodeKind, build_hierarchy

TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=3, devices_per_mec=2), 0)
KEYS = {
    n.id: NodeKey.from_seed(bytes([i + 1]) * 32).public_key
    for i, n in enumerate(TOPOLOGY.daemons())
}
INPUTS = PlanInputs("run", "task", 0, 0, "single")


def test_defaults_follow_the_paper_and_b_ei_shares_one_update() -> None:
    assert make_scheme("bees").params.top_m == 10  # type: ignore[attr-defined]
    assert make_scheme("b-ei").params.top_m == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"model": {"ue_cpu": 1.0}}, "model"),
        ({"model": {"ue_cpu_hz": -1.0}}, "ue_cpu_hz"),
        ({"model": {"local_iterations": 2.5}}, "local_iterations"),
        ({"offload_scale": 0.0}, "offload_scale"),
        ({"top_m": 0}, "top_m"),
        ({"pol_timeout": 1.0}, "pol_timeout"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(raw: dict[str, object], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        make_scheme("bees", raw)


def test_model_overrides_reach_the_profiles() -> None:
    params = make_scheme("bees", {"model": {"ue_cpu_hz": 2e6, "local_iterations": 3}}).params
    assert isinstance(params, BeesParams)

    profiles = profiles_of(TOPOLOGY, params, seed=1)

    assert profiles.model.local_iterations == 3
    assert {p.cpu_hz for p in profiles.ue.values()} == {2e6}
    devices = {n.id for n in TOPOLOGY.of_kind(NodeKind.DEVICE)}
    assert set(profiles.ue) == devices and set(profiles.es) == {"mec0", "mec1", "mec2"}
    assert profiles_of(TOPOLOGY, params, seed=1) == profiles, "drawn from the seed alone"


def test_each_ue_predicts_with_its_emulated_links_rate() -> None:
    # the paper's radio (p = 10 dBm, no fading, 20 MHz per BS, N0 = -174, 100-250 m) on the
    # topology, as scenarios/bees_quick.yaml sets it: 2 BS x 2 MEC x 3 UEs
    radio = CellularParams(device_power_dbm=10.0, rayleigh_fading=False)
    topology = build_hierarchy(
        HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3, cellular=radio), 3
    )
    params = make_scheme("bees").params
    assert isinstance(params, BeesParams)

    profiles = profiles_of(topology, params, seed=3)

    devices = topology.of_kind(NodeKind.DEVICE)
    assert len(profiles.ue) == len(devices) == 12
    rates = set()
    for dev in devices:
        bs = topology.node(str(dev.parent)).parent
        link = topology.link(dev.id, str(bs))
        assert link.kind == LinkKind.CELLULAR
        ue = profiles.ue[dev.id]
        assert ue.uplink_rate_bps == link.bandwidth_mbit * 1e6, dev.id
        rates.add(ue.uplink_rate_bps)
        # and that number is eq. 5 for some distance in U(100, 250) m on the BS's share
        band = 20e6 / 6
        slowest = uplink_rate_bps(band, 10.0, 250.0, 3.76, -174.0)
        fastest = uplink_rate_bps(band, 10.0, 100.0, 3.76, -174.0)
        assert slowest <= ue.uplink_rate_bps <= fastest
    assert len(rates) == 12, "one distance draw per UE"


def test_plan_one_pol_chain_kept_by_the_edge_servers_and_the_publisher() -> None:
    plan = make_scheme("b-ei").plan(TOPOLOGY, KEYS, INPUTS)

    (chain,) = plan.chains.values()
    assert isinstance(chain.config.finality, ProofOfLearning)
    assert chain.config.finality.members == tuple(KEYS[m] for m in ("mec0", "mec1", "mec2"))
    assert set(chain.keepers) == {"mec0", "mec1", "mec2", "pub"}
    assert plan.nodes["dev1-0"].chains == () and plan.nodes["dev1-0"].peers == ("pub", "mec1")
    assert set(plan.nodes["mec1"].peers) == {"pub", "dev1-0", "dev1-1", "mec0", "mec2"}
    assert chain.config.genesis.members["mec1"] == (KEYS["mec1"], "mec")


def test_plan_refuses_pbft() -> None:
    with pytest.raises(ValueError, match=r"ledger\.consensus"):
        make_scheme("bees").plan(TOPOLOGY, KEYS, PlanInputs("run", "task", 0, 0, "pbft"))
