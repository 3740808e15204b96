"""Fewest-hops routes over compact integer arrays, for processes forked from a shared topology.

Why: `TopologySpec.route(src, dst)` computes, on its first call for `src`, the route from
`src` to every node (a BFS that reads every `LinkSpec` of the topology). In a node daemon
forked from the fork server, reading a shared Python object writes its reference count, so
that BFS copies every page holding a link: measured 8.5 MB private per daemon at 1,000
devices and 100 MECs (the MEC mesh is 9,900 directed links), against ~1 MB at 100 devices
(`bench/daemon_memory.py`).

`RouteIndex.of(topology)` (built once, by the fork server's preload) keeps the adjacency as
``array('i')`` rows of integers (CSR: row offsets, destination indices), in the order of
`TopologySpec.links_from` (sorted by destination id), so the BFS below visits links in the
order `TopologySpec` does and finds the same routes (ties broken by sorted ids). A BFS from
one source touches only these arrays and its own private parent array; a route is then read
back as the `LinkSpec` objects on its path only. `attach(topology, src)` puts a lazy tree
for `src` in the topology's per-source route cache, so `TopologySpec.route(src, ...)` (and
the user-space shaper that calls it) use it unchanged.
"""

from __future__ import annotations

import logging
from array import array
from collections import deque
from typing import Any

from topologies.spec import LinkSpec, TopologySpec

logger = logging.getLogger(__name__)

_INDEX_ATTR = "_route_index"  # where `RouteIndex.of` keeps a topology's index


class RouteIndex:
    """A topology's adjacency as integer arrays (build once, share copy-on-write)."""

    def __init__(self, topology: TopologySpec) -> None:
        """Index `topology`'s nodes and out-links (reads every link once)."""
        ids = [n.id for n in topology.nodes]
        self.ids: tuple[str, ...] = tuple(ids)
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(ids)}
        offsets = array("i", [0])
        dsts = array("i")
        links: list[LinkSpec] = []
        for nid in ids:
            for link in topology.links_from(nid):  # sorted by destination id, as route() walks
                dsts.append(self.index[link.dst])
                links.append(link)
            offsets.append(len(dsts))
        self.offsets = offsets
        self.dsts = dsts
        self.links: tuple[LinkSpec, ...] = tuple(links)  # CSR position -> link

    @classmethod
    def of(cls, topology: TopologySpec) -> RouteIndex:
        """The index of `topology`, built on first use and kept with it."""
        index = getattr(topology, _INDEX_ATTR, None)
        if not isinstance(index, RouteIndex):
            index = cls(topology)
            object.__setattr__(topology, _INDEX_ATTR, index)
        return index

    def parents(self, src: str) -> array[int]:
        """For each node, the CSR position of the link a fewest-hops route from `src` reaches
        it by (-1: `src` itself or unreachable); the same BFS as `TopologySpec`."""
        start = self.index[src]
        parent = array("i", [-1]) * len(self.ids)
        seen = bytearray(len(self.ids))
        seen[start] = 1
        offsets, dsts = self.offsets, self.dsts
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for pos in range(offsets[here], offsets[here + 1]):
                dst = dsts[pos]
                if not seen[dst]:
                    seen[dst] = 1
                    parent[dst] = pos
                    queue.append(dst)
        return parent


class LazyRoutes(dict[str, tuple[LinkSpec, ...]]):
    """One source's routes, each built on first lookup from a BFS parent array; a missing
    key is an unreachable (or unknown) destination, as in `TopologySpec`'s own trees."""

    def __init__(self, index: RouteIndex, src: str) -> None:
        super().__init__({src: ()})
        self._index = index
        self._src = src
        self._parent: array[int] | None = None

    def __missing__(self, dst: str) -> tuple[LinkSpec, ...]:
        index = self._index
        target = index.index.get(dst)
        if target is None:
            raise KeyError(dst)
        if self._parent is None:
            self._parent = index.parents(self._src)
            logger.debug("computed the BFS tree from %s (%d nodes)", self._src, len(index.ids))
        path: list[LinkSpec] = []
        start = index.index[self._src]
        node = target
        while node != start:
            pos = self._parent[node]
            if pos < 0:
                raise KeyError(dst)  # unreachable
            link = index.links[pos]
            path.append(link)
            node = index.index[link.src]
        route = tuple(reversed(path))
        self[dst] = route
        return route

    def __reduce__(self) -> Any:  # a cache: never pickled with its index
        raise TypeError("LazyRoutes is not picklable")


def attach(topology: TopologySpec, src: str) -> None:
    """Make `topology.route(src, ...)` use the compact index (built once per topology)
    instead of a BFS over the shared `LinkSpec` objects. Routes are identical."""
    topology.node(src)  # TopologyError for an unknown node, as route() would raise
    routes: dict[str, Any] = topology._routes
    if not isinstance(routes.get(src), LazyRoutes):
        routes[src] = LazyRoutes(RouteIndex.of(topology), src)
