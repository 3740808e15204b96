"""The bees scheme's messages (the global model to a UE is vanilla's ``global``; ``stop``
and ``hello`` are vanilla's too). Every field is bounded; arrays travel raw (dtype, shape)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from node.messages import Bounds, NonNegativeInt, message

MAX_SHARED_TXS = 4096  # per ES and round: one report and one update per UE
MAX_OFFLOAD_SAMPLES = 100_000
MAX_PAD_BYTES = 48 * 1024 * 1024  # under the codec's 64 MiB frame limit
Seconds = Annotated[float, Bounds(ge=0.0)]


@message("bees.round")
@dataclass(frozen=True)
class RoundStart:
    """The publisher (the testbed's round clock) starts `round` at the edge servers. Round 1
    carries the initial model (`model`) and the publisher's signed ``bees.configure {m}``
    (`configure`, for round 1's block); later rounds carry neither: each ES takes the global
    model the previous round's block names."""

    round: Annotated[int, Bounds(ge=1)]
    deadline_s: Annotated[float, Bounds(gt=0.0)]
    model: bytes | None = None
    configure: bytes | None = None


@message("bees.local")
@dataclass(frozen=True)
class LocalUpdate:
    """A UE's locally trained weights (`weights_to_bytes`) for `round`, trained on `samples`
    samples; `sent_ms`: the UE's wall clock when it sent them (the ES measures the transfer)."""

    round: NonNegativeInt
    blob: bytes
    samples: Annotated[int, Bounds(ge=1)]
    sent_ms: NonNegativeInt


@message("bees.offload")
@dataclass(frozen=True)
class OffloadedData:
    """A UE's training samples for `round` (d = 1): `x` (float32, one row per sample) and `y`
    (int64 labels) as raw arrays, and `pad` zero bytes that bring the transfer up to the
    scenario's share of the paper's 80 MB (`offload_scale`)."""

    round: NonNegativeInt
    x: np.ndarray
    y: np.ndarray
    pad: Annotated[bytes, Bounds(max_len=MAX_PAD_BYTES)]
    sent_ms: NonNegativeInt


@message("bees.ack")
@dataclass(frozen=True)
class TransferAck:
    """The ES's receipt of a UE's transfer of `round`: the bytes it got and the measured
    transfer time (its receive wall clock minus the UE's `sent_ms`), from which the UE
    computes E^T (eq. 8)."""

    round: NonNegativeInt
    bytes: NonNegativeInt
    transfer_s: Seconds


@message("bees.share")
@dataclass(frozen=True)
class EsShare:
    """An ES's pending transactions of `round` for the other ES: its ``bees.report`` and one
    ``bees.update`` per UE (`txs`, signed), and the updates' weights (`blobs`, in the order
    of the updates in `txs`)."""

    round: NonNegativeInt
    txs: Annotated[tuple[bytes, ...], Bounds(max_len=MAX_SHARED_TXS)]
    blobs: Annotated[tuple[bytes, ...], Bounds(max_len=MAX_SHARED_TXS)]


@message("bees.block")
@dataclass(frozen=True)
class ProposedBlock:
    """A block proposed for `round` by the ES whose PoL turn it is (its certificate: the
    proposer's commit signature); every other ES re-verifies it before appending."""

    round: NonNegativeInt
    block: bytes


@message("bees.accepted")
@dataclass(frozen=True)
class AcceptedBlock:
    """An ES accepted and appended `block` for `round`: sent to the publisher, which appends
    a block once most ES have accepted it (it follows the ES's majority, not the proposer)."""

    round: NonNegativeInt
    block: bytes


MESSAGES = (
    RoundStart,
    LocalUpdate,
    OffloadedData,
    TransferAck,
    EsShare,
    ProposedBlock,
    AcceptedBlock,
)
