"""The two-layer scheme's own messages (besides vanilla's ``hello``/``global``/``stop`` and the
PBFT validator's ``submit``/``pbft``; see the package docstring for the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from node.messages import NonNegativeInt, message


@message("tl.lmuc")
@dataclass(frozen=True)
class LmucRelay:
    """A MEC's certified LMUC block of round `round` (header, certificate, the round's update
    transactions: `Block.to_bytes`) for the other MECs of its task, which check it as light
    clients and then fetch the blobs its update transactions name from this MEC on demand
    (``blob.get``: `node.ledger.sync.ChainSync.fetch_blob`). `block` is empty when no update
    of the round reached the MEC's LMUC."""

    round: NonNegativeInt
    block: bytes


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


@message("tl.join")
@dataclass(frozen=True)
class JoinRequest:
    """A device's registration and task response, for its MEC (Steps 1-2): `registration`,
    its Ed25519 signature of `identity.registration_message` (its LMUC, its id, "device"),
    which the MEC submits in ``identity.enroll`` to its LMUC; and its response to the task
    request — its resources and its opinion of the publisher (millionths) — with `response`,
    its signature of `gmuc_request.response_message`, which the MEC submits in
    ``gmuc.respond`` to the GMUC. Repeated until the MEC acknowledges it (`Joined`)."""

    registration: bytes
    samples: NonNegativeInt
    cpu_mhz: NonNegativeInt
    energy_j: NonNegativeInt
    opinion: tuple[int, ...]
    response: bytes


@message("tl.joined")
@dataclass(frozen=True)
class Joined:
    """The MEC's acknowledgement of a device's `JoinRequest` (submitted: the device stops
    repeating it)."""

    round: NonNegativeInt = 0


@message("tl.responses")
@dataclass(frozen=True)
class Responses:
    """A MEC's signed ``gmuc.respond`` transactions (its devices' responses), for the
    publisher, which orders them on the GMUC with the task request; `done`: every device of
    the MEC has been heard (the publisher waits for that from every MEC before round 1)."""

    txs: tuple[bytes, ...]
    done: bool
