"""What `bcfl pcap latency` needs to know about a run directory besides its captures.

How it works
------------
- The topology: ``topology.json`` (`TopologySpec.from_dict`), for routes and the configured
  links (class, delay, bandwidth) of every hop.
- Addresses: every daemon listens on, and sends from, its identity address (the mininet and
  containernet backends route with ``src ID``); ``meta.json``'s ``endpoints`` map node ids
  to ``tcp://ADDR:PORT`` (where meta.json lacks them: any ``nodes/<id>/config.json``'s).
- Capture points: a pcap's file stem is a node id (tcpdump on all its interfaces) or
  ``A_B`` (A's interface towards B), as the backends name them.
- Where the delay was shaped: meta.json's ``delay`` (``kernel(netem)`` puts the configured
  delay on the wire between interfaces; ``userspace`` applies it in the sending node before
  the frame reaches its socket, so the wire shows none of it).
- The nodes' own send/receive records, ``nodes/<id>/messages.csv`` (dir, wall_ms, type,
  sender, seq, peer, bytes), where a run wrote them.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topologies.spec import TopologyError, TopologySpec

MESSAGES_CSV = "messages.csv"
_ENDPOINT_RE = re.compile(r"tcp://\[?([0-9A-Fa-f.:]+)\]?:\d+")


class RunDirError(Exception):
    """The run directory lacks what the analysis needs; the message names the file."""


@dataclass
class NodeRecords:
    """The nodes' send and receive records, by (sender, seq, receiver): wall-clock ms."""

    sent: dict[tuple[str, int, str], float] = field(default_factory=dict)
    recv: dict[tuple[str, int, str], float] = field(default_factory=dict)
    files: int = 0


@dataclass
class RunInfo:
    """A run's topology, address map, shaping facts and node records."""

    run_dir: Path
    spec: TopologySpec
    node_of_ip: dict[str, str]
    delay_shaped_by: str
    records: NodeRecords

    def capture_point(self, stem: str) -> str | None:
        """The node a capture file was taken at, from its stem (None: not a known name)."""
        ids = {n.id for n in self.spec.nodes}
        if stem in ids:
            return stem
        a, sep, b = stem.partition("_")
        if sep and a in ids and b in ids:
            return a
        return None

    def path(self, src: str, dst: str) -> list[str]:
        """The nodes on the fewest-hops route src -> dst, both included ([] if none)."""
        try:
            route = self.spec.route(src, dst)
        except (TopologyError, KeyError):
            return []
        return [src] + [link.dst for link in route]


def load_run(run_dir: Path) -> RunInfo:
    """Read topology.json, meta.json (or the node configs) and the messages.csv files."""
    topo_path = run_dir / "topology.json"
    try:
        spec = TopologySpec.from_dict(json.loads(topo_path.read_text()))
    except FileNotFoundError:
        raise RunDirError(f"{topo_path}: missing (not a run directory?)") from None
    except (OSError, ValueError) as exc:  # incl. TopologyError and JSON errors
        raise RunDirError(f"{topo_path}: unreadable ({exc})") from None
    meta = _json(run_dir / "meta.json")
    endpoints = meta.get("endpoints") if isinstance(meta.get("endpoints"), dict) else None
    if not endpoints:
        endpoints = _config_endpoints(run_dir)
    node_of_ip = {}
    for nid, endpoint in (endpoints or {}).items():
        m = _ENDPOINT_RE.fullmatch(str(endpoint))
        if m:
            node_of_ip[m.group(1)] = str(nid)
    return RunInfo(
        run_dir, spec, node_of_ip, str(meta.get("delay", "unknown")), read_records(run_dir)
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _config_endpoints(run_dir: Path) -> dict[str, Any]:
    for config in sorted((run_dir / "nodes").glob("*/config.json")):
        endpoints = _json(config).get("endpoints")
        if isinstance(endpoints, dict) and endpoints:
            return endpoints
    return {}


def read_records(run_dir: Path) -> NodeRecords:
    """Every ``nodes/<id>/messages.csv`` (rows that do not parse are skipped)."""
    out = NodeRecords()
    for path in sorted((run_dir / "nodes").glob(f"*/{MESSAGES_CSV}")):
        node = path.parent.name
        out.files += 1
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    wall_ms = float(row["wall_ms"])
                    sender, seq, peer = row["sender"], int(row["seq"]), row["peer"]
                except (KeyError, TypeError, ValueError):
                    continue
                if row.get("dir") == "sent":
                    out.sent.setdefault((sender, seq, peer), wall_ms)
                elif row.get("dir") == "recv":
                    out.recv.setdefault((sender, seq, node), wall_ms)
    return out
