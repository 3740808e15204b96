"""bench/fidelity_netem.py: which pings measure which links (pure: no network is built)."""

from __future__ import annotations

from pathlib import Path

from bench.fidelity_netem import (
    Probe,
    ProbeResult,
    TimerCheck,
    bridge_address,
    diagnose,
    probes,
)
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


def _result(name: str, delay: float, measured: float) -> ProbeResult:
    there = LinkSpec("a", "b", LinkKind.BACKHAUL, 1000.0, delay)
    back = LinkSpec("b", "a", LinkKind.BACKHAUL, 1000.0, delay)
    probe = Probe("backhaul", name, "a", "10.0.0.2", (there, back))
    return ProbeResult(probe, baseline=[0.5] * 5, shaped=[0.5 + 2 * measured] * 5)


def test_a_failed_measurement_says_why_late_timers() -> None:
    results = [_result("m0 <-> m1", 40.0, 42.4), _result("d0 <-> d1", 2.0, 2.1)]
    timers = (TimerCheck(0.05, 0.05 + 19 * 0.04), TimerCheck(0.06, 0.06 + 19 * 0.045))

    lines = diagnose(results, timers, (1.2, 1.0, 0.9), 2)

    text = "\n".join(lines)
    assert lines and all(line.startswith("why: ") for line in lines)
    assert "1 of 2 links" in text and "load average 1.2 / 1.0 / 0.9 on 2 CPUs" in text
    assert "rate error +4.0% before, +4.5% after" in text
    assert "m0 <-> m1 (backhaul) 42.400 vs 40.000 ms (+6.0%" in text.splitlines()[2]
    assert "likely cause: late timers" in text and "a busy host: load" not in text


def test_a_failed_measurement_says_why_busy_host_and_otherwise_netem() -> None:
    late = [_result("m0 <-> m1", 40.0, 37.0)]  # early: not the timers
    steady = (TimerCheck(0.05, 0.05), TimerCheck(0.05, 0.05))
    assert "a busy host: load 12.0 > 2 CPUs" in diagnose(late, steady, (12.0, 9.0, 5.0), 2)[-1]
    assert "look at netem" in diagnose(late, steady, (0.5, 0.5, 0.5), 2)[-1]
    assert diagnose([_result("ok", 40.0, 40.1)], steady, (9.0, 9.0, 9.0), 2) == []


def test_a_failed_measurement_says_why_noisy_rtts() -> None:
    there = LinkSpec("p", "m", LinkKind.LAN, 1000.0, 0.1)
    back = LinkSpec("m", "p", LinkKind.LAN, 1000.0, 0.1)
    probe = Probe("lan", "pub <-> mec0", "p", "10.0.0.2", (there, back))
    noisy = ProbeResult(
        probe, baseline=[1.0, 1.1, 1.2, 3.0, 1.0, 1.1], shaped=[1.2, 4.5, 4.0, 1.3, 3.9, 4.1]
    )
    steady = (TimerCheck(0.05, 0.05), TimerCheck(0.05, 0.05))

    assert not noisy.ok and abs(noisy.error) <= noisy.noise
    last = diagnose([noisy], steady, (0.5, 0.5, 0.5), 2)[-1]
    assert "noisy RTTs: on 1 of the failed links" in last and "look at netem" not in last
