"""The two-layer task packet: what a MEC sends each selected device for a round.

The task (task id, round, deadline, the global model's hash and size) is sealed to the device
with `node.packets` (encrypted to it, signed by the MEC, bound to the context
``task:<id>/round:<r>``); the global model itself travels beside it in clear (it is no
secret: the GMUC names it, and a packet is a task, not a model) and is accepted only if it
hashes to what the sealed task says. So the device checks, before training, that the task
is from its MEC, for it, for this task and round, unchanged — and that the model is the one
the MEC meant.
"""

from __future__ import annotations

from typing import Any

from node.core.encoding import EncodingError, canonical, decode_canonical, sha256
from node.keys import NodeKey
from node.packets import PacketError, open_task_packet, seal_task_packet

MAX_TASK_BYTES = 4096


class TaskRefused(ValueError):
    """A task packet is refused; `reason`: a `node.packets` reason or ``wrong_model``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"task packet: {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason


def context(task_id: str, round_no: int) -> bytes:
    """The context a round's task packets are bound to."""
    return f"task:{task_id}/round:{round_no}".encode()


def seal_task(
    mec_key: NodeKey,
    device_public: bytes,
    task_id: str,
    round_no: int,
    deadline_s: float,
    model: bytes,
) -> bytes:
    """The sealed task of `round_no` for one device."""
    task: dict[str, Any] = {
        "task_id": task_id,
        "round": round_no,
        "deadline_s": float(deadline_s),
        "model": sha256(model),
        "size": len(model),
    }
    return seal_task_packet(mec_key, device_public, canonical(task), context(task_id, round_no))


def open_task(
    device_key: NodeKey,
    mec_public: bytes,
    packet: bytes,
    task_id: str,
    round_no: int,
    model: bytes,
) -> float:
    """The round's deadline from a task packet whose sealed task names `model`; raises
    TaskRefused."""
    try:
        data = open_task_packet(device_key, mec_public, packet, context(task_id, round_no))
        task = decode_canonical(data, MAX_TASK_BYTES)
    except PacketError as exc:
        raise TaskRefused(exc.reason, exc.detail) from None
    except EncodingError as exc:
        raise TaskRefused("malformed", f"task: {exc}") from None
    if not isinstance(task, dict) or task.get("task_id") != task_id:
        raise TaskRefused("malformed", "not a task of this run")
    if task.get("round") != round_no:
        raise TaskRefused("wrong_context", f"task of round {task.get('round')!r}")
    if task.get("model") != sha256(model) or task.get("size") != len(model):
        raise TaskRefused("wrong_model", "the model is not the one the task names")
    deadline = task.get("deadline_s")
    if not isinstance(deadline, float) or not deadline > 0:
        raise TaskRefused("malformed", "task without a deadline")
    return deadline
