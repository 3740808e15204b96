"""The `Transport` interface shared by the ZeroMQ and in-memory implementations."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class TransportStats:
    """Byte and message counters, plus frames dropped before delivery by reason."""

    sent_msgs: int = 0
    sent_bytes: int = 0
    recv_msgs: int = 0
    recv_bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class Transport(Protocol):
    """Sends frames to peers by node id and receives frames addressed to this node."""

    node_id: str
    stats: TransportStats

    def send(self, dst: str, frame: bytes) -> None:
        """Queue `frame` for `dst`; never blocks on a slow or dead peer."""
        ...

    def recv(self, timeout_s: float | None) -> bytes | None:
        """The next received frame, or None after `timeout_s` (None: wait forever)."""
        ...

    def close(self) -> None:
        """Release sockets and threads."""
        ...
