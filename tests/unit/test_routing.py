"""topologies.routing: routes from the compact index equal TopologySpec's own BFS routes."""

from __future__ import annotations

import pickle

import pytest

from topologies.builders import HierarchyParams, build_hierarchy
from topologies.routing import LazyRoutes, RouteIndex, attach
from topologies.spec import TopologyError, TopologySpec


def topology(seed: int = 3) -> TopologySpec:
    return build_hierarchy(HierarchyParams(bs_count=2, mecs_per_bs=3, devices_per_mec=4), seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_route_equals_the_topologys_own(seed: int) -> None:
    reference, indexed = topology(seed), topology(seed)
    ids = [n.id for n in reference.nodes]
    for src in ids:
        attach(indexed, src)
    for src in ids:
        for dst in ids:
            assert indexed.route(src, dst) == reference.route(src, dst), (src, dst)


def test_the_index_is_built_once_per_topology_and_attach_is_idempotent() -> None:
    spec = topology()
    index = RouteIndex.of(spec)
    assert RouteIndex.of(spec) is index
    attach(spec, "mec0")
    tree = spec._routes["mec0"]
    attach(spec, "mec0")
    assert spec._routes["mec0"] is tree and isinstance(tree, LazyRoutes)
    assert len(index.dsts) == len(spec.links) and len(index.offsets) == len(spec.nodes) + 1


def test_unknown_nodes_are_refused_as_before() -> None:
    spec = topology()
    with pytest.raises(TopologyError):
        attach(spec, "nope")
    attach(spec, "pub")
    with pytest.raises(TopologyError):
        spec.route("pub", "nope")
    with pytest.raises(KeyError):
        LazyRoutes(RouteIndex.of(spec), "pub")["nope"]


def test_a_lazy_tree_is_not_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(LazyRoutes(RouteIndex.of(topology()), "pub"))
