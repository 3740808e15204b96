"""The `cluster:` section and the placement of a topology's nodes on servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.scenario import ScenarioError, load_scenario
from topologies.backends.cluster.placement import PlacementError, place
from topologies.backends.cluster.preflight import clock_offset
from topologies.backends.cluster.settings import ClusterSection
from topologies.builders import HierarchyParams, build_hierarchy
from topologies.spec import LinkKind, NodeKind, TopologySpec


def servers(*names: str, **weights: float) -> list[dict[str, object]]:
    return [
        {
            "name": n,
            "address": "localhost" if i == 0 else f"10.0.0.{i}",
            "weight": weights.get(n, 1.0),
        }
        for i, n in enumerate(names)
    ]


def hierarchy(bs: int, mecs: int, devices: int, d2d: bool = True) -> TopologySpec:
    params = HierarchyParams(bs_count=bs, mecs_per_bs=mecs, devices_per_mec=devices)
    if not d2d:
        params = HierarchyParams(bs_count=bs, mecs_per_bs=mecs, devices_per_mec=devices, d2d=None)
    return build_hierarchy(params, seed=3)


def test_by_mec_keeps_each_mec_with_its_devices_and_only_backhaul_crosses() -> None:
    spec = hierarchy(bs=2, mecs=2, devices=4)
    p = place(spec, ClusterSection.model_validate({"servers": servers("a", "b", "c")}))
    for dev in spec.of_kind(NodeKind.DEVICE):
        assert p.server_of[dev.id] == p.server_of[str(dev.parent)]
    assert p.server_of["pub"] == p.server_of["mec0"]
    assert p.crossing and {link.kind for link in p.crossing} == {LinkKind.BACKHAUL}
    # every MEC pair on different servers is one crossing backhaul link
    mecs = [m.id for m in spec.of_kind(NodeKind.MEC)]
    pairs = {frozenset((a, b)) for a in mecs for b in mecs if p.server_of[a] != p.server_of[b]}
    assert {frozenset((link.src, link.dst)) for link in p.crossing} == pairs
    # a base station has a bridge wherever a node linked to it runs, its first MEC's first
    for bs in spec.of_kind(NodeKind.BS):
        linked = {
            p.server_of[n.id] for n in spec.nodes if n.kind == NodeKind.MEC and n.parent == bs.id
        }
        assert set(p.bs_servers[bs.id]) == linked
        first_mec = next(n for n in spec.of_kind(NodeKind.MEC) if n.parent == bs.id)
        assert p.bs_servers[bs.id][0] == p.server_of[first_mec.id]
    assert len(p.trunks()) == sum(len(s) - 1 for s in p.bs_servers.values())


def test_groups_are_balanced_by_weight_largest_first() -> None:
    spec = hierarchy(bs=1, mecs=4, devices=5, d2d=False)  # groups of 7 (with pub), 6, 6, 6
    even = place(spec, ClusterSection.model_validate({"servers": servers("a", "b")}))
    counts = {s: len(even.nodes_on(s)) for s in ("a", "b")}
    assert counts == {"a": 13, "b": 12}
    heavy = place(spec, ClusterSection.model_validate({"servers": servers("a", "b", b=3.0)}))
    # the publisher's group (7) stays on a, this machine; the three groups of 6 go to b
    assert {s: len(heavy.nodes_on(s)) for s in ("a", "b")} == {"a": 7, "b": 18}


def test_one_server_holds_everything_and_nothing_crosses() -> None:
    spec = hierarchy(bs=2, mecs=2, devices=3)
    p = place(spec, ClusterSection.model_validate({"servers": servers("only")}))
    assert set(p.server_of.values()) == {"only"} and not p.crossing and not p.trunks()
    assert len(p.server_of) == len(spec.daemons())


def test_place_moves_single_nodes_and_their_links_cross() -> None:
    spec = hierarchy(bs=1, mecs=2, devices=3)
    cluster = ClusterSection.model_validate(
        {"servers": servers("a", "b"), "place": {"dev0-1": "b", "mec0": "b"}}
    )
    p = place(spec, cluster)
    assert p.server_of["dev0-1"] == "b" and p.server_of["dev0-0"] == "a"
    kinds = {link.kind for link in p.crossing}
    assert LinkKind.D2D in kinds and LinkKind.LAN in kinds
    # the moved device's cellular link stays inside: bs0 has a bridge on b too
    assert set(p.bs_servers["bs0"]) == {"a", "b"}
    assert place(spec, cluster) == p  # deterministic


def test_placement_errors_name_the_field() -> None:
    spec = hierarchy(bs=1, mecs=2, devices=2)
    with pytest.raises(PlacementError, match=r"cluster.place.dev9-9: there is no node"):
        place(
            spec, ClusterSection.model_validate({"servers": servers("a"), "place": {"dev9-9": "a"}})
        )
    with pytest.raises(PlacementError, match=r"cluster.place.bs0: is a base station"):
        place(spec, ClusterSection.model_validate({"servers": servers("a"), "place": {"bs0": "a"}}))
    with pytest.raises(PlacementError, match=r"cluster.place.pub: the publisher runs on this"):
        place(spec, ClusterSection.model_validate({"servers": servers("a"), "place": {"pub": "a"}}))
    with pytest.raises(PlacementError, match=r"cluster.servers: is empty"):
        place(spec, ClusterSection())


@pytest.mark.parametrize(
    ("cluster", "needle"),
    [
        ("servers: [{name: a, address: localhost}, {name: a, address: h2}]", "given twice"),
        ("servers: [{name: a, address: h}, {name: b, address: h}]", "h:22 is given twice"),
        (
            "servers: [{name: a, address: localhost}, {name: b, address: h}]\n  place: {x: z}",
            "server 'z' is not one of: a, b",
        ),
        (
            "servers: [{name: a, address: localhost}, {name: b, address: localhost}]",
            "exactly one server is this machine",
        ),
        ("servers: [{name: a, address: h1}]", "exactly one server is this machine"),
        (
            "servers: [{name: a, address: localhost}, {name: b, address: h}]\n  place: {x: z}",
            "server 'z' is not one of: a, b",
        ),
        ("servers: [{name: A, address: localhost}]", "cluster.servers.0.name"),
        ("servers: [{name: a, address: 'root@h'}]", "cluster.servers.0.address"),
        ("servers: [{name: a, address: h, port: 0}]", "cluster.servers.0.port"),
        ("servers: [{name: a, address: h, key: relative/key}]", "cluster.servers.0.key"),
        ("servers: [{name: a, address: localhost, weight: 0}]", "cluster.servers.0.weight"),
        ("tunnel: ipip", "cluster.tunnel"),
        ("placement: random", "cluster.placement"),
        ("max_clock_skew_ms: 0", "cluster.max_clock_skew_ms"),
        ("servers: [{name: a, address: h, passwd: x}]", "passwd"),
    ],
)
def test_bad_cluster_sections_are_refused_naming_the_field(
    tmp_path: Path, cluster: str, needle: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"cluster:\n  {cluster}\n")
    with pytest.raises(ScenarioError, match=None) as err:
        load_scenario(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_good_cluster_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "cluster:\n  tunnel: vxlan\n  servers:\n    - {name: here, address: localhost}\n"
        "    - {name: vm, address: 10.77.0.2, key: /root/.ssh/id_ed25519, "
        "python: /opt/bcfl/venv/bin/python, weight: 2.5}\n"
    )
    cluster = load_scenario(path).cluster
    assert cluster.server("vm").destination == "root@10.77.0.2:22"
    assert cluster.server("here").is_local and not cluster.server("vm").is_local
    assert load_scenario(tmp_path / "s.yaml").cluster == cluster


def test_clock_offset_takes_the_shortest_round_trip() -> None:
    # (sent, remote, received): the 2nd has the least round trip (0.002 s)
    samples = [(10.0, 10.5, 10.1), (20.0, 20.301, 20.002), (30.0, 30.2, 30.05)]
    offset, uncertainty = clock_offset(samples)
    assert offset == pytest.approx(0.3) and uncertainty == pytest.approx(0.001)
    with pytest.raises(ValueError):
        clock_offset([])
