"""The two-layer scheme's own messages (besides vanilla's ``hello``/``global``/``stop`` and the
PBFT validator's ``submit``/``pbft``; see the package docstring for the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from node.messages import NonNegativeInt, message


@message("tl.lmuc")
@dataclass(frozen=True)
class LmucRelay:
    """A MEC's certified LMUC block of round `round` (header, certificate, the round's update
    transactions: `Block.to_bytes`) for the other MECs of its task; the blobs its update
    transactions name follow, one per `LmucBlob`. `block` is empty when no update of the
    round reached the MEC's LMUC."""

    round: NonNegativeInt
    block: bytes


@message("tl.blob")
@dataclass(frozen=True)
class LmucBlob:
    """One update blob of a MEC's relayed LMUC block of `round` (one per message: a round's
    blobs together may exceed the message size limit); kept only if an update transaction of
    that block names its hash."""

    round: NonNegativeInt
    blob: bytes


@message("tl.vote")
@dataclass(frozen=True)
class VoteMessage:
    """A MEC's signed ``gmuc.vote`` transaction for `round` and the aggregate it names (the
    weights as blob bytes, `weights_to_bytes`), for the publisher, which orders the round's
    votes on the GMUC through the MECs' PBFT and takes the decided aggregate as the model;
    with the MEC's signed ``reputation.record`` of its devices' updates (empty: none)."""

    round: NonNegativeInt
    tx: bytes
    model: bytes
    reputation: bytes = b""


@message("tl.task")
@dataclass(frozen=True)
class TaskPacket:
    """A MEC's task for one selected device in `round`: the sealed task (`tasks.seal_task`:
    encrypted to the device, signed by the MEC) and the global model it names, in clear."""

    round: NonNegativeInt
    packet: bytes
    model: bytes
