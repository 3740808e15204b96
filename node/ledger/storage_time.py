"""The emulated block storage time t and the per-block timing row a store keeps.

How it works: the two-layer paper (its "Case study") measures delay in units of t, "the
unified time unit spent in storing a block by one node". A `ChainStore` opened with
``storage_time_ms=t`` makes every append of a block above genesis take at least t: it does
the write, then waits out the remainder on a monotonic clock before the block counts as
stored. Whatever t is (0: no wait), each such append records a `BlockTime` in the store's
``block_times`` table, in the same SQLite transaction as the block (as durable as the block
itself). Wall-clock times are ms since the epoch, comparable between the nodes of one host
(the local, mininet and containernet backends share the host's clock); durations are
measured on the monotonic clock. `node.ledger.timing` reads the rows of a whole run.

A row's ``proposed_ms`` is the block header's timestamp, which is when the block was
proposed for a single-writer chain (the writer builds and signs it then) and for a PBFT
committee (the submitter's timestamp, which every validator builds the candidate with).
Under proof of work it is not: miners search over the timestamp, so a mined header's
timestamp runs ahead of the wall clock by the number of attempts. A node that knows better
than the header (the winning miner: when it started mining the block and when it found it)
says so with `ChainStore.record_proposal`, a ``block_proposals`` row by block hash, which
`node.ledger.timing` prefers to the header's timestamp.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BLOCK_PROPOSALS_SCHEMA",
    "BLOCK_TIMES_SCHEMA",
    "REAL_CLOCK",
    "BlockTime",
    "StorageClock",
    "check_storage_time",
]

MAX_STORAGE_TIME_MS = 60_000.0  # the topology's bound on t

BLOCK_TIMES_SCHEMA = """
CREATE TABLE IF NOT EXISTS block_times (
    height INTEGER PRIMARY KEY,
    proposed_ms INTEGER NOT NULL,
    received_ms REAL NOT NULL,
    validated_ms REAL NOT NULL,
    stored_ms REAL NOT NULL,
    storage_ms REAL NOT NULL,
    t_ms REAL NOT NULL
)"""
BLOCK_TIMES_INSERT = "INSERT OR REPLACE INTO block_times VALUES (?, ?, ?, ?, ?, ?, ?)"
BLOCK_TIMES_SELECT = (
    "SELECT height, proposed_ms, received_ms, validated_ms, stored_ms, storage_ms, t_ms "
    "FROM block_times"
)
BLOCK_PROPOSALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS block_proposals (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    proposed_ms REAL NOT NULL,
    certified_ms REAL NOT NULL
)"""
BLOCK_PROPOSALS_UPSERT = "INSERT OR REPLACE INTO block_proposals VALUES (?, ?, ?, ?)"
BLOCK_PROPOSALS_SELECT = "SELECT hash, height, proposed_ms, certified_ms FROM block_proposals"


def _wall_ms() -> float:
    return time.time_ns() / 1e6


@dataclass(frozen=True)
class StorageClock:
    """The clocks a store times appends with (injectable for tests): `monotonic` in seconds,
    `wall_ms` in ms since the epoch, and `sleep` in seconds."""

    monotonic: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], float] = _wall_ms
    sleep: Callable[[float], None] = time.sleep

    def wait_until(self, deadline: float) -> None:
        """Block until `monotonic()` reaches `deadline` (never returns early)."""
        while (left := deadline - self.monotonic()) > 0:
            self.sleep(left)


REAL_CLOCK = StorageClock()


@dataclass(frozen=True)
class BlockTime:
    """When one block was proposed (its header's timestamp), received by this node (the
    caller's time, else when `Chain.append` was called), validated (the store's write began)
    and stored (the append, with its emulated storage time, ended), all wall-clock ms;
    `storage_ms` is the append's measured duration (monotonic), `t_ms` the storage time the
    store emulated (0: none)."""

    height: int
    proposed_ms: int
    received_ms: float
    validated_ms: float
    stored_ms: float
    storage_ms: float
    t_ms: float

    def row(self) -> tuple[int, int, float, float, float, float, float]:
        """The ``block_times`` row (by hand: `astuple` deep-copies, ~10x slower)."""
        return (
            self.height,
            self.proposed_ms,
            self.received_ms,
            self.validated_ms,
            self.stored_ms,
            self.storage_ms,
            self.t_ms,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> BlockTime:
        """Inverse of `row` (a ``SELECT`` as in `BLOCK_TIMES_SELECT`)."""
        h, p, r, v, s, d, t = row
        return cls(int(h), int(p), float(r), float(v), float(s), float(d), float(t))


def check_storage_time(ms: float) -> float:
    """`ms` as a float if it is a valid storage time; ValueError naming the range otherwise."""
    value = float(ms)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_STORAGE_TIME_MS:
        raise ValueError(
            f"storage_time_ms must be a number from 0 to {MAX_STORAGE_TIME_MS:g}, not {ms!r}"
        )
    return value
