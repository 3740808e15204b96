"""Which server each node of a topology runs on (`place`), which links cross servers, and
where each base station needs a bridge.

How it works
------------
``by-mec``: a MEC and its devices (`NodeSpec.parent`) form a group; a daemon whose parent
chain leads to a MEC (the publisher: the first MEC) joins that MEC's group, and a daemon
whose chain leads to no MEC is a group of its own. The publisher's group stays on this
machine (the orchestrator follows the rounds in the publisher's files); the other groups go,
largest first (ties: topology order), each to the server whose weighted load after taking it
is least (ties: the order of `cluster.servers`). The scenario's ``place`` entries then move
single daemons (the publisher stays).

A base station is a bridge where its devices' radio links and its MECs' fronthaul links
meet. Where the nodes linked to it are on several servers, it gets a bridge on each of those
servers (`Placement.bs_servers`, its home, the server of the first node linked to it, first),
and the backend joins each other bridge to the home one with an unshaped tunnel (a trunk):
one bridge split in parts, so cellular and fronthaul links stay inside a server. The trunk
adds the tunnel's own latency to paths through the base station that change server; it
models nothing. Every link between two daemons on different servers is a shaped tunnel
(`Placement.crossing`); with ``by-mec`` alone those are backhaul links only.

Deterministic: the same topology and section give the same placement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from topologies.backends.cluster.settings import ClusterSection
from topologies.spec import LinkSpec, NodeKind, TopologyError, TopologySpec


class PlacementError(ValueError):
    """The cluster section does not fit the topology; the message names the field."""


@dataclass(frozen=True)
class Placement:
    """Daemon id -> server name; base station id -> the servers it has a bridge on (home
    first); the physical links between daemons on different servers."""

    server_of: dict[str, str]
    bs_servers: dict[str, tuple[str, ...]]
    crossing: tuple[LinkSpec, ...]

    def nodes_on(self, server: str) -> list[str]:
        """The daemon ids placed on `server`, in topology order."""
        return [n for n, s in self.server_of.items() if s == server]

    def trunks(self) -> list[tuple[str, str, str]]:
        """(base station, home server, other server) for each trunk tunnel."""
        return [(bs, ss[0], other) for bs, ss in self.bs_servers.items() for other in ss[1:]]

    def summary(self, spec: TopologySpec, servers: list[str]) -> list[str]:
        """One line per server (its daemons by kind, its bridges), one for the crossing links
        and one for the trunks."""
        lines = []
        for server in servers:
            kinds = Counter(spec.node(n).kind.value for n in self.nodes_on(server))
            parts = [f"{kinds[k.value]} {k.value}" for k in NodeKind if kinds[k.value]]
            bridges = sum(server in ss for ss in self.bs_servers.values())
            if bridges:
                parts.append(f"{bridges} base-station bridge{'s' * (bridges != 1)}")
            lines.append(f"{server}: {', '.join(parts) or 'nothing'}")
        by_kind = Counter(link.kind.value for link in self.crossing)
        cross = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "none"
        lines.append(f"links between servers (shaped tunnels): {cross}")
        lines.append(f"base-station trunks (unshaped tunnels): {len(self.trunks())}")
        return lines


def _mec_of(spec: TopologySpec, node_id: str) -> str | None:
    """The MEC a daemon's parent chain leads to (itself if it is one), or None."""
    seen: set[str] = set()
    current: str | None = node_id
    while current is not None and current not in seen:
        node = spec.node(current)
        if node.kind == NodeKind.MEC:
            return current
        if node.kind == NodeKind.BS:
            return None
        seen.add(current)
        current = node.parent
    return None


def _groups(spec: TopologySpec) -> list[list[str]]:
    """The daemon groups (see the module docstring), in topology order of their first node."""
    groups: dict[str, list[str]] = {}
    for node in spec.daemons():
        key = _mec_of(spec, node.id) or node.id
        groups.setdefault(key, []).append(node.id)
    return list(groups.values())


def place(spec: TopologySpec, section: ClusterSection) -> Placement:
    """Place every daemon of `spec` on a server of `section` (see the module docstring)."""
    if not section.servers:
        raise PlacementError("cluster.servers: is empty; a cluster run needs at least one server")
    for node_id in section.place:
        try:
            node = spec.node(node_id)
        except TopologyError:
            raise PlacementError(
                f"cluster.place.{node_id}: there is no node {node_id!r} in the topology"
            ) from None
        if not node.runs_daemon:
            raise PlacementError(
                f"cluster.place.{node_id}: is a base station; it has a bridge on every server "
                "its nodes are on, so it is not placed"
            )
        if node.kind == NodeKind.PUBLISHER:
            raise PlacementError(
                f"cluster.place.{node_id}: the publisher runs on this machine (the "
                "orchestrator follows the rounds in its files)"
            )
    weights = {s.name: s.weight for s in section.servers}
    order = {s.name: i for i, s in enumerate(section.servers)}
    load = dict.fromkeys(weights, 0.0)
    server_of: dict[str, str] = {}
    here = next(s.name for s in section.servers if s.is_local)
    groups = _groups(spec)
    publishers = {n.id for n in spec.of_kind(NodeKind.PUBLISHER)}
    for i in sorted(
        range(len(groups)), key=lambda i: (not publishers & set(groups[i]), -len(groups[i]), i)
    ):
        size = len(groups[i])
        target = (
            here
            if publishers & set(groups[i])
            else min(weights, key=lambda s: ((load[s] + size) / weights[s], order[s]))
        )
        load[target] += size
        server_of.update(dict.fromkeys(groups[i], target))
    server_of.update(section.place)
    server_of = {n.id: server_of[n.id] for n in spec.daemons()}
    bs_servers: dict[str, list[str]] = {n.id: [] for n in spec.of_kind(NodeKind.BS)}
    crossing = []
    for link in spec.physical_links():
        ends = [e for e in (link.src, link.dst) if e in bs_servers]
        if ends:
            other = link.dst if link.src in bs_servers else link.src
            if other in server_of and server_of[other] not in bs_servers[ends[0]]:
                bs_servers[ends[0]].append(server_of[other])
        elif server_of[link.src] != server_of[link.dst]:
            crossing.append(link)
    return Placement(
        server_of=server_of,
        bs_servers={bs: tuple(ss) for bs, ss in bs_servers.items()},
        crossing=tuple(crossing),
    )
