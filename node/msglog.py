"""A node's own message records: one CSV row per message it sends and receives (issue 17).

How it works
------------
When a run asks for them (`NodeConfig.message_log`: the scenario's ``metrics.message_log``,
or, left unset, whenever the run captures packets: ``capture:`` non-empty), the daemon
opens a `MessageLog` on ``nodes/<id>/messages.csv`` and calls it from its send path (each
destination of a multicast, just before the frame is handed to the transport) and its
receive path (each frame the codec verified; a frame dropped as bad, a replay or a forgery
is counted among the drops, not recorded here: our choice, its envelope is not to be
trusted). Otherwise the daemon holds None and pays one ``is not None`` test per message.

Columns (`COLUMNS`): ``dir`` (``sent`` | ``recv``), ``wall_ms`` (ms since the epoch:
for a sent message when the daemon handed it to the transport, for a received one when the
daemon took the frame from the transport, before verifying it), the envelope's ``type``,
``sender`` and ``seq`` (which identify a message across nodes: `bcfl pcap latency` joins a
sender's ``sent`` row with the receiver's ``recv`` row and with the packets), ``peer`` (the
destination of a sent message; empty for a received one: the ZeroMQ PULL socket does not say
who connected, and who sent it is the envelope's ``sender``) and ``bytes`` (the frame).

Cost: rows go through a 256 KiB buffer, flushed at most every FLUSH_MS (on the next row
after that; no fsync ever) and at `close`, so a node killed with SIGKILL loses at most the
last few seconds of rows. The sequence number of a sent frame is read from the frame's
first bytes (the envelope's header), once per multicast. A 1,000-node run logs nothing
unless asked: the option is off by default (no capture, no ``metrics.message_log``).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TextIO

import msgpack

from node.config import NodeConfig

__all__ = [
    "COLUMNS",
    "FLUSH_MS",
    "MESSAGES_CSV",
    "MessageLog",
    "envelope_header",
    "open_message_log",
    "wall_ms",
]

MESSAGES_CSV = "messages.csv"
COLUMNS = ("dir", "wall_ms", "type", "sender", "seq", "peer", "bytes")
FLUSH_MS = 2_000.0
BUFFER_BYTES = 256 * 1024
# fixarray + "bcfl" + version + type (<= 32 chars) + sender (<= 32 chars) + seq (<= 9 bytes)
HEADER_BYTES = 96


def envelope_header(frame: bytes) -> tuple[str, str, int]:
    """(type, sender, seq) of an encoded frame (`node.codec`), from its first HEADER_BYTES
    only (the body is never unpacked); ValueError for a frame that is not an envelope."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=HEADER_BYTES)
    unpacker.feed(frame[:HEADER_BYTES])
    try:
        if unpacker.read_array_header() != 7:
            raise ValueError("not a bcfl envelope")
        _magic, _version, msg_type, sender, seq = (unpacker.unpack() for _ in range(5))
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError) as exc:
        raise ValueError(f"not a bcfl envelope: {exc}") from None
    if not (isinstance(msg_type, str) and isinstance(sender, str) and type(seq) is int):
        raise ValueError("not a bcfl envelope: bad header field")
    return msg_type, sender, seq


def wall_ms() -> float:
    """Wall-clock ms since the epoch, as the rows write it."""
    return time.time_ns() / 1e6


class MessageLog:
    """Appends message rows to one CSV file (header written when the file is new or empty;
    a restarted node appends to its earlier rows)."""

    def __init__(self, path: Path, node_id: str) -> None:
        self.path = Path(path)
        self.node_id = node_id
        self._file: TextIO = self.path.open("a", newline="", buffering=BUFFER_BYTES)
        self._csv = csv.writer(self._file)
        if self._file.tell() == 0:
            self._csv.writerow(COLUMNS)
        self._flush_at = wall_ms() + FLUSH_MS
        self._last_frame: bytes | None = None
        self._last_seq = -1
        self.rows = 0

    def sent(self, dst: str, msg_type: str, frame: bytes) -> None:
        """Record this node's `frame` (of type `msg_type`) going to `dst` now. The frame
        last recorded is kept (until the next) to know a multicast's next destination."""
        now = wall_ms()
        if frame is not self._last_frame:  # a multicast: one header read for all its rows
            self._last_seq = envelope_header(frame)[2]
            self._last_frame = frame
        row = ("sent", f"{now:.3f}", msg_type, self.node_id, self._last_seq, dst, len(frame))
        self._row(row, now)

    def received(self, at_ms: float, msg_type: str, sender: str, seq: int, size: int) -> None:
        """Record a verified message of `size` bytes taken from the transport at `at_ms`."""
        self._row(("recv", f"{at_ms:.3f}", msg_type, sender, seq, "", size), at_ms)

    def _row(self, row: tuple[object, ...], now: float) -> None:
        self._csv.writerow(row)
        self.rows += 1
        if now >= self._flush_at:
            self._file.flush()
            self._flush_at = now + FLUSH_MS

    def flush(self) -> None:
        """Hand the buffered rows to the OS (no fsync)."""
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and close (again: nothing)."""
        if not self._file.closed:
            self._last_frame = None
            self._file.close()


def open_message_log(config: NodeConfig) -> MessageLog | None:
    """The node's `MessageLog` (``node_dir/messages.csv``) when `config.message_log` says
    so; None otherwise (nothing is opened; a stand-in config without the field: None)."""
    if not getattr(config, "message_log", False):
        return None
    return MessageLog(Path(config.node_dir) / MESSAGES_CSV, config.node_id)
