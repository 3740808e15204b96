"""What a tunnel between servers adds to a link's one-way delay, measured when the network is
up, and the topology with it taken off the links that cross servers.

How it works
------------
A link between daemons on two servers is a tunnel (VXLAN, GRE or ssh) over the servers' own
network: its packets cross the encapsulation, the physical (or virtual) wire and the other
server's stack, which a same-server veth pair does not. After the cluster backend has
addressed the hosts and before it runs tc (so nothing is shaped yet), `measure` pings each
crossing link from its first end to the other end's address on that link (`COUNT` echoes
`INTERVAL_S` apart, the first, ARP, dropped) and takes the median RTT. It does the same on a
*reference*: a link of the same class with both ends on this machine (the first in topology
order), else any link between two daemons on this machine, else none (RTT 0: then the veth's
own ~0.04 ms here counts as tunnel). The tunnel adds (median crossing RTT - median reference
RTT) / 2 in each direction, never less than 0 (`TunnelDelay.added_ms`).

`subtract` gives the topology to shape with: each crossing link's delay in both directions
minus what its tunnel adds, never below 0 (a configured delay smaller than the tunnel's cannot
be reached: `TunnelDelay.unreachable`). The backend shapes the kernel delay (netem) with it and
writes it into the run's shared file, from which the nodes shape user-space delay; the run's
``topology.json`` keeps the configured delays, and ``meta.json`` (cluster.tunnel_delay) each
measurement. Our choices (the issue asks to subtract "where it can be measured"): the median
(robust to a scheduling hiccup of a software-emulated server), one measurement at start (a
tunnel's delay that drifts during a run is not followed), and the tunnel's jitter is reported
(`spread_ms`, the crossing RTTs' interquartile range / 2), not subtracted: jitter does not
subtract.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topologies.backends.cluster.placement import Placement
from topologies.spec import LinkSpec, TopologySpec

COUNT = 20
INTERVAL_S = 0.01


@dataclass(frozen=True)
class TunnelDelay:
    """One crossing link's measurement: median RTTs over it and over its reference."""

    src: str
    dst: str
    kind: str
    rtt_ms: float
    reference: tuple[str, str] | None  # the reference link's ends; None: no reference
    reference_rtt_ms: float
    spread_ms: float
    configured_ms: float  # the link's configured delay, src -> dst

    @property
    def added_ms(self) -> float:
        """What the tunnel adds to each direction's one-way delay."""
        return max(0.0, (self.rtt_ms - self.reference_rtt_ms) / 2)

    @property
    def shaped_ms(self) -> float:
        """The delay the link is shaped with, src -> dst."""
        return max(0.0, self.configured_ms - self.added_ms)

    @property
    def unreachable(self) -> bool:
        """The configured delay is smaller than the tunnel's own."""
        return self.added_ms > self.configured_ms

    def to_dict(self) -> dict[str, Any]:
        """What meta.json records of it."""
        return {
            "link": [self.src, self.dst],
            "kind": self.kind,
            "rtt_ms": round(self.rtt_ms, 4),
            "reference": list(self.reference) if self.reference else None,
            "reference_rtt_ms": round(self.reference_rtt_ms, 4),
            "added_one_way_ms": round(self.added_ms, 4),
            "spread_ms": round(self.spread_ms, 4),
            "configured_ms": self.configured_ms,
            "shaped_ms": round(self.shaped_ms, 4),
        }


def reference_link(
    spec: TopologySpec, placement: Placement, here: str, kind: str
) -> LinkSpec | None:
    """A physical link of class `kind` between two daemons on server `here` (else of any
    class), the first in topology order; None where this machine has no such link."""
    daemons = {n.id for n in spec.daemons()}
    inside = [
        link
        for link in spec.physical_links()
        if {link.src, link.dst} <= daemons
        and placement.server_of.get(link.src) == here == placement.server_of.get(link.dst)
    ]
    same_kind = [link for link in inside if str(link.kind) == kind]
    chosen = same_kind or inside
    return chosen[0] if chosen else None


def measure(
    spec: TopologySpec,
    placement: Placement,
    here: str,
    rtts: Callable[[str, str], list[float]],
) -> list[TunnelDelay]:
    """Each crossing link's `TunnelDelay`; `rtts(src, dst)`: ping RTTs (ms) from daemon `src`
    to `dst`'s address on their link. A reference measured once serves every crossing link
    that names it."""
    medians: dict[tuple[str, str], float] = {}

    def median_of(link: LinkSpec) -> float:
        key = (link.src, link.dst)
        if key not in medians:
            medians[key] = statistics.median(rtts(link.src, link.dst))
        return medians[key]

    out = []
    for link in placement.crossing:
        samples = rtts(link.src, link.dst)
        q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (0.0, 0.0, 0.0)
        ref = reference_link(spec, placement, here, str(link.kind))
        out.append(
            TunnelDelay(
                src=link.src,
                dst=link.dst,
                kind=str(link.kind),
                rtt_ms=statistics.median(samples),
                reference=None if ref is None else (ref.src, ref.dst),
                reference_rtt_ms=0.0 if ref is None else median_of(ref),
                spread_ms=(q3 - q1) / 2,
                configured_ms=link.delay_ms,
            )
        )
    return out


def subtract(spec: TopologySpec, delays: list[TunnelDelay]) -> TopologySpec:
    """`spec` with every measured crossing link's delay (both directions) less what its
    tunnel adds, never below 0; the other links as they are."""
    added = {frozenset((d.src, d.dst)): d.added_ms for d in delays}
    links = tuple(
        dataclasses.replace(link, delay_ms=max(0.0, link.delay_ms - added[pair]))
        if (pair := frozenset((link.src, link.dst))) in added
        else link
        for link in spec.links
    )
    return TopologySpec(nodes=spec.nodes, links=links)
