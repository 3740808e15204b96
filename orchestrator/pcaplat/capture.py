"""One capture file -> the bcfl messages it shows, with their wire times.

How it works
------------
`scan` streams the file's TCP segments (`streams.tcp_segments`) through a `Reassembler`
whose sinks are `ZmtpParser`s, one per TCP direction; each complete ZeroMQ message's first
bytes go to `envelope.peek`. A message whose header is not a bcfl envelope, or whose header
bytes were not captured, is counted as unidentified. The `Scan` says how many streams were
ZMTP, how many messages were identified, and gives the warnings to show (a truncated file;
no ZMTP/bcfl traffic at all, e.g. a pcap from another program).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.pcaplat.envelope import Header, HeaderIncomplete, NotBcfl, peek
from orchestrator.pcaplat.streams import FlowKey, ReadResult, Reassembler, tcp_segments
from orchestrator.pcaplat.zmtp import ZmtpMessage, ZmtpParser


@dataclass(frozen=True)
class Observation:
    """One bcfl message as one capture file saw it."""

    file: str
    header: Header
    msg: ZmtpMessage


@dataclass
class Scan:
    """What one capture file gave."""

    path: Path
    observations: list[Observation] = field(default_factory=list)
    read: ReadResult = field(default_factory=ReadResult)
    streams: int = 0
    zmtp_streams: int = 0
    unidentified: int = 0  # messages whose header was not captured or not bcfl
    lost_bytes: int = 0  # stream bytes after a frame header the capture missed
    duplicates: int = 0
    out_of_order: int = 0

    def warnings(self) -> list[str]:
        """Lines to show the user about this file."""
        out = [self.read.warning] if self.read.warning else []
        if not self.observations:
            what = "no ZMTP streams" if not self.zmtp_streams else "no bcfl messages"
            out.append(
                f"{self.path}: {what} in {self.read.packets} packets "
                f"({self.read.segments} TCP segments); not a capture of a bcfl run?"
            )
        elif self.lost_bytes:
            out.append(
                f"{self.path}: {self.lost_bytes} stream bytes unparsed after frame headers "
                "the capture lacks (snaplen too short?)"
            )
        return out


def scan(path: Path) -> Scan:
    """Read one capture file; raises streams.PcapError if it is no capture file."""
    result = Scan(path)
    parsers: list[ZmtpParser] = []

    def on_message(msg: ZmtpMessage) -> None:
        try:
            header = peek(msg.head)
        except (HeaderIncomplete, NotBcfl):
            result.unidentified += 1
            return
        result.observations.append(Observation(path.name, header, msg))

    def new_sink(key: FlowKey) -> ZmtpParser:
        parser = ZmtpParser(key, on_message)
        parsers.append(parser)
        return parser

    reassembler = Reassembler(new_sink)
    for seg in tcp_segments(path, result.read):
        reassembler.add(seg)
    reassembler.finish()
    result.streams = len(parsers)
    result.zmtp_streams = sum(p.greeted for p in parsers)
    result.lost_bytes = sum(p.lost_bytes for p in parsers if p.greeted)
    result.duplicates = reassembler.duplicates
    result.out_of_order = reassembler.out_of_order
    return result
