"""The vanilla scheme's application messages (see the package docstring for the protocol).

Each is a frozen dataclass registered with `node.messages` under its codec type; the daemon
hands roles instances, checked once against these fields (a malformed one is dropped and
counted as ``bad_payload`` before any role sees it). ``submit`` and ``pbft`` are the PBFT
validator's (`node.roles.validator`), re-exported here: with ``ledger.consensus: pbft`` they
are part of this scheme's traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np

from node.messages import AnyFloat, Bounds, NonNegativeInt, message
from node.roles.validator import PbftMessage, Submit


@message("hello")
@dataclass(frozen=True)
class Hello:
    """A node is up (sent to the publisher each second until its first global model)."""

    kind: str


@message("global")
@dataclass(frozen=True)
class GlobalModel:
    """Round `round`'s global model (its weights as blob bytes, `weights_to_bytes`), from the
    publisher to the MECs and from a MEC to its devices; answer within `deadline_s`."""

    round: NonNegativeInt
    model: bytes
    deadline_s: Annotated[float, Bounds(gt=0)]


@message("update")
@dataclass(frozen=True)
class DeviceUpdate:
    """A device's trained weights (`blob`) for `round` with its signed
    ``task.record_update`` transaction naming them (`tx`, which carries the sample count)
    and its training loss and accuracy (for information; NaN when training diverged)."""

    round: NonNegativeInt
    blob: bytes
    tx: bytes
    loss: AnyFloat
    accuracy: AnyFloat


@dataclass(frozen=True)
class IndividualUpdate:
    """One device's update inside a partial, forwarded unaveraged (for aggregators that
    select among updates)."""

    node: str
    weights: dict[str, np.ndarray]
    samples: int


@message("partial")
@dataclass(frozen=True)
class Partial:
    """A MEC's round result for the publisher: the sample-weighted average of its devices'
    updates (`weights`) or the updates themselves (`updates`), the devices that contributed
    and those missing, and the devices' update transactions.

    Updates forwarded one by one that would not fit one message (``max_message_bytes``: 300
    devices of a 420 KB model are 127 MB) go in `parts` messages (`split_partial`): part 0
    holds everything but the updates after its own, parts 1.. only further updates; the
    publisher joins them (`join_parts`) before checking anything."""

    round: NonNegativeInt
    samples: NonNegativeInt
    contributors: tuple[str, ...]
    missing: tuple[str, ...]
    txs: tuple[bytes, ...]
    weights: dict[str, np.ndarray] | None = None
    updates: tuple[IndividualUpdate, ...] | None = None
    part: NonNegativeInt = 0
    parts: Annotated[int, Bounds(ge=1)] = 1


def _update_bytes(update: IndividualUpdate) -> int:
    """About what `update` takes in a message: its arrays, plus 1 KiB for names and framing."""
    return sum(int(a.nbytes) for a in update.weights.values()) + 1024


def split_partial(partial: Partial, budget: int) -> list[Partial]:
    """`partial` as messages of at most about `budget` bytes of updates each (one update per
    part at least, in order); a partial without individual updates, or one that fits, as
    itself."""
    updates = partial.updates or ()
    chunks: list[list[IndividualUpdate]] = [[]]
    size = sum(len(tx) for tx in partial.txs)
    for update in updates:
        cost = _update_bytes(update)
        if chunks[-1] and size + cost > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(update)
        size += cost
    if len(chunks) == 1:
        return [partial]
    first = replace(partial, updates=tuple(chunks[0]), part=0, parts=len(chunks))
    rest = [
        Partial(partial.round, 0, (), (), (), updates=tuple(c), part=i, parts=len(chunks))
        for i, c in enumerate(chunks[1:], start=1)
    ]
    return [first, *rest]


def join_parts(parts: Sequence[Partial]) -> Partial:
    """The one partial that `parts` (parts 0..n-1 of one round, in order) were split from;
    ValueError if they are not such a sequence."""
    head = parts[0]
    if [p.part for p in parts] != list(range(head.parts)) or any(
        p.parts != head.parts or p.round != head.round for p in parts
    ):
        raise ValueError("the parts of a partial do not make up one")
    if any(p.samples or p.contributors or p.missing or p.txs or p.weights for p in parts[1:]):
        raise ValueError("a partial's part after the first carries more than updates")
    updates = tuple(u for p in parts for u in (p.updates or ()))
    return replace(head, updates=updates, part=0, parts=1)


@message("stop")
@dataclass(frozen=True)
class Stop:
    """The run is over; the ledger's final height is `height` (catch up to it, then stop)."""

    height: NonNegativeInt


MESSAGES = (Hello, GlobalModel, DeviceUpdate, Partial, Stop, Submit, PbftMessage)

__all__ = [
    "MESSAGES",
    "DeviceUpdate",
    "GlobalModel",
    "Hello",
    "IndividualUpdate",
    "Partial",
    "PbftMessage",
    "Stop",
    "Submit",
    "join_parts",
    "split_partial",
]
