"""Per message, per captured hop: when its bytes were on the wire, joined with the links.

How it works
------------
Every observation of a message (`capture.Observation`) is keyed by (sender, seq, origin,
receiver): sender and seq from the envelope, the origin and the receiver from the TCP source
and destination addresses (nodes' identity addresses, `runinfo`; the origin is the sender
unless a node relays another's frame, and is the sender where its address is unknown). The
capture points that saw it (the node each pcap was taken at; one observation per node, the
earliest, our choice where two files of one node saw it) are put in the order of the route
origin -> receiver (`TopologySpec.route`); each pair of consecutive points is a hop and
gives one row. A message seen at a single point gives one row from that point to the
receiver (only the source side known) or, seen only at the receiver, from the origin to it
(only the destination side known).

A row's configured link is the route between its two points: ``link_class`` the classes of
the links on it joined by ``+`` (e.g. ``cellular+fronthaul`` for device -> BS -> MEC: a base
station is a switch, our choice to name both), ``configured_delay_ms`` their summed delay,
``configured_bandwidth_mbps`` the smallest bandwidth. Times are wall-clock ms (pcap
timestamps and the nodes' records share the host's clock in mininet and containernet):

- ``send_to_wire_ms``: the sender's send record (messages.csv) -> first byte on the
  sender's interface (rows whose source point is the sender, where the record exists);
- ``wire_ms``: first -> last byte on one interface (the source side's; else the
  destination side's);
- ``propagation_ms``: first byte at the source point -> first byte at the destination point;
- ``one_way_ms``: the message's one-way delay, on the row that reaches its receiver (where
  the sender logged the send): the sender's send record -> the first byte at the receiver.
  It is compared with ``route_delay_ms``, the summed configured delay of the whole route
  sender -> receiver (``route_class`` its link classes), because wherever the delay is
  applied it lies between those two moments: user space holds the frame for the whole
  route's delay before the sender's socket, and kernel netem delays the packets at each
  egress along the route — the first one before tcpdump's tap on the sender's interface,
  which sees packets as they leave the qdisc. ``propagation_ms`` between two capture points
  therefore shows only the delay applied after the first of them;
- ``total_ms``: the send record (else the first byte at the source point) -> the last byte
  at the destination point;
- ``wire_to_recv_ms``: last byte at the receiver -> its receive record.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields

from orchestrator.pcaplat.capture import Observation
from orchestrator.pcaplat.runinfo import RunInfo

LATENCY_CSV = "latency.csv"


@dataclass
class HopRow:
    """One row of latency.csv: one message on one captured hop."""

    msg_type: str
    sender: str
    seq: int
    receiver: str
    src_node: str
    dst_node: str
    path: str
    link_class: str
    configured_delay_ms: float | None
    configured_bandwidth_mbps: float | None
    delay_shaped_by: str
    bytes: int
    src_capture: str
    dst_capture: str
    first_byte_src_ms: float | None
    last_byte_src_ms: float | None
    first_byte_dst_ms: float | None
    last_byte_dst_ms: float | None
    node_sent_ms: float | None
    node_recv_ms: float | None
    send_to_wire_ms: float | None
    wire_ms: float | None
    propagation_ms: float | None
    route_class: str
    route_delay_ms: float | None
    one_way_ms: float | None
    total_ms: float | None
    wire_to_recv_ms: float | None


COLUMNS = tuple(f.name for f in fields(HopRow))


@dataclass(frozen=True)
class _Point:
    node: str
    obs: Observation


def hop_rows(info: RunInfo, observations: Iterable[tuple[str | None, Observation]]) -> list[HopRow]:
    """latency.csv's rows from (capture point node, observation) pairs."""
    by_msg: dict[tuple[str, int, str, str], dict[str, Observation]] = {}
    for point, obs in observations:
        if point is None:
            continue
        receiver = info.node_of_ip.get(obs.msg.key.dst, obs.msg.key.dst)
        origin = info.node_of_ip.get(obs.msg.key.src, obs.header.sender)
        seen = by_msg.setdefault((obs.header.sender, obs.header.seq, origin, receiver), {})
        old = seen.get(point)
        if old is None or obs.msg.first_ms < old.msg.first_ms:
            seen[point] = obs
    rows: list[HopRow] = []
    for (sender, seq, origin, receiver), seen in sorted(by_msg.items()):
        path = info.path(origin, receiver)
        if not path:
            continue  # the receiver is not a node of the topology
        points = sorted(
            (_Point(node, obs) for node, obs in seen.items() if node in path),
            key=lambda p: path.index(p.node),
        )
        if len(points) == 1:
            only = points[0]
            if only.node == receiver:
                rows.append(_row(info, (sender, seq, receiver), path, None, only, only.node))
            else:
                rows.append(_row(info, (sender, seq, receiver), path, only, None, receiver))
        for a, b in itertools.pairwise(points):
            rows.append(_row(info, (sender, seq, receiver), path, a, b, b.node))
    return rows


def _row(
    info: RunInfo,
    msg: tuple[str, int, str],
    path: list[str],
    src: _Point | None,
    dst: _Point | None,
    dst_node: str,
) -> HopRow:
    sender, seq, receiver = msg
    src_node = src.node if src is not None else path[0]  # the origin
    hop = path[path.index(src_node) : path.index(dst_node) + 1]
    links = [info.spec.link(a, b) for a, b in itertools.pairwise(hop)]
    classes = list(dict.fromkeys(str(lk.kind) for lk in links))
    point = src if src is not None else dst
    assert point is not None
    any_obs = point.obs
    fs = src.obs.msg.first_ms if src else None
    ls = src.obs.msg.last_ms if src else None
    fd = dst.obs.msg.first_ms if dst else None
    ld = dst.obs.msg.last_ms if dst else None
    sent = info.records.sent.get((sender, seq, receiver)) if src_node == sender else None
    route = [info.spec.link(a, b) for a, b in itertools.pairwise(path)]
    message_sent = info.records.sent.get((sender, seq, receiver)) if path[0] == sender else None
    recv = info.records.recv.get((sender, seq, receiver)) if dst_node == receiver else None
    start = sent if sent is not None else fs
    return HopRow(
        msg_type=any_obs.header.type,
        sender=sender,
        seq=seq,
        receiver=receiver,
        src_node=src_node,
        dst_node=dst_node,
        path=">".join(hop),
        link_class="+".join(classes),
        configured_delay_ms=sum(lk.delay_ms for lk in links) if links else None,
        configured_bandwidth_mbps=min(lk.bandwidth_mbit for lk in links) if links else None,
        delay_shaped_by=info.delay_shaped_by,
        bytes=any_obs.msg.size,
        src_capture=src.obs.file if src else "",
        dst_capture=dst.obs.file if dst else "",
        first_byte_src_ms=fs,
        last_byte_src_ms=ls,
        first_byte_dst_ms=fd,
        last_byte_dst_ms=ld,
        node_sent_ms=sent,
        node_recv_ms=recv,
        send_to_wire_ms=_diff(fs, sent),
        wire_ms=_diff(ls, fs) if src else _diff(ld, fd),
        propagation_ms=_diff(fd, fs),
        route_class="+".join(dict.fromkeys(str(lk.kind) for lk in route)),
        route_delay_ms=sum(lk.delay_ms for lk in route) if route else None,
        one_way_ms=_diff(fd, message_sent) if dst_node == receiver else None,
        total_ms=_diff(ld, start),
        wire_to_recv_ms=_diff(recv, ld),
    )


def _diff(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier
