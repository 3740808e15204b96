"""Unit tests for node.packets: encrypted, signed task packets sent over D2D."""

from __future__ import annotations

import nacl.exceptions
import nacl.public
import pytest

from node.keys import NodeKey
from node.packets import (
    MAX_CONTEXT_BYTES,
    OVERHEAD,
    PacketError,
    open_task_packet,
    packet_id,
    seal_task_packet,
)

MEC = NodeKey.from_seed(b"\x01" * 32)
DEVICE = NodeKey.from_seed(b"\x02" * 32)
RELAY = NodeKey.from_seed(b"\x03" * 32)
CONTEXT = b"task:t1/round:3"
PAYLOAD = b'{"task":"t1","round":3,"model":"cnn","lr":0.01}'


def _reason(packet: bytes, key: NodeKey = DEVICE, context: bytes = CONTEXT, **kw: int) -> str:
    with pytest.raises(PacketError) as info:
        open_task_packet(key, MEC.public_key, packet, context, **kw)
    assert str(info.value).startswith(f"task packet: {info.value.reason}")
    return info.value.reason


def test_round_trip() -> None:
    packet = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)

    assert open_task_packet(DEVICE, MEC.public_key, packet, CONTEXT) == PAYLOAD
    assert len(packet) == len(PAYLOAD) + OVERHEAD
    assert PAYLOAD not in packet  # a relaying device sees ciphertext only
    empty = seal_task_packet(MEC, DEVICE.public_key, b"", CONTEXT)
    assert open_task_packet(DEVICE, MEC.public_key, empty, CONTEXT) == b""


def test_two_seals_of_one_payload_differ_but_both_open() -> None:
    a = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)
    b = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)

    assert a != b and packet_id(a) != packet_id(b)  # fresh nonces
    assert open_task_packet(DEVICE, MEC.public_key, a, CONTEXT) == PAYLOAD
    assert open_task_packet(DEVICE, MEC.public_key, b, CONTEXT) == PAYLOAD


def test_a_relay_flipping_one_bit_anywhere_is_caught_as_tampered() -> None:
    packet = seal_task_packet(MEC, DEVICE.public_key, b"task", CONTEXT)
    reasons = set()
    for bit in range(8, len(packet) * 8):  # every bit after the version byte
        flipped = bytearray(packet)
        flipped[bit // 8] ^= 1 << (bit % 8)
        reasons.add(_reason(bytes(flipped)))

    assert reasons == {"tampered"}
    version_flipped = bytes([packet[0] ^ 0x02]) + packet[1:]
    assert _reason(version_flipped) == "unsupported_version"


def test_a_relay_cannot_open_and_the_wrong_recipient_is_named() -> None:
    packet = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)

    assert _reason(packet, key=RELAY) == "wrong_recipient"
    # nor by skipping the checks: the box needs the recipient's private key
    box = nacl.public.Box(
        RELAY.signing_key.to_curve25519_private_key(),
        MEC.signing_key.verify_key.to_curve25519_public_key(),
    )
    nonce_at = 1 + 32 + 32 + 32
    with pytest.raises(nacl.exceptions.CryptoError):
        box.decrypt(packet[nonce_at + 24 : -64], packet[nonce_at : nonce_at + 24])


def test_a_packet_sealed_by_another_device_is_a_bad_signature() -> None:
    forged = seal_task_packet(RELAY, DEVICE.public_key, b"do something else", CONTEXT)

    assert _reason(forged) == "bad_signature"


def test_a_relay_that_alters_and_re_signs_is_refused() -> None:
    packet = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)
    body = bytearray(packet[:-64])
    body[-1] ^= 0x01  # change the ciphertext ...
    resigned_as_mec = bytes(body) + RELAY.sign(b"bcfl/task-packet/v1\x00" + bytes(body))
    body[1:33] = RELAY.public_key  # ... and claim to be the sender
    resigned_as_relay = bytes(body) + RELAY.sign(b"bcfl/task-packet/v1\x00" + bytes(body))

    assert _reason(resigned_as_mec) == "tampered"
    assert _reason(resigned_as_relay) == "bad_signature"


def test_a_replay_in_another_task_or_round_is_refused() -> None:
    packet = seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, CONTEXT)

    assert _reason(packet, context=b"task:t1/round:4") == "wrong_context"
    assert _reason(packet, context=b"task:t2/round:3") == "wrong_context"
    # within its own context a repeat opens; the receiver drops it by its id
    assert open_task_packet(DEVICE, MEC.public_key, packet, CONTEXT) == PAYLOAD
    assert packet_id(packet) == packet_id(bytes(packet))


def test_size_limits_on_both_sides() -> None:
    with pytest.raises(PacketError) as info:
        seal_task_packet(MEC, DEVICE.public_key, b"x" * 1000, CONTEXT, max_bytes=1000)
    assert info.value.reason == "too_large"
    fits = seal_task_packet(
        MEC, DEVICE.public_key, b"x" * (1000 - OVERHEAD), CONTEXT, max_bytes=1000
    )
    assert len(fits) == 1000

    assert _reason(fits, max_bytes=999) == "too_large"
    assert _reason(b"\x00" * (10 * 1024 * 1024), max_bytes=1024) == "too_large"


@pytest.mark.parametrize("packet", [b"", b"\x01", b"\x01" * (OVERHEAD - 1)])
def test_a_short_packet_is_malformed(packet: bytes) -> None:
    assert _reason(packet) == "malformed"


def test_not_bytes_is_malformed() -> None:
    assert _reason(bytearray(b"\x01" * OVERHEAD)) == "malformed"  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"\x00" * 31, b"\xff" * 32])
def test_a_recipient_key_that_is_no_ed25519_key(bad: bytes) -> None:
    with pytest.raises(PacketError) as info:
        seal_task_packet(MEC, bad, PAYLOAD, CONTEXT)
    assert info.value.reason == "bad_key"


@pytest.mark.parametrize("context", [b"", b"x" * (MAX_CONTEXT_BYTES + 1)])
def test_a_context_must_be_1_to_1024_bytes(context: bytes) -> None:
    with pytest.raises(ValueError, match="context must be 1 to 1024 bytes"):
        seal_task_packet(MEC, DEVICE.public_key, PAYLOAD, context)
