"""TCP stream reassembly from a pcap, streaming (scapy's PcapReader, one packet at a time).

How it works
------------
Every TCP packet is keyed by its direction (src ip:port -> dst ip:port). A direction's byte
offsets count from its initial sequence number (the SYN's + 1; our choice where no SYN was
captured: the first segment's sequence number). Segments are handed on in order:

- a segment at the next expected offset is emitted at once, then any buffered segments it
  makes contiguous;
- a segment beyond it (out of order) is buffered until the gap fills;
- a segment wholly below it (a retransmission, or the second copy of a forwarded packet on
  an ``any`` capture) is ignored: each byte keeps the capture time of the FIRST copy seen
  (our choice: the first time the byte was on the wire), and a partly new one is trimmed.

A segment's length comes from the IP and TCP headers, not from the captured bytes, so a
capture with a short snaplen still has every offset right: the bytes past what was captured
are unknown (a `Chunk`'s ``data`` is shorter than its ``length``). A new SYN on a direction
that carried data starts a new stream. At the end of the file, a gap no segment filled (a
packet the capture missed) is emitted as unknown bytes so that later data still counts.

Consumers get `Chunk`s through `StreamSink.feed`, per `FlowKey`; nothing is kept per stream
but the out-of-order buffer, so memory does not grow with the file.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SEQ_MOD = 1 << 32
_SYN = 0x02
_FIN = 0x01
_RST = 0x04


class PcapError(Exception):
    """A capture file cannot be read at all (not a pcap, unreadable); names the file."""


@dataclass(frozen=True, order=True)
class FlowKey:
    """One direction of a TCP connection."""

    src: str
    sport: int
    dst: str
    dport: int

    def __str__(self) -> str:
        return f"{self.src}:{self.sport}->{self.dst}:{self.dport}"


@dataclass(frozen=True)
class Chunk:
    """In-order stream bytes [offset, offset + length) that one segment carried, captured at
    `ts_ms` (wall-clock ms); `data` holds the captured bytes, possibly fewer than `length`
    (snaplen, or a gap the capture missed: then empty)."""

    offset: int
    length: int
    ts_ms: float
    data: bytes


class StreamSink(Protocol):
    """Receives one stream's in-order chunks."""

    def feed(self, chunk: Chunk) -> None:
        """Take the next chunk (offsets contiguous with the previous one)."""

    def close(self) -> None:
        """The stream ended (FIN, RST, new SYN or end of the capture)."""


@dataclass(frozen=True)
class TcpSegment:
    """One captured TCP segment: its direction, flags, sequence number, payload length (from
    the headers) and captured payload bytes."""

    key: FlowKey
    flags: int
    seq: int
    length: int
    data: bytes
    ts_ms: float


@dataclass
class _Direction:
    sink: StreamSink
    isn: int | None = None  # the sequence number of offset 0
    next: int = 0  # the next expected offset
    pending: dict[int, TcpSegment] = field(default_factory=dict)  # by offset, first copy
    carried: bool = False


class Reassembler:
    """Turns segments into per-direction in-order chunks handed to sinks from `new_sink`."""

    def __init__(self, new_sink: Callable[[FlowKey], StreamSink]) -> None:
        self._new_sink = new_sink
        self._dirs: dict[FlowKey, _Direction] = {}
        self.duplicates = 0
        self.out_of_order = 0
        self.gaps = 0

    def _offset(self, d: _Direction, seq: int) -> int:
        """The stream offset of `seq`, unwrapped around the next expected offset."""
        assert d.isn is not None
        rel = (seq - d.isn) % SEQ_MOD
        base = d.next % SEQ_MOD
        diff = (rel - base + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2
        return d.next + diff

    def add(self, seg: TcpSegment) -> None:
        """Take one segment (in capture order)."""
        d = self._dirs.get(seg.key)
        if seg.flags & _SYN:
            if d is not None and d.carried and d.isn is not None and seg.seq + 1 != d.isn:
                self._close(seg.key)  # a new connection on the same ports
                d = None
            if d is None:
                d = self._dirs[seg.key] = _Direction(self._new_sink(seg.key))
            d.isn = (seg.seq + 1) % SEQ_MOD
            return
        if seg.length == 0 and not seg.flags & (_FIN | _RST):
            return
        if d is None:
            if seg.length == 0:
                return
            d = self._dirs[seg.key] = _Direction(self._new_sink(seg.key))
        if d.isn is None:
            d.isn = seg.seq  # our choice: no SYN captured, the stream starts here
        if seg.length:
            self._data(d, seg)
        if seg.flags & (_FIN | _RST):
            self._close(seg.key)

    def _data(self, d: _Direction, seg: TcpSegment) -> None:
        start = self._offset(d, seg.seq)
        end = start + seg.length
        if end <= d.next:
            self.duplicates += 1
            return
        if start > d.next:
            self.out_of_order += 1
            old = d.pending.get(start)
            if old is None or old.length < seg.length:
                d.pending[start] = seg if old is None else _longer(old, seg)
            return
        self._emit(d, start, seg)
        self._drain(d)

    def _emit(self, d: _Direction, start: int, seg: TcpSegment) -> None:
        skip = d.next - start  # bytes already delivered by an earlier copy
        data = seg.data[skip:] if skip < len(seg.data) else b""
        d.sink.feed(Chunk(d.next, seg.length - skip, seg.ts_ms, data))
        d.carried = True
        d.next = start + seg.length

    def _drain(self, d: _Direction) -> None:
        while d.pending:
            start = min(d.pending)
            if start > d.next:
                return
            seg = d.pending.pop(start)
            if start + seg.length > d.next:
                self._emit(d, start, seg)
            else:
                self.duplicates += 1

    def _close(self, key: FlowKey) -> None:
        d = self._dirs.pop(key, None)
        if d is None:
            return
        while d.pending:  # a segment the capture missed: its bytes are unknown
            start = min(d.pending)
            if start > d.next:
                self.gaps += 1
                ts = d.pending[start].ts_ms  # our choice: the gap "arrived" with what follows
                d.sink.feed(Chunk(d.next, start - d.next, ts, b""))
                d.next = start
            self._drain(d)
        d.sink.close()

    def finish(self) -> None:
        """The capture ended: flush every direction."""
        for key in list(self._dirs):
            self._close(key)


def _longer(a: TcpSegment, b: TcpSegment) -> TcpSegment:
    """Of two copies at one offset, the longer one, with the first copy's time."""
    if b.length <= a.length:
        return a
    return TcpSegment(b.key, b.flags, b.seq, b.length, b.data, a.ts_ms)


@dataclass
class ReadResult:
    """What reading one capture file gave: packets read, TCP segments, and a warning when
    the file ended early or could not be read to the end."""

    packets: int = 0
    segments: int = 0
    warning: str | None = None


def tcp_segments(path: Path, result: ReadResult) -> Iterator[TcpSegment]:
    """The TCP segments of a capture file, in capture order (IPv4 and IPv6; any link type
    scapy knows, incl. Linux cooked captures). Raises PcapError if it is no capture file; a
    file that ends mid-packet sets `result.warning` and yields what was read."""
    from scapy.error import Scapy_Exception
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    try:
        reader = PcapReader(str(path))
    except (Scapy_Exception, OSError, EOFError, struct.error, ValueError) as exc:
        raise PcapError(f"{path}: not a readable pcap/pcapng file ({_why(exc)})") from None
    try:
        while True:
            try:
                pkt = reader.read_packet()
            except EOFError:
                break
            except (Scapy_Exception, struct.error, ValueError, OSError) as exc:
                result.warning = f"{path}: truncated or damaged after packet {result.packets}"
                result.warning += f" ({_why(exc)}); using what was read"
                break
            result.packets += 1
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            tcp = pkt.getlayer(TCP)
            if ip is None or tcp is None:
                continue
            seg = _segment(ip, tcp, float(pkt.time) * 1000.0)
            if seg is not None:
                result.segments += 1
                yield seg
        if result.warning is None and cut_short(path):
            result.warning = (
                f"{path}: truncated (the last packet is cut short); using what was read"
            )
    finally:
        reader.close()


def _segment(ip: object, tcp: object, ts_ms: float) -> TcpSegment | None:
    """A segment from scapy's IP/IPv6 and TCP layers; the payload length from the headers."""
    from scapy.layers.inet import IP

    if isinstance(ip, IP):
        if ip.frag or ip.flags.MF:  # fragments do not occur on these links: skipped
            return None
        length = ip.len - ip.ihl * 4 - tcp.dataofs * 4  # type: ignore[attr-defined]
        src, dst = ip.src, ip.dst
    else:
        # IPv6 extension headers do not occur here (our choice: not subtracted)
        length = ip.plen - tcp.dataofs * 4  # type: ignore[attr-defined]
        src, dst = ip.src, ip.dst  # type: ignore[attr-defined]
    data = bytes(tcp.payload)  # type: ignore[attr-defined]
    if length < 0:
        return None
    if len(data) > length:  # Ethernet padding of short frames
        data = data[:length]
    key = FlowKey(str(src), int(tcp.sport), str(dst), int(tcp.dport))  # type: ignore[attr-defined]
    return TcpSegment(key, int(tcp.flags), int(tcp.seq), length, data, ts_ms)  # type: ignore[attr-defined]


def cut_short(path: Path) -> bool:
    """Whether the capture file's last record (pcap) or block (pcapng) is cut short: scapy
    reads such a record as a short packet and only logs it, so the file is walked here by
    its length fields (seeks, not reads of the packets)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if magic == b"\x0a\x0d\x0d\x0a":  # pcapng: blocks of (type, total length, ...)
            head = f.read(8)
            endian = "<" if head[4:8] == b"\x4d\x3c\x2b\x1a" else ">"
            pos = 0
            while pos < size:
                f.seek(pos)
                head = f.read(8)
                if len(head) < 8:
                    return True
                (length,) = struct.unpack(endian + "I", head[4:8])
                if length < 12:
                    return True
                pos += length
            return pos != size
        endian = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<"}.get(magic, ">")
        pos = 24
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 16:
                return True
            (caplen,) = struct.unpack(endian + "I", head[8:12])
            pos += 16 + caplen
        return pos != size


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__
