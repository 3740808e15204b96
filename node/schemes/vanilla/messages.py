"""The vanilla scheme's application messages (see the package docstring for the protocol).

Each is a frozen dataclass registered with `node.messages` under its codec type; the daemon
hands roles instances, checked once against these fields (a malformed one is dropped and
counted as ``bad_payload`` before any role sees it). ``submit`` and ``pbft`` are the PBFT
validator's (`node.roles.validator`), re-exported here: with ``ledger.consensus: pbft`` they
are part of this scheme's traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    and those missing, and the devices' update transactions."""

    round: NonNegativeInt
    samples: NonNegativeInt
    contributors: tuple[str, ...]
    missing: tuple[str, ...]
    txs: tuple[bytes, ...]
    weights: dict[str, np.ndarray] | None = None
    updates: tuple[IndividualUpdate, ...] | None = None


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
]
