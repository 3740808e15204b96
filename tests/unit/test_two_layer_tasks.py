"""The two-layer task packet: sealed by the MEC to one device, bound to the task and round,
naming the model that travels beside it."""

from __future__ import annotations

import pytest

from node.keys import NodeKey
from node.schemes.two_layer.tasks import TaskRefused, open_task, seal_task

MEC = NodeKey.from_seed(b"\x41" * 32)
DEVICE = NodeKey.from_seed(b"\x42" * 32)
OTHER = NodeKey.from_seed(b"\x43" * 32)
MODEL = b"model bytes" * 100


def _seal(round_no: int = 3, model: bytes = MODEL) -> bytes:
    return seal_task(MEC, DEVICE.public_key, "t1", round_no, 12.5, model)


def test_the_device_opens_its_task() -> None:
    assert open_task(DEVICE, MEC.public_key, _seal(), "t1", 3, MODEL) == 12.5


@pytest.mark.parametrize(
    ("opener", "sender", "round_no", "model", "flip", "reason"),
    [
        (OTHER, MEC, 3, MODEL, False, "wrong_recipient"),  # sealed for another device
        (DEVICE, OTHER, 3, MODEL, False, "bad_signature"),  # not from its MEC
        (DEVICE, MEC, 4, MODEL, False, "wrong_context"),  # replayed in another round
        (DEVICE, MEC, 3, MODEL + b"x", False, "wrong_model"),  # the model was swapped
        (DEVICE, MEC, 3, MODEL, True, "tampered"),  # a relay changed a byte
    ],
)
def test_refused_tasks(
    opener: NodeKey, sender: NodeKey, round_no: int, model: bytes, flip: bool, reason: str
) -> None:
    packet = _seal()
    if flip:
        packet = packet[:-5] + bytes([packet[-5] ^ 1]) + packet[-4:]
    with pytest.raises(TaskRefused) as info:
        open_task(opener, sender.public_key, packet, "t1", round_no, model)
    assert info.value.reason == reason
