"""bench/fidelity_netem.py: which pings measure which links (pure: no network is built)."""

from __future__ import annotations

from pathlib import Path

from bench.fidelity_netem import Probe, ProbeResult, bridge_address, probes
from orchestrator.scenario import load_scenario
from topologies.backends.addressing import plan
from topologies.backends.mininet import short_names
from topologies.builders import build_hierarchy
from topologies.spec import LinkKind, LinkSpec

REPO = Path(__file__).resolve().parents[2]


def test_one_probe_per_physical_link_crossing_it_once_each_way() -> None:
    scenario = load_scenario(REPO / "scenarios" / "vm_netem.yaml")
    spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
    p = plan(spec, short_names(spec, "fdn"))

    found = probes(spec, p)

    physical = {frozenset((link.src, link.dst)) for link in spec.links}
    assert len(found) == len(physical) == 10
    assert {frozenset((pr.path[0].src, pr.path[0].dst)) for pr in found} == physical
    for pr in found:
        there, back = pr.path
        assert (there.src, there.dst) == (back.dst, back.src)
        assert there.src == pr.src
    kinds = sorted(pr.kind for pr in found)
    assert kinds == ["backhaul", "cellular", "cellular", "cellular", "cellular", "d2d", "d2d",
                     "fronthaul", "fronthaul", "lan"]  # fmt: skip


def test_bridge_address_is_outside_the_backends_plan() -> None:
    scenario = load_scenario(REPO / "scenarios" / "vm_netem.yaml")
    spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
    p = plan(spec, short_names(spec, "fdn"))
    used = {i.address for i in p.iface.values()} | set(p.identity.values())

    assert bridge_address(spec, "bs0") == "10.100.255.254"
    assert bridge_address(spec, "bs0") not in used


def test_verdict_is_one_way_within_half_a_millisecond_or_five_percent() -> None:
    link = LinkSpec("a", "b", LinkKind.BACKHAUL, 1000.0, 20.0)
    back = LinkSpec("b", "a", LinkKind.BACKHAUL, 1000.0, 20.0)
    probe = Probe("backhaul", "a <-> b", "a", "10.0.0.2", (link, back))

    ok = ProbeResult(probe, baseline=[0.5] * 5, shaped=[0.5 + 2 * 20.9] * 5)
    late = ProbeResult(probe, baseline=[0.5] * 5, shaped=[0.5 + 2 * 21.1] * 5)

    assert probe.configured == 20.0
    assert ok.tolerance == 1.0
    assert abs(ok.measured - 20.9) < 1e-9 and ok.ok
    assert not late.ok
