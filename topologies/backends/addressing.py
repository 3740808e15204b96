"""IP plan and static routes that make a TopologySpec's fewest-hops routes real in Mininet.

How it works
------------
Every daemon gets an identity address 10.77.X.Y/32 on its loopback; peers connect to it.
Each base station is a Linux bridge whose attached hosts share the subnet 10.(100+b).0.0/16
(a host's address there is derived from its index); every host-to-host link (D2D,
backhaul, LAN) is a /30 from 10.128.0.0/10. For each pair (src, dst) the spec's route gives
the first link and the next daemon on the path (base stations are skipped: they are
switches); src gets ``ip route add ID(dst)/32 via ADDR(next hop) dev IFACE src ID(src)``.
Every host forwards (ip_forward=1, rp_filter=0), so multi-hop routes (device → BS → MEC →
backhaul → MEC → publisher) work exactly as the spec says. Pure data: no I/O here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from topologies.spec import NodeKind, TopologySpec

PORT = 5555


def identity_address(index: int) -> str:
    """The identity address of the `index`-th daemon."""
    if not 0 <= index < 250 * 256:
        raise ValueError(f"daemon index {index} out of range")
    return f"10.77.{index // 250}.{index % 250 + 1}"


@dataclass
class Interface:
    """One end of a physical link on a host (or a switch port, for host-switch links)."""

    node: str
    name: str
    address: str | None  # None on switch ports
    prefix: int
    peer: str


@dataclass
class AddressPlan:
    """Interfaces, addresses and static routes for every host of a topology."""

    spec: TopologySpec
    short: dict[str, str]
    identity: dict[str, str] = field(default_factory=dict)
    # (node, neighbour) -> the node's interface towards that neighbour (neighbour may be a BS)
    iface: dict[tuple[str, str], Interface] = field(default_factory=dict)
    routes: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def address_on(self, node: str, neighbour: str) -> str:
        """`node`'s address on its link towards `neighbour` (a BS: the bridge's subnet)."""
        addr = self.iface[(node, neighbour)].address
        assert addr is not None
        return addr


def plan(spec: TopologySpec, short: dict[str, str]) -> AddressPlan:
    """Interfaces, addresses and routes for `spec`; `short` maps node ids to Mininet names."""
    p = AddressPlan(spec, short)
    daemons = [n.id for n in spec.daemons()]
    index = {nid: i for i, nid in enumerate(daemons)}
    for nid in daemons:
        p.identity[nid] = identity_address(index[nid])
    bs_index = {n.id: i for i, n in enumerate(spec.of_kind(NodeKind.BS))}
    counters: dict[str, int] = {}
    p2p = ipaddress.IPv4Network("10.128.0.0/10").subnets(new_prefix=30)
    for link in spec.physical_links():
        a, b = link.src, link.dst
        ends = []
        for node, peer in ((a, b), (b, a)):
            n = counters.get(node, 0)
            counters[node] = n + 1
            ends.append((node, peer, f"{short[node]}-eth{n}"))
        if a in bs_index or b in bs_index:
            bs = a if a in bs_index else b
            for node, peer, name in ends:
                if node == bs:
                    p.iface[(node, peer)] = Interface(node, name, None, 16, peer)
                else:
                    i = index[node]
                    addr = f"10.{100 + bs_index[bs]}.{i // 250}.{i % 250 + 1}"
                    p.iface[(node, peer)] = Interface(node, name, addr, 16, peer)
        else:
            net = next(p2p)
            hosts = list(net.hosts())
            for (node, peer, name), host_addr in zip(ends, hosts, strict=True):
                p.iface[(node, peer)] = Interface(node, name, str(host_addr), 30, peer)
    for src in daemons:
        table = []
        for dst in daemons:
            if dst == src:
                continue
            route = spec.route(src, dst)
            first = route[0]
            hop = next(link.dst for link in route if link.dst in index)
            via = p.address_on(hop, first.src if first.dst == hop else first.dst)
            table.append((p.identity[dst], via, p.iface[(src, first.dst)].name))
        p.routes[src] = table
    return p


def route_batch(p: AddressPlan, node: str) -> str:
    """An ``ip -batch`` script: identity address, interface addresses, routes of `node`."""
    lines = [f"addr add {p.identity[node]}/32 dev lo"]
    for (owner, _), itf in sorted(p.iface.items()):
        if owner == node and itf.address is not None:
            lines.append(f"addr add {itf.address}/{itf.prefix} dev {itf.name}")
            lines.append(f"link set {itf.name} up")
    src = p.identity[node]  # replies must come back to the identity address
    lines += [
        f"route add {dst}/32 via {via} dev {dev} src {src}" for dst, via, dev in p.routes[node]
    ]
    return "\n".join(lines) + "\n"
