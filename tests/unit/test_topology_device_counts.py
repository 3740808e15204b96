"""Devices per MEC drawn from U{LO..HI} and `topology.d2d: off` (issue #15, item 1: BEES's
UEs per edge server ~ U(3, 7), no D2D links), and that integer scenarios did not change."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from node.schemes.gossip_fedavg.scheme import gossip_peers
from orchestrator.cli import main
from orchestrator.preflight import (
    FORK_SERVER_MB,
    check,
    check_memory,
    check_plan,
    data_facts,
    node_memory_mb,
)
from orchestrator.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from topologies import (
    CellularParams,
    HierarchyParams,
    LinkKind,
    NodeKind,
    TopologyError,
    TopologySpec,
    build_hierarchy,
    shannon_rate_mbit,
)
from topologies.builders import UniformCount

REPO = Path(__file__).resolve().parents[2]
UNIFORM_NEED = "need [LO, HI] integers with 1 <= LO <= HI <= 1000"


def _digest(spec: TopologySpec) -> str:
    """SHA-256 over every node and every directed link's parameters, in spec order."""
    h = hashlib.sha256()
    for n in spec.nodes:
        h.update(repr((n.id, str(n.kind), n.parent)).encode())
    for lk in spec.links:
        fields = (lk.src, lk.dst, str(lk.kind), lk.bandwidth_mbit, lk.delay_ms)
        h.update(repr((*fields, lk.jitter_ms, lk.loss_pct)).encode())
    return h.hexdigest()


def _scenario(**sections: Any) -> tuple[Scenario, TopologySpec]:
    s = parse_scenario(sections)
    return s, build_hierarchy(s.topology.to_params(), s.seed)


def _scenario_error(topology: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario({"topology": topology})
    return str(info.value)


# --- integer scenarios: the same topology, byte for byte -----------------------------------

# Recorded from the builder before per-MEC counts and d2d: off existed (commit 5b43f99).
BEFORE = [
    (
        HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3),
        7,
        "fcbe33c253e80435136c3dad438400c9b4d896295d130df691caca67008e3091",
        70,
    ),
    (
        HierarchyParams(),
        0,
        "b7381fe4a533271e9867fdc01f702cec4a7b5803e2a73bd55ed3150795eb8a8d",
        68,
    ),
    (
        HierarchyParams(bs_count=1, mecs_per_bs=3, devices_per_mec=4, with_publisher=False),
        42,
        "99e6208d95e63386b3318f5248e3e0f82e4654a95b709a554d51cd922e1d9f1f",
        72,
    ),
]


@pytest.mark.parametrize(("params", "seed", "digest", "links"), BEFORE)
def test_integer_count_builds_the_topology_it_built_before(
    params: HierarchyParams, seed: int, digest: str, links: int
) -> None:
    spec = build_hierarchy(params, seed)

    assert len(spec.links) == links
    assert _digest(spec) == digest


def test_integer_count_link_values_are_the_recorded_ones() -> None:
    spec = build_hierarchy(HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3), 7)

    assert spec.link("mec0", "mec1").delay_ms == 17.9437596090705
    assert spec.link("mec0", "mec2").delay_ms == 14.074378145686998
    assert spec.link("dev0-0", "dev0-1").delay_ms == 2.553702304858401
    assert spec.link("dev0-0", "bs0").bandwidth_mbit == 50.801061208992685
    assert spec.link("bs0", "dev0-0").bandwidth_mbit == 72.94712550938861


def test_integer_scenario_gives_the_builder_the_same_integer() -> None:
    s, spec = _scenario(
        seed=7, topology={"base_stations": 2, "mecs_per_bs": 2, "devices_per_mec": 3}
    )

    assert s.topology.to_params().devices_per_mec == 3
    assert _digest(spec) == BEFORE[0][2]
    assert spec.devices_per_mec() == {"mec0": 3, "mec1": 3, "mec2": 3, "mec3": 3}


# --- counts drawn per MEC ----------------------------------------------------------------------


def test_uniform_counts_are_in_range_reproducible_and_cover_the_range() -> None:
    params = HierarchyParams(bs_count=4, mecs_per_bs=5, devices_per_mec=UniformCount(3, 7))

    drawn = {seed: params.device_counts(seed) for seed in range(5)}

    assert all(len(c) == 20 for c in drawn.values())
    assert all(3 <= n <= 7 for c in drawn.values() for n in c)
    assert {n for c in drawn.values() for n in c} == {3, 4, 5, 6, 7}  # both ends included
    assert len(set(drawn.values())) == 5  # the seed matters
    assert params.device_counts(3) == drawn[3]  # and decides
    assert params.max_devices_per_mec == 7


def test_uniform_spec_has_the_drawn_devices_under_each_mec() -> None:
    params = HierarchyParams(bs_count=2, mecs_per_bs=3, devices_per_mec=UniformCount(3, 7))
    counts = params.device_counts(11)

    spec = build_hierarchy(params, 11)
    again = build_hierarchy(params, 11)

    assert list(spec.devices_per_mec().values()) == list(counts)
    for j, n in enumerate(counts):
        devices = [d.id for d in spec.of_kind(NodeKind.DEVICE) if d.parent == f"mec{j}"]
        assert devices == [f"dev{j}-{k}" for k in range(n)]
    assert _digest(again) == _digest(spec)


def test_drawn_counts_do_not_consume_the_link_stream() -> None:
    """A drawn topology is exactly the one built from the same counts given outright: the
    count draws come from their own stream."""
    drawn = HierarchyParams(bs_count=2, mecs_per_bs=3, devices_per_mec=UniformCount(3, 7))
    counts = drawn.device_counts(5)
    given = HierarchyParams(bs_count=2, mecs_per_bs=3, devices_per_mec=counts)

    assert _digest(build_hierarchy(drawn, 5)) == _digest(build_hierarchy(given, 5))


def test_degenerate_uniform_equals_the_integer() -> None:
    uniform = HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=UniformCount(3, 3))

    assert _digest(build_hierarchy(uniform, 7)) == BEFORE[0][2]


def test_bandwidth_per_bs_is_shared_by_the_devices_really_there() -> None:
    # Fixed distance and no fading: a device's rate depends only on its bandwidth share.
    cell = CellularParams(distance_min_m=150.0, distance_max_m=150.0, rayleigh_fading=False)
    params = HierarchyParams(
        bs_count=2, mecs_per_bs=2, devices_per_mec=UniformCount(1, 9), cellular=cell
    )
    spec = build_hierarchy(params, 4)
    per_mec = spec.devices_per_mec()
    at_bs = {"bs0": per_mec["mec0"] + per_mec["mec1"], "bs1": per_mec["mec2"] + per_mec["mec3"]}
    assert at_bs["bs0"] != at_bs["bs1"]  # the seed gives the two BSs different loads

    for dev in spec.of_kind(NodeKind.DEVICE):
        bs = str(spec.node(str(dev.parent)).parent)
        share_hz = 20e6 / at_bs[bs]
        up = shannon_rate_mbit(share_hz, 23.0, 150.0, 3.76, -174.0)
        down = shannon_rate_mbit(share_hz, 43.0, 150.0, 3.76, -174.0)
        assert spec.link(dev.id, bs).bandwidth_mbit == pytest.approx(up, rel=1e-12)
        assert spec.link(bs, dev.id).bandwidth_mbit == pytest.approx(down, rel=1e-12)


def test_scenario_uniform_reaches_the_builder() -> None:
    s, spec = _scenario(
        seed=3,
        topology={"base_stations": 1, "mecs_per_bs": 20, "devices_per_mec": {"uniform": [3, 7]}},
    )

    params = s.topology.to_params()
    assert params.devices_per_mec == UniformCount(3, 7)
    assert tuple(spec.devices_per_mec().values()) == params.device_counts(3)
    assert s.model_dump(mode="json")["topology"]["devices_per_mec"] == {"uniform": [3, 7]}
    assert parse_scenario(s.model_dump(mode="json")) == s  # a run's scenario.json reloads


def test_memory_estimate_uses_each_mecs_own_count() -> None:
    """A MEC's estimate counts the devices it really has (not HI for every MEC)."""
    data = data_facts("digits", None)
    s, spec = _scenario(seed=1, topology={"mecs_per_bs": 6, "devices_per_mec": {"uniform": [2, 9]}})
    per_mec = spec.devices_per_mec()
    assert len(set(per_mec.values())) > 1
    devices = sum(per_mec.values())

    def total(count_of: dict[str, int]) -> float:
        return FORK_SERVER_MB.get(s.backend, 0.0) + sum(
            node_memory_mb(s, n.kind, devices, count_of.get(n.id, 0), data) for n in spec.daemons()
        )

    real = check_memory(s, spec, data, None)

    assert real == pytest.approx(total(per_mec))
    assert real < total({m: 9 for m in per_mec})


# --- d2d: off ----------------------------------------------------------------------------------


def test_d2d_off_builds_no_d2d_links_and_the_same_other_links() -> None:
    on = build_hierarchy(HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3), 7)
    off = build_hierarchy(
        HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3, d2d=None), 7
    )

    assert [lk for lk in off.links if lk.kind == LinkKind.D2D] == []
    assert off.links == tuple(lk for lk in on.links if lk.kind != LinkKind.D2D)
    assert off.nodes == on.nodes
    assert off.route("dev0-0", "dev0-1")  # still connected, through the BS


def test_d2d_off_device_gossips_with_its_mec_only() -> None:
    spec = build_hierarchy(HierarchyParams(mecs_per_bs=2, devices_per_mec=4, d2d=None), 1)

    assert gossip_peers(spec, "dev1-2") == ["mec1"]
    assert gossip_peers(spec, "mec1") == ["dev1-0", "dev1-1", "dev1-2", "dev1-3"]


@pytest.mark.parametrize("off", [False, "off"])
def test_scenario_d2d_off(off: object) -> None:
    s, spec = _scenario(topology={"d2d": off})

    assert s.topology.d2d is False
    assert s.topology.to_params().d2d is None
    assert not [lk for lk in spec.links if lk.kind == LinkKind.D2D]


def test_yaml_d2d_off_and_the_default(tmp_path: Path) -> None:
    path = tmp_path / "bees.yaml"
    path.write_text("topology: {devices_per_mec: {uniform: [3, 7]}, d2d: off}\n")

    assert load_scenario(path).topology.to_params().d2d is None
    assert parse_scenario({}).topology.to_params().d2d == HierarchyParams().d2d


def test_two_layer_refuses_d2d_off_naming_the_field() -> None:
    s, spec = _scenario(
        scheme="two-layer",
        ledger={"consensus": "pbft"},
        topology={"mecs_per_bs": 3, "devices_per_mec": 3, "d2d": False},
    )

    with pytest.raises(ScenarioError, match=r"^scheme: two-layer: topology\.d2d: off is invalid"):
        check_plan(s, spec)
    on, spec_on = _scenario(
        scheme="two-layer",
        ledger={"consensus": "pbft"},
        topology={"mecs_per_bs": 3, "devices_per_mec": 3},
    )
    check_plan(on, spec_on)  # the same scenario with D2D plans


def test_bees_shaped_scenario_passes_preflight() -> None:
    s, spec = _scenario(
        seed=2,
        topology={
            "base_stations": 1,
            "mecs_per_bs": 4,
            "devices_per_mec": {"uniform": [3, 7]},
            "d2d": "off",
        },
    )

    found = check(s, spec, available=None)

    assert found.nodes == 1 + 4 + sum(spec.devices_per_mec().values())


def test_cli_validate_quickstart_and_a_bees_shaped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bees = tmp_path / "bees.yaml"
    bees.write_text(
        "topology: {base_stations: 1, mecs_per_bs: 4, devices_per_mec: {uniform: [3, 7]}, "
        "d2d: off}\n"
    )

    assert main(["validate", str(REPO / "scenarios" / "quickstart.yaml"), str(bees)]) == 0
    out = capsys.readouterr().out
    assert "quickstart.yaml: ok" in out
    assert f"{bees}: ok" in out


# --- errors name the field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bounds", [[7, 3], [0, 3], [3, 1001], [3], [3, 7, 9], [3.0, 7], [True, 3], "3..7", None]
)
def test_bad_uniform_names_the_field(bounds: object) -> None:
    msg = _scenario_error({"devices_per_mec": {"uniform": bounds}})

    assert msg.startswith(f"scenario: topology.devices_per_mec.uniform: {UNIFORM_NEED}, got ")


@pytest.mark.parametrize(
    "value", [0, 1001, True, 2.5, "5", {"uniform": [3, 7], "seed": 1}, {"normal": [5, 1]}]
)
def test_bad_devices_per_mec_names_the_field_and_forms(value: object) -> None:
    msg = _scenario_error({"devices_per_mec": value})

    assert msg.startswith("scenario: topology.devices_per_mec: ")
    assert msg.endswith("is invalid; allowed: an integer 1..1000 or {uniform: [LO, HI]}")


@pytest.mark.parametrize(
    ("d2d", "expected"),
    [
        (True, "topology.d2d: true is invalid; allowed: a link class {mean_t, sd_t, "),
        ("on", "topology.d2d: 'on' is invalid; allowed: a link class"),
        (None, "topology.d2d: null is invalid"),
        (
            {"mean_t": 0.5, "sd_t": 0.1, "bandwidth_mbit": 50.0, "delay": 1.0},
            "topology.d2d.delay: unknown field; allowed: mean_t, sd_t, bandwidth_mbit",
        ),
        ({"mean_t": 0.5, "sd_t": 0.1}, "topology.d2d.bandwidth_mbit: required field is missing"),
        (
            {"mean_t": -1.0, "sd_t": 0.1, "bandwidth_mbit": 50.0},
            "topology.d2d.mean_t: -1.0 is invalid",
        ),
    ],
)
def test_bad_d2d_names_the_field(d2d: object, expected: str) -> None:
    assert expected in _scenario_error({"d2d": d2d})


def test_size_check_counts_the_worst_case() -> None:
    shape = {"base_stations": 10, "mecs_per_bs": 10}
    parse_scenario({"topology": {**shape, "devices_per_mec": {"uniform": [1, 50]}}})

    msg = _scenario_error({**shape, "devices_per_mec": {"uniform": [1, 100]}})
    assert "10101 node processes" in msg and "is too large" in msg
    # 90 per MEC: D2D meshes make it too many links; without D2D it fits
    assert "too large" in _scenario_error({**shape, "devices_per_mec": 90})
    parse_scenario({"topology": {**shape, "devices_per_mec": 90, "d2d": False}})


@pytest.mark.parametrize(
    ("count", "field"),
    [
        (UniformCount(5, 3), "topology.devices_per_mec.uniform"),
        (UniformCount(0, 3), "topology.devices_per_mec.uniform"),
        ((3, 3), "topology.devices_per_mec"),  # 4 MECs
        ((3, 0, 3, 3), "topology.devices_per_mec"),
        (0, "topology.devices_per_mec"),
    ],
)
def test_builder_errors_name_the_field(count: Any, field: str) -> None:
    with pytest.raises(TopologyError) as info:
        HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=count)

    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
