"""What a tunnel between servers adds to a crossing link's delay, and the topology the
cluster backend shapes with once it is taken off."""

from __future__ import annotations

import pytest

from topologies.backends.cluster.placement import place
from topologies.backends.cluster.settings import ClusterSection
from topologies.backends.cluster.tunnel_delay import measure, subtract
from topologies.builders import HierarchyParams, build_hierarchy
from topologies.spec import LinkKind, TopologySpec

SECTION = ClusterSection.model_validate(
    {"servers": [{"name": "here", "address": "localhost"}, {"name": "vm", "address": "10.0.0.2"}]}
)


def topology(mecs: int) -> TopologySpec:
    return build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=mecs, devices_per_mec=2), 3)


def rtts_by_crossing(spec: TopologySpec, cross_ms: float, local_ms: float):  # type: ignore[no-untyped-def]
    """RTT samples: `cross_ms` (± a little) over a crossing link, `local_ms` elsewhere; the
    links pinged are recorded."""
    pl = place(spec, SECTION)
    crossing = {frozenset((link.src, link.dst)) for link in pl.crossing}
    pinged: list[tuple[str, str]] = []

    def rtts(a: str, b: str) -> list[float]:
        pinged.append((a, b))
        base = cross_ms if frozenset((a, b)) in crossing else local_ms
        return [base - 0.1, base, base, base + 0.1, base + 5.0]  # one hiccup: the median holds

    return pl, rtts, pinged


def test_the_tunnel_adds_half_the_rtt_over_a_same_class_link_here() -> None:
    spec = topology(mecs=4)  # pub+mec0 and one more MEC here, two MECs in the VM
    pl, rtts, pinged = rtts_by_crossing(spec, cross_ms=1.0, local_ms=0.04)
    here_mecs = [m for m, s in pl.server_of.items() if s == "here" and m.startswith("mec")]
    assert len(here_mecs) == 2 and pl.crossing
    delays = measure(spec, pl, "here", rtts)
    assert len(delays) == len(pl.crossing)
    for d in delays:
        assert d.kind == "backhaul"
        assert d.reference == (here_mecs[0], here_mecs[1])  # a backhaul link here
        assert d.added_ms == pytest.approx((1.0 - 0.04) / 2)
    # the reference is pinged once for all crossing links
    assert pinged.count((here_mecs[0], here_mecs[1])) == 1


def test_without_a_same_class_link_here_any_daemon_link_here_is_the_reference() -> None:
    spec = topology(mecs=2)  # the quickstart's shape: the only backhaul link crosses
    pl, rtts, _ = rtts_by_crossing(spec, cross_ms=1.0, local_ms=0.2)
    (d,) = measure(spec, pl, "here", rtts)
    assert d.reference is not None
    ref_a, ref_b = d.reference
    assert {pl.server_of[ref_a], pl.server_of[ref_b]} == {"here"}
    assert spec.link(ref_a, ref_b).kind != LinkKind.BACKHAUL
    assert d.added_ms == pytest.approx(0.4)


def test_subtract_takes_the_tunnel_off_both_directions_of_crossing_links_only() -> None:
    spec = topology(mecs=2)
    pl, rtts, _ = rtts_by_crossing(spec, cross_ms=1.0, local_ms=0.0)
    (d,) = measure(spec, pl, "here", rtts)
    shaped = subtract(spec, [d])
    for before, after in zip(spec.links, shaped.links, strict=True):
        if frozenset((before.src, before.dst)) == frozenset((d.src, d.dst)):
            assert after.delay_ms == pytest.approx(before.delay_ms - 0.5)
            assert (after.bandwidth_mbit, after.jitter_ms) == (
                before.bandwidth_mbit,
                before.jitter_ms,
            )
        else:
            assert after == before
    assert not d.unreachable
    assert d.to_dict()["shaped_ms"] == pytest.approx(d.configured_ms - 0.5, abs=1e-4)


def test_a_delay_below_the_tunnels_own_is_shaped_as_zero_and_flagged() -> None:
    spec = topology(mecs=2)
    pl, rtts, _ = rtts_by_crossing(spec, cross_ms=100.0, local_ms=0.0)
    (d,) = measure(spec, pl, "here", rtts)
    assert d.unreachable
    shaped = subtract(spec, [d])
    assert shaped.link(d.src, d.dst).delay_ms == 0.0 == shaped.link(d.dst, d.src).delay_ms
