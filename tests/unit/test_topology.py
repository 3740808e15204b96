"""Unit tests for the pure-data topologies package."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from topologies import (
    DelayDist,
    HierarchyParams,
    LinkKind,
    LinkSpec,
    NodeKind,
    NodeSpec,
    TopologyError,
    TopologySpec,
    build_hierarchy,
    dbm_to_watt,
    shannon_rate_mbit,
    truncated_normal,
    watt_to_dbm,
)


def _pair(a: str, b: str, **kw: float) -> tuple[LinkSpec, LinkSpec]:
    """Two directed LAN links a<->b with default numbers overridable by kw."""
    args = {"bandwidth_mbit": 100.0, "delay_ms": 1.0} | kw
    return (LinkSpec(a, b, LinkKind.LAN, **args), LinkSpec(b, a, LinkKind.LAN, **args))


def _base_nodes() -> list[NodeSpec]:
    return [
        NodeSpec("bs0", NodeKind.BS),
        NodeSpec("mec0", NodeKind.MEC, parent="bs0"),
        NodeSpec("dev0-0", NodeKind.DEVICE, parent="mec0"),
    ]


def _base_links() -> list[LinkSpec]:
    return [*_pair("mec0", "bs0"), *_pair("dev0-0", "bs0")]


def _small() -> TopologySpec:
    return build_hierarchy(HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3), seed=7)


# --- spec validation ---------------------------------------------------------------------


def test_valid_minimal_spec() -> None:
    spec = TopologySpec(tuple(_base_nodes()), tuple(_base_links()))
    assert [n.id for n in spec.daemons()] == ["mec0", "dev0-0"]
    assert not spec.node("bs0").runs_daemon
    assert spec.node("mec0").runs_daemon


def _raises(nodes: list[NodeSpec], links: list[LinkSpec], field_part: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        TopologySpec(tuple(nodes), tuple(links))
    assert field_part in info.value.field
    assert info.value.field in str(info.value)
    assert "allowed" in str(info.value)
    return info.value


def test_duplicate_id() -> None:
    err = _raises(
        [*_base_nodes(), NodeSpec("mec0", NodeKind.MEC, parent="bs0")], _base_links(), "node.id"
    )
    assert err.value == "mec0"


@pytest.mark.parametrize("bad", ["Bs0", "0bs", "bs_0", "", "a" * 33])
def test_bad_id(bad: str) -> None:
    err = _raises([*_base_nodes(), NodeSpec(bad, NodeKind.BS)], _base_links(), "node.id")
    assert err.value == bad


def test_bad_parent_kind() -> None:
    nodes = [*_base_nodes(), NodeSpec("dev0-1", NodeKind.DEVICE, parent="bs0")]
    _raises(nodes, [*_base_links(), *_pair("dev0-1", "bs0")], "nodes[dev0-1].parent")


def test_missing_parent() -> None:
    nodes = [*_base_nodes(), NodeSpec("pub", NodeKind.PUBLISHER, parent="mec9")]
    _raises(nodes, [*_base_links(), *_pair("pub", "mec0")], "nodes[pub].parent")


def test_unknown_link_endpoint() -> None:
    err = _raises(_base_nodes(), [*_base_links(), *_pair("mec0", "ghost")], "link.dst")
    assert err.value == "ghost"


def test_self_link() -> None:
    _raises(
        _base_nodes(),
        [*_base_links(), LinkSpec("mec0", "mec0", LinkKind.LAN, 1.0, 0.0)],
        "link.dst",
    )


def test_duplicate_directed_link() -> None:
    _raises(_base_nodes(), [*_base_links(), *_pair("mec0", "bs0")], "links")


def test_negative_delay() -> None:
    links = [*_pair("mec0", "bs0", delay_ms=-1.0), *_pair("dev0-0", "bs0")]
    err = _raises(_base_nodes(), links, "delay_ms")
    assert err.value == -1.0


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"loss_pct": 100.0}, "loss_pct"),
        ({"loss_pct": -0.1}, "loss_pct"),
        ({"bandwidth_mbit": 0.0}, "bandwidth_mbit"),
        ({"bandwidth_mbit": math.inf}, "bandwidth_mbit"),
        ({"jitter_ms": -1.0}, "jitter_ms"),
        ({"delay_ms": math.nan}, "delay_ms"),
    ],
)
def test_bad_link_numbers(kw: dict[str, float], field_name: str) -> None:
    _raises(_base_nodes(), [*_pair("mec0", "bs0", **kw), *_pair("dev0-0", "bs0")], field_name)


def test_missing_reverse_link() -> None:
    links = [*_base_links(), LinkSpec("dev0-0", "mec0", LinkKind.LAN, 1.0, 0.0)]
    err = _raises(_base_nodes(), links, "links")
    assert err.value == "dev0-0->mec0"


def test_disconnected_graph() -> None:
    nodes = [
        *_base_nodes(),
        NodeSpec("bs1", NodeKind.BS),
        NodeSpec("mec1", NodeKind.MEC, parent="bs1"),
    ]
    err = _raises(nodes, [*_base_links(), *_pair("mec1", "bs1")], "links")
    assert err.value == "mec1"


def test_unknown_node_lookup() -> None:
    spec = _small()
    with pytest.raises(TopologyError) as info:
        spec.node("nope")
    assert info.value.field == "node"
    with pytest.raises(TopologyError):
        spec.link("dev0-0", "mec3")  # both exist, no direct link


# --- builder --------------------------------------------------------------------------------


def test_builder_counts() -> None:
    spec = _small()
    assert len(spec.of_kind(NodeKind.BS)) == 2
    assert len(spec.of_kind(NodeKind.MEC)) == 4
    assert len(spec.of_kind(NodeKind.DEVICE)) == 12
    assert [n.id for n in spec.of_kind(NodeKind.PUBLISHER)] == ["pub"]
    assert len(spec.daemons()) == 17
    kinds = [lk.kind for lk in spec.links]
    assert kinds.count(LinkKind.CELLULAR) == 2 * 12
    assert kinds.count(LinkKind.FRONTHAUL) == 2 * 4
    assert kinds.count(LinkKind.BACKHAUL) == 2 * 6
    assert kinds.count(LinkKind.D2D) == 2 * 4 * 3
    assert kinds.count(LinkKind.LAN) == 2
    assert len(spec.links) == 70
    assert spec.node("dev3-2").parent == "mec3"
    assert spec.node("mec3").parent == "bs1"
    assert spec.node("pub").parent == "mec0"


def test_builder_link_symmetry_and_cellular() -> None:
    spec = _small()
    for lk in spec.links:
        back = spec.link(lk.dst, lk.src)
        assert back.kind == lk.kind
        if lk.kind != LinkKind.CELLULAR:
            assert back.delay_ms == lk.delay_ms
    up = spec.link("dev3-0", "bs1")
    down = spec.link("bs1", "dev3-0")
    assert 0 < up.bandwidth_mbit < down.bandwidth_mbit <= 1000.0  # 43 dBm down vs 23 dBm up
    assert up.delay_ms == 5.0


def test_builder_deterministic() -> None:
    params = HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3)
    assert build_hierarchy(params, seed=1) == build_hierarchy(params, seed=1)
    assert build_hierarchy(params, seed=1) != build_hierarchy(params, seed=2)


def test_builder_without_publisher() -> None:
    spec = build_hierarchy(HierarchyParams(with_publisher=False), seed=0)
    assert not spec.of_kind(NodeKind.PUBLISHER)


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        ({"devices_per_mec": 0}, "topology.devices_per_mec"),
        ({"bs_count": 0}, "topology.bs_count"),
        ({"mecs_per_bs": 1.5}, "topology.mecs_per_bs"),
        ({"t_ms": 0.0}, "topology.t_ms"),
        (
            {"backhaul": DelayDist(mean_t=-1.0, sd_t=1.0, bandwidth_mbit=1.0)},
            "topology.backhaul.mean_t",
        ),
        (
            {"d2d": DelayDist(mean_t=1.0, sd_t=1.0, bandwidth_mbit=0.0)},
            "topology.d2d.bandwidth_mbit",
        ),
    ],
)
def test_bad_params(params: dict[str, object], field_name: str) -> None:
    with pytest.raises(TopologyError) as info:
        HierarchyParams(**params)  # type: ignore[arg-type]
    assert info.value.field == field_name


def test_routes() -> None:
    spec = _small()
    r = spec.route("dev3-1", "mec3")
    assert [(lk.src, lk.dst) for lk in r] == [("dev3-1", "bs1"), ("bs1", "mec3")]
    assert [lk.kind for lk in r] == [LinkKind.CELLULAR, LinkKind.FRONTHAUL]
    d = spec.route("dev2-0", "dev2-2")
    assert len(d) == 1 and d[0].kind == LinkKind.D2D
    p = spec.route("dev3-0", "pub")
    assert p[0].src == "dev3-0" and p[-1].dst == "pub"
    assert p[-1].kind == LinkKind.LAN
    for a, b in pairwise(p):
        assert a.dst == b.src
    assert spec.route("pub", "pub") == ()
    assert spec.route("dev3-1", "mec3") is r  # cached


# --- link sampling statistics ---------------------------------------------------------------


def _truncated_moments(mu: float, sd: float) -> tuple[float, float]:
    """Mean and sd of Normal(mu, sd) truncated to [0, inf)."""
    alpha = -mu / sd
    pdf = math.exp(-alpha * alpha / 2) / math.sqrt(2 * math.pi)
    tail = 1 - 0.5 * (1 + math.erf(alpha / math.sqrt(2)))
    lam = pdf / tail
    return mu + sd * lam, sd * math.sqrt(1 + alpha * lam - lam * lam)


def _check_delays(delays: list[float], mu: float, sd: float) -> None:
    exp_mean, exp_sd = _truncated_moments(mu, sd)
    arr = np.asarray(delays)
    assert (arr >= 0).all()
    assert arr.mean() == pytest.approx(exp_mean, rel=0.05)
    assert arr.std(ddof=1) == pytest.approx(exp_sd, rel=0.05)


def test_backhaul_delay_statistics() -> None:
    t = 10.0
    spec = build_hierarchy(HierarchyParams(mecs_per_bs=60, devices_per_mec=1, t_ms=t), seed=3)
    delays = [lk.delay_ms for lk in spec.links if lk.kind == LinkKind.BACKHAUL and lk.src < lk.dst]
    assert len(delays) == 60 * 59 // 2
    _check_delays(delays, 2.0 * t, 1.1 * t)


def test_d2d_delay_statistics() -> None:
    t = 4.0
    spec = build_hierarchy(HierarchyParams(mecs_per_bs=2, devices_per_mec=45, t_ms=t), seed=5)
    delays = [lk.delay_ms for lk in spec.links if lk.kind == LinkKind.D2D and lk.src < lk.dst]
    assert len(delays) == 2 * 45 * 44 // 2
    _check_delays(delays, 0.5 * t, 0.25 * t)


def test_truncated_normal_edges() -> None:
    rng = np.random.default_rng(0)
    assert truncated_normal(rng, 3.0, 0.0) == 3.0
    assert truncated_normal(rng, -3.0, 0.0) == 0.0
    assert truncated_normal(rng, -1e6, 1.0) == 0.0  # gives up after 1000 tries
    assert all(truncated_normal(rng, -0.5, 1.0) >= 0 for _ in range(200))


# --- radio formulas -------------------------------------------------------------------------


def test_dbm_conversions() -> None:
    assert dbm_to_watt(30.0) == pytest.approx(1.0)
    assert dbm_to_watt(23.0) == pytest.approx(0.19952623149688797)
    assert watt_to_dbm(dbm_to_watt(-174.0)) == pytest.approx(-174.0)


def test_shannon_hand_computed() -> None:
    # p = 10^-0.7 W, h = 100^-2 = 1e-4, N0 B = 10^-20.4 * 1e6 -> SNR = 10^(-0.7 - 4 + 14.4) = 10^9.7
    rate = shannon_rate_mbit(1e6, 23.0, 100.0, 2.0, -174.0, fading=1.0)
    assert rate == pytest.approx(math.log2(1 + 10**9.7), rel=1e-9)
    assert shannon_rate_mbit(1e6, 23.0, 100.0, 2.0, -174.0, fading=0.5) < rate


def test_shannon_decreasing_in_distance() -> None:
    rates = [shannon_rate_mbit(20e6, 23.0, d, 3.76, -174.0) for d in range(50, 1000, 25)]
    assert all(a > b for a, b in pairwise(rates))


# --- serialisation --------------------------------------------------------------------------


def test_dict_round_trip() -> None:
    spec = _small()
    d = json.loads(json.dumps(spec.to_dict()))
    back = TopologySpec.from_dict(d)
    assert back == spec
    assert back.route("dev3-0", "pub") == spec.route("dev3-0", "pub")


def test_from_dict_rejects_bad_kind() -> None:
    d = _small().to_dict()
    d["nodes"][0]["kind"] = "router"
    with pytest.raises(TopologyError) as info:
        TopologySpec.from_dict(d)
    assert info.value.field == "nodes[0].kind"


def test_replace_revalidates() -> None:
    spec = _small()
    with pytest.raises(TopologyError):
        replace(spec, links=spec.links[1:])


def test_physical_links_name_each_cable_once() -> None:
    spec = _small()
    physical = spec.physical_links()
    pairs = [frozenset((ln.src, ln.dst)) for ln in physical]
    assert len(pairs) == len(set(pairs)) == len(spec.links) // 2
    assert set(pairs) == {frozenset((ln.src, ln.dst)) for ln in spec.links}
