"""What a PBFT core asks its host to do, and its configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.core.encoding import sha256


@dataclass(frozen=True)
class Send:
    """Send `data` to replica `dst`."""

    dst: str
    data: bytes


@dataclass(frozen=True)
class Broadcast:
    """Send `data` to every other replica."""

    data: bytes


@dataclass(frozen=True)
class Commit:
    """Request `request` (digest `digest`) is executed at sequence number `seq`.

    `certificate` holds 2f+1 ``(signer public key, signature over COMMIT_DOMAIN + digest)``
    pairs, i.e. `node.core.block.CommitSignature` fields.
    """

    seq: int
    digest: bytes
    request: bytes
    certificate: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class StartTimer:
    """(Re)start timer `name` to fire after `delay_s` seconds."""

    name: str
    delay_s: float


@dataclass(frozen=True)
class StopTimer:
    """Cancel timer `name` if it is running."""

    name: str


Action = Send | Broadcast | Commit | StartTimer | StopTimer

REQUEST_TIMER = "request"
VIEW_CHANGE_TIMER = "view_change"


@dataclass(frozen=True)
class PbftConfig:
    """Protocol parameters shared by every replica of a group."""

    checkpoint_interval: int = 8
    log_window: int = 16
    request_timeout_s: float = 2.0
    max_timeout_s: float = 120.0
    max_pending: int = 1024
    max_request_bytes: int = 32 * 1024 * 1024
    archive_size: int = 64
    fetch_batch: int = 16
    digest: Callable[[bytes], bytes] = sha256

    def __post_init__(self) -> None:
        if self.checkpoint_interval < 1:
            raise ValueError("checkpoint_interval must be >= 1")
        if self.log_window < self.checkpoint_interval or (
            self.log_window % self.checkpoint_interval
        ):
            raise ValueError("log_window must be a positive multiple of checkpoint_interval")
        if self.request_timeout_s <= 0 or self.max_timeout_s < self.request_timeout_s:
            raise ValueError("timeouts must be positive and max_timeout_s >= request_timeout_s")
        if self.max_pending < 1 or self.archive_size < 1 or self.fetch_batch < 1:
            raise ValueError("max_pending, archive_size and fetch_batch must be >= 1")
