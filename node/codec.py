"""The wire codec: versioned, size-limited, signed envelopes with raw-array payloads.

How it works
------------
A frame is a msgpack array ``["bcfl", VERSION, type, sender, seq, body, signature]``.
``body`` is the msgpack encoding of the payload (a map with string keys); numpy arrays
inside it travel as msgpack extension type 1 holding ``dtype, shape, raw bytes`` (never
pickle, never ``torch.load``). The signature is Ed25519 over
``DOMAIN || SHA-256(msgpack([VERSION, type, sender, seq]) || body)``, so signing a
model costs one SHA-256 pass, not two SHA-512 passes.

Decoding checks, in order and before any work proportional to the claim: the frame size,
the envelope shape, the version, that the sender is in the roster, the signature, that
the sequence number is not a replay (a sliding window per sender, since shaped links with
jitter reorder messages), then the body. Any failure raises ``DecodeError`` whose
``reason`` is one of ``DROP_REASONS``; the daemon counts it and goes on.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from node.keys import SIGNATURE_BYTES, NodeKey, Roster

MAGIC = "bcfl"
VERSION = 1
DOMAIN = b"bcfl/msg/v1\x00"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ARRAY_EXT = 1
REPLAY_WINDOW = 4096

ALLOWED_DTYPES = frozenset(
    np.dtype(t).str for t in ("<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "|b1")
)
_TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_MAX_NDIM = 8
_MAX_STR_LEN = 1 << 20
_MAX_ARRAY_LEN = 1 << 20
_MAX_MAP_LEN = 1 << 16
_MAX_DEPTH = 64

DROP_REASONS = (
    "oversize",
    "malformed",
    "bad_version",
    "unknown_sender",
    "bad_signature",
    "replay",
    "bad_payload",
)


class DecodeError(Exception):
    """A received frame was rejected; `reason` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in DROP_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Message:
    """A verified message: who sent it, its type, sequence number and payload (the map as
    decoded; for a type registered in `node.messages` the daemon hands roles the message's
    instance instead)."""

    type: str
    sender: str
    seq: int
    payload: Any
    size: int = 0


def _pack_array(arr: np.ndarray) -> msgpack.ExtType:
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # (ascontiguousarray alone would make 0-d arrays 1-d)
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise TypeError(
            f"array dtype {arr.dtype} cannot be sent; allowed: {sorted(ALLOWED_DTYPES)}"
        )
    dt = arr.dtype.str.encode()
    head = struct.pack(f"<B{len(dt)}sB{arr.ndim}Q", len(dt), dt, arr.ndim, *arr.shape)
    return msgpack.ExtType(ARRAY_EXT, head + arr.tobytes())


def _default(obj: object) -> object:
    if isinstance(obj, np.ndarray):
        return _pack_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _unpack_array(code: int, data: bytes) -> np.ndarray:
    if code != ARRAY_EXT:
        raise ValueError(f"unknown extension type {code}")
    view = memoryview(data)
    if len(view) < 2:
        raise ValueError("array header truncated")
    dt_len = view[0]
    pos = 1 + dt_len
    if len(view) < pos + 1:
        raise ValueError("array header truncated")
    dt = bytes(view[1:pos]).decode("ascii", "strict")
    if dt not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {dt!r} not allowed")
    ndim = view[pos]
    pos += 1
    if ndim > _MAX_NDIM or len(view) < pos + 8 * ndim:
        raise ValueError("bad array shape")
    shape = struct.unpack_from(f"<{ndim}Q", view, pos)
    pos += 8 * ndim
    dtype = np.dtype(dt)
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != len(view) - pos:
        raise ValueError("array size does not match its shape")
    return np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)


def _check_encodable(obj: object, depth: int = 0) -> None:
    """Refuse, at the sender, what every receiver's `decode_body` limits would refuse."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"payload nested deeper than {_MAX_DEPTH} levels")
    if isinstance(obj, dict):
        if len(obj) > _MAX_MAP_LEN:
            raise ValueError(f"map of {len(obj)} entries exceeds {_MAX_MAP_LEN}")
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"map key {key!r} is not a string")
            _check_encodable(key, depth + 1)
            _check_encodable(value, depth + 1)
    elif isinstance(obj, list | tuple):
        if len(obj) > _MAX_ARRAY_LEN:
            raise ValueError(f"list of {len(obj)} items exceeds {_MAX_ARRAY_LEN}")
        for item in obj:
            _check_encodable(item, depth + 1)
    elif isinstance(obj, str) and len(obj) > _MAX_STR_LEN:
        raise ValueError(f"string of {len(obj)} characters exceeds {_MAX_STR_LEN}")


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The msgpack body for a payload (arrays as extension type 1)."""
    body = dict(payload)
    _check_encodable(body)
    return msgpack.packb(body, default=_default, use_bin_type=True)


def decode_body(body: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Inverse of `encode_body`; raises ValueError (or msgpack errors) on bad input."""
    payload = msgpack.unpackb(
        body,
        raw=False,
        strict_map_key=True,
        ext_hook=_unpack_array,
        max_bin_len=max_bytes,
        max_str_len=_MAX_STR_LEN,
        max_array_len=_MAX_ARRAY_LEN,
        max_map_len=_MAX_MAP_LEN,
        max_ext_len=max_bytes,
    )
    if not isinstance(payload, dict):
        raise ValueError("payload is not a map")
    return payload


def _digest(msg_type: str, sender: str, seq: int, body: bytes) -> bytes:
    header = msgpack.packb([VERSION, msg_type, sender, seq], use_bin_type=True)
    h = hashlib.sha256(header)
    h.update(body)
    return DOMAIN + h.digest()


@dataclass
class _ReplayWindow:
    highest: int = -1
    seen: set[int] = field(default_factory=set)

    def accept(self, seq: int) -> bool:
        if seq <= self.highest - REPLAY_WINDOW or seq in self.seen:
            return False
        self.seen.add(seq)
        if seq > self.highest:
            self.highest = seq
            floor = seq - REPLAY_WINDOW
            if len(self.seen) > 2 * REPLAY_WINDOW:
                self.seen = {s for s in self.seen if s > floor}
        return True


class Codec:
    """Encodes this node's messages and decodes and verifies everyone's."""

    def __init__(
        self,
        node_id: str,
        key: NodeKey,
        roster: Roster,
        max_bytes: int = DEFAULT_MAX_BYTES,
        first_seq: int = 0,
    ) -> None:
        """`first_seq`: where this process's sequence numbers start. A node restarted with
        the same key must start above everything it sent before, or its peers' replay
        windows drop its messages: the daemon passes the wall clock in microseconds."""
        if not _ID_RE.fullmatch(node_id):
            raise ValueError(f"node id {node_id!r} must match {_ID_RE.pattern}")
        self.node_id = node_id
        self._key = key
        self._roster = roster
        self.max_bytes = max_bytes
        self._seq = first_seq
        self._windows: dict[str, _ReplayWindow] = {}

    def encode(self, msg_type: str, payload: Mapping[str, Any]) -> bytes:
        """A signed frame carrying `payload`; raises ValueError if it would be oversize."""
        if not _TYPE_RE.fullmatch(msg_type):
            raise ValueError(f"message type {msg_type!r} must match {_TYPE_RE.pattern}")
        body = encode_body(payload)
        seq = self._seq
        self._seq += 1
        sig = self._key.sign(_digest(msg_type, self.node_id, seq, body))
        frame: bytes = msgpack.packb(
            [MAGIC, VERSION, msg_type, self.node_id, seq, body, sig], use_bin_type=True
        )
        if len(frame) > self.max_bytes:
            raise ValueError(f"message of {len(frame)} bytes exceeds the limit {self.max_bytes}")
        return frame

    def decode(self, frame: bytes) -> Message:
        """Verify and decode a received frame; raises DecodeError with a reason."""
        if len(frame) > self.max_bytes:
            raise DecodeError("oversize", f"{len(frame)} > {self.max_bytes} bytes")
        try:
            env = msgpack.unpackb(
                frame,
                raw=False,
                max_bin_len=self.max_bytes,
                max_str_len=256,
                max_array_len=16,
                max_map_len=0,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types on garbage
            raise DecodeError("malformed", type(exc).__name__) from None
        if not (isinstance(env, list) and len(env) == 7 and env[0] == MAGIC):
            raise DecodeError("malformed", "not a bcfl envelope")
        _, version, msg_type, sender, seq, body, sig = env
        if type(version) is not int or version != VERSION:
            raise DecodeError("bad_version", f"version {version!r}, expected {VERSION}")
        if not (
            isinstance(msg_type, str)
            and _TYPE_RE.fullmatch(msg_type)
            and isinstance(sender, str)
            and _ID_RE.fullmatch(sender)
            and isinstance(seq, int)
            and seq >= 0
            and isinstance(body, bytes)
            and isinstance(sig, bytes)
            and len(sig) == SIGNATURE_BYTES
        ):
            raise DecodeError("malformed", "bad envelope field")
        if sender not in self._roster:
            raise DecodeError("unknown_sender", sender)
        if not self._roster.verify(sender, _digest(msg_type, sender, seq, body), sig):
            raise DecodeError("bad_signature", f"from {sender}")
        window = self._windows.setdefault(sender, _ReplayWindow())
        if not window.accept(seq):
            raise DecodeError("replay", f"seq {seq} from {sender}")
        try:
            payload = decode_body(body, self.max_bytes)
        except Exception as exc:
            raise DecodeError("bad_payload", f"{type(exc).__name__}: {exc}") from None
        return Message(msg_type, sender, seq, payload, len(frame))
