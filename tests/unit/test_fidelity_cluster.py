"""bench/fidelity_cluster.py: the verdict on a crossing link against links inside each of its
servers (pure: the figures are given, no network is built)."""

from __future__ import annotations

import pytest

from bench.fidelity_cluster import LinkResult, report, with_rate
from topologies.builders import HierarchyParams, build_hierarchy
from topologies.spec import LinkKind, LinkSpec

LINK = LinkSpec("a", "b", LinkKind.BACKHAUL, 50.0, 20.0)


def result(label: str, configured: float, one_way: float, goodput: float) -> LinkResult:
    return LinkResult(
        label=label,
        link=LINK,
        servers=("here", "vm"),
        configured_ms=configured,
        shaped_ms=configured,
        kernel_rtt=[0.1],
        transport_rtt=[2 * one_way] * 3,
        goodput_mbit=goodput,
    )


def test_a_crossing_link_is_judged_against_the_mean_of_both_servers_links(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cross = result("crossing", 20.0, 21.7, 47.7)  # error +1.7
    here = result("inside here", 26.0, 26.8, 47.6)  # +0.8
    vm = result("inside vm", 12.0, 16.5, 47.5)  # +4.5: a slow emulated server
    assert report([cross, here, vm], 50.0) == 0  # |1.7 - 2.65| <= max(0.5, 1.0)
    assert "PASS" in capsys.readouterr().out
    assert report([cross, here], 50.0) == 0  # |1.7 - 0.8| = 0.9 <= 1.0
    slow = result("crossing", 20.0, 23.0, 47.7)  # +3.0 against +0.8 here alone
    assert report([slow, here], 50.0) == 1
    thin = result("crossing", 20.0, 21.7, 40.0)  # goodput 15 % of the rate below
    assert report([thin, here, vm], 50.0) == 1
    assert "goodput: 40.0 vs 47.5 Mbit/s (bound ±5% of 50): FAIL" in capsys.readouterr().out


def test_only_the_probed_links_get_the_rate() -> None:
    spec = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=2), 1)
    changed = with_rate(spec, [frozenset(("mec0", "mec1"))], 7.0)
    for before, after in zip(spec.links, changed.links, strict=True):
        probed = {before.src, before.dst} == {"mec0", "mec1"}
        assert after.bandwidth_mbit == (7.0 if probed else before.bandwidth_mbit)
        assert after.delay_ms == before.delay_ms
