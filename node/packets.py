"""Encrypted, signed task packets: what an edge server sends a selected device over D2D.

The two-layer paper (Step 2): "Task packets that are encrypted can be transferred to the
selected devices based on D2D communication. When a packet has been received by the local
device, it first checks whether the content has been changed. Then the tasks are decrypted
and handled." The paper names no cipher; the construction below is our choice.

How it works
------------
Each node has one Ed25519 identity key (`node.keys`). Its X25519 key pair is derived from it
(libsodium's Ed25519 -> Curve25519 conversion), so no second key is distributed. Sealing:

1. the payload is encrypted with `nacl.public.Box` (X25519 between the sender's private and
   the recipient's public key, XSalsa20-Poly1305, a random 24-byte nonce): only the
   recipient (and the sender) can read it, and any change fails its MAC;
2. the packet ``version | sender | recipient | SHA-256(context) | nonce | ciphertext`` is
   signed with the sender's Ed25519 key (domain-separated), so anyone (a relaying device
   too) can check its origin and integrity without the decryption key.

Opening checks, in order, and raises `PacketError` with the first reason that applies:
``too_large`` (over the limit, before any work), ``malformed`` (too short),
``unsupported_version``, ``tampered`` (the signature does not verify under the sender key
the packet names: some byte changed), ``bad_signature`` (intact, but sealed by another key
than the expected sender), ``wrong_recipient`` (sealed for another device),
``wrong_context`` (sealed for another task or round: a replay), and only then decrypts
(``tampered`` again if the MAC fails). The context (e.g. ``b"task:t1/round:3"``) is never
sent in clear, only its hash; within one context the caller drops repeats by `packet_id`.
Bytes only: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import logging

import nacl.exceptions
import nacl.public
import nacl.signing
import nacl.utils

from node.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeKey

__all__ = [
    "MAX_CONTEXT_BYTES",
    "MAX_PACKET_BYTES",
    "OVERHEAD",
    "REASONS",
    "VERSION",
    "PacketError",
    "open_task_packet",
    "packet_id",
    "seal_task_packet",
]

log = logging.getLogger(__name__)

VERSION = 1
DOMAIN = b"bcfl/task-packet/v1\x00"
MAX_PACKET_BYTES = 16 * 1024 * 1024  # a task packet is a task, not a model
MAX_CONTEXT_BYTES = 1024
NONCE_BYTES = nacl.public.Box.NONCE_SIZE  # 24
MAC_BYTES = 16  # Poly1305
HASH_BYTES = 32
HEADER_BYTES = 1 + 2 * PUBLIC_KEY_BYTES + HASH_BYTES + NONCE_BYTES
OVERHEAD = HEADER_BYTES + MAC_BYTES + SIGNATURE_BYTES  # bytes a packet adds to its payload

REASONS = (
    "too_large",
    "malformed",
    "unsupported_version",
    "tampered",
    "bad_signature",
    "wrong_recipient",
    "wrong_context",
    "bad_key",
)


class PacketError(ValueError):
    """A task packet is refused (or cannot be sealed); `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"task packet: {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


def _context_hash(context: bytes) -> bytes:
    if not isinstance(context, bytes) or not 0 < len(context) <= MAX_CONTEXT_BYTES:
        raise ValueError(f"context must be 1 to {MAX_CONTEXT_BYTES} bytes")
    return hashlib.sha256(b"bcfl/task-packet/context\x00" + context).digest()


def _x25519_public(public_ed25519: bytes) -> nacl.public.PublicKey:
    """The X25519 public key of an Ed25519 public key; PacketError(bad_key) if it is none."""
    if not isinstance(public_ed25519, bytes) or len(public_ed25519) != PUBLIC_KEY_BYTES:
        raise PacketError("bad_key", f"a public key must be {PUBLIC_KEY_BYTES} bytes")
    try:
        return nacl.signing.VerifyKey(public_ed25519).to_curve25519_public_key()
    except nacl.exceptions.CryptoError as exc:  # not a point of the curve
        raise PacketError("bad_key", f"not an Ed25519 public key ({exc})") from None


def _box(own: NodeKey, peer_public_ed25519: bytes) -> nacl.public.Box:
    return nacl.public.Box(
        own.signing_key.to_curve25519_private_key(), _x25519_public(peer_public_ed25519)
    )


def seal_task_packet(
    sender_key: NodeKey,
    recipient_public_ed25519: bytes,
    payload: bytes,
    context: bytes,
    max_bytes: int = MAX_PACKET_BYTES,
) -> bytes:
    """`payload` encrypted to the recipient and signed by `sender_key`, bound to `context`
    (the task and round it is for). PacketError(too_large) if the packet would exceed
    `max_bytes`, PacketError(bad_key) for a recipient key that is no Ed25519 key."""
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    if len(payload) + OVERHEAD > max_bytes:
        raise PacketError(
            "too_large", f"{len(payload)} payload bytes, at most {max_bytes - OVERHEAD}"
        )
    ctx_hash = _context_hash(context)
    nonce = nacl.utils.random(NONCE_BYTES)
    ciphertext = _box(sender_key, recipient_public_ed25519).encrypt(payload, nonce).ciphertext
    body = (
        bytes([VERSION])
        + sender_key.public_key
        + recipient_public_ed25519
        + ctx_hash
        + nonce
        + ciphertext
    )
    return body + sender_key.sign(DOMAIN + body)


def open_task_packet(
    recipient_key: NodeKey,
    sender_public_ed25519: bytes,
    packet: bytes,
    context: bytes,
    max_bytes: int = MAX_PACKET_BYTES,
) -> bytes:
    """The payload of `packet` if it is intact, from `sender_public_ed25519`, for
    `recipient_key` and for `context`; raises PacketError with the reason otherwise."""
    if not isinstance(packet, bytes):
        raise PacketError("malformed", f"a packet is bytes, not {type(packet).__name__}")
    if len(packet) > max_bytes:
        raise PacketError("too_large", f"{len(packet)} bytes, at most {max_bytes}")
    if len(packet) < OVERHEAD:
        raise PacketError("malformed", f"{len(packet)} bytes, at least {OVERHEAD}")
    if packet[0] != VERSION:
        raise PacketError("unsupported_version", f"version {packet[0]}, this node reads {VERSION}")
    body, signature = packet[:-SIGNATURE_BYTES], packet[-SIGNATURE_BYTES:]
    at = 1
    sender = body[at : at + PUBLIC_KEY_BYTES]
    at += PUBLIC_KEY_BYTES
    recipient = body[at : at + PUBLIC_KEY_BYTES]
    at += PUBLIC_KEY_BYTES
    ctx_hash = body[at : at + HASH_BYTES]
    at += HASH_BYTES
    nonce = body[at : at + NONCE_BYTES]
    ciphertext = body[at + NONCE_BYTES :]
    try:
        nacl.signing.VerifyKey(sender).verify(DOMAIN + body, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError):
        raise PacketError("tampered", "the signature does not match the content") from None
    if sender != sender_public_ed25519:
        raise PacketError("bad_signature", f"signed by {sender.hex()[:16]}, not the sender")
    if recipient != recipient_key.public_key:
        raise PacketError("wrong_recipient", f"sealed for {recipient.hex()[:16]}")
    if ctx_hash != _context_hash(context):
        raise PacketError("wrong_context", "sealed for another task or round")
    try:
        return _box(recipient_key, sender).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise PacketError("tampered", "the ciphertext does not authenticate") from None


def packet_id(packet: bytes) -> bytes:
    """A packet's SHA-256: what a receiver remembers to drop a repeat within one context."""
    return hashlib.sha256(packet).digest()
