"""Builders for the pcaplat tests: real bcfl frames (node.codec with fixed test keys) in
ZMTP 3 framing, cut into TCP segments and written as pcaps with scapy. No tests here."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from node.codec import Codec
from node.keys import NodeKey, Roster
from topologies import HierarchyParams, build_hierarchy

KEYS = {
    nid: NodeKey.from_seed(bytes([i + 1]) * 32)
    for i, nid in enumerate(("pub", "mec0", "dev0-0", "dev0-1"))
}
ROSTER = Roster({nid: key.public_key for nid, key in KEYS.items()})
IPS = {"mec0": "10.77.0.1", "dev0-0": "10.77.0.2", "dev0-1": "10.77.0.3", "pub": "10.77.0.4"}
PORT = 5555
T0 = 1_700_000_000.0  # capture times (s)


def bcfl_frame(sender: str, msg_type: str, payload: dict[str, Any], seq: int) -> bytes:
    """A signed bcfl frame from `sender` with sequence number `seq`."""
    return Codec(sender, KEYS[sender], ROSTER, first_seq=seq).encode(msg_type, payload)


def greeting() -> bytes:
    """A ZMTP 3.0 greeting with the NULL mechanism (64 bytes)."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def command(name: bytes, body: bytes = b"") -> bytes:
    """A ZMTP command frame."""
    data = bytes([len(name)]) + name + body
    return bytes([0x04, len(data)]) + data


def ready() -> bytes:
    """The NULL mechanism's READY command of a PUSH socket."""
    prop = bytes([11]) + b"Socket-Type" + struct.pack(">I", 4) + b"PUSH"
    return command(b"READY", prop)


def frame(payload: bytes, more: bool = False) -> bytes:
    """One ZMTP data frame (LONG when the payload exceeds 255 bytes)."""
    flags = 0x01 if more else 0x00
    if len(payload) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(payload)) + payload
    return bytes([flags, len(payload)]) + payload


def zmtp_stream(*messages: bytes) -> bytes:
    """Greeting, READY and one single-frame message per argument."""
    return greeting() + ready() + b"".join(frame(m) for m in messages)


@dataclass
class Seg:
    """One TCP segment to build: offset into the stream, length, capture time (s after
    T0), and how many payload bytes were captured (None: all)."""

    offset: int
    length: int
    t: float
    caplen: int | None = None


def segments(stream: bytes, mss: int, t0: float = 0.0, step: float = 0.001) -> list[Seg]:
    """`stream` cut into segments of `mss` bytes, one every `step` seconds."""
    return [
        Seg(off, min(mss, len(stream) - off), t0 + i * step)
        for i, off in enumerate(range(0, len(stream), mss))
    ]


def tcp_packets(
    src: str,
    dst: str,
    stream: bytes,
    segs: list[Seg],
    *,
    sport: int = 40000,
    dport: int = PORT,
    isn: int = 1000,
    syn_t: float | None = 0.0,
) -> list[Any]:
    """Ether/IP/TCP packets carrying `segs` of `stream` from src to dst (a SYN first at
    `syn_t` unless None); a segment with `caplen` gets only that many payload bytes, its IP
    length still saying the whole (as a snaplen-truncated capture does)."""
    out = []
    if syn_t is not None:
        syn = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=isn)
        syn.time = T0 + syn_t
        out.append(syn)
    for s in segs:
        data = stream[s.offset : s.offset + s.length]
        seq = (isn + 1 + s.offset) % (1 << 32)
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=seq)
        pkt = pkt / Raw(data)
        if s.caplen is not None:
            pkt = Ether(bytes(pkt)[: len(pkt) - len(data) + s.caplen])
        pkt.time = T0 + s.t
        out.append(pkt)
    return out


def write_pcap(path: Path, packets: list[Any]) -> Path:
    """Write packets (sorted by time) as a classic pcap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wrpcap(str(path), sorted(packets, key=lambda p: float(p.time)))
    return path


def make_run_dir(run_dir: Path, delay: str = "kernel(netem)") -> dict[str, Any]:
    """topology.json (1 BS, 1 MEC, 2 devices, a publisher) and meta.json with the test IPs
    as endpoints; returns the topology dict."""
    spec = build_hierarchy(HierarchyParams(1, 1, 2), 0)
    topo = spec.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "topology.json").write_text(json.dumps(topo))
    meta = {
        "backend": "mininet",
        "delay": delay,
        "endpoints": {nid: f"tcp://{ip}:{PORT}" for nid, ip in IPS.items()},
    }
    (run_dir / "meta.json").write_text(json.dumps(meta))
    (run_dir / "nodes").mkdir(exist_ok=True)
    return topo
