"""Canonical, deterministic byte encoding for everything that is hashed or signed on chain.

Canonical msgpack: maps must have string keys and are written with keys sorted; floats are
always float64; allowed values are None, bool, int, float, str, bytes, list/tuple and dict.
`decode_canonical` re-encodes what it read and refuses input that is not byte-for-byte
canonical, so one value has exactly one encoding and one hash.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgpack

MAX_DEPTH = 32


class EncodingError(ValueError):
    """A value cannot be encoded canonically, or bytes are not a canonical encoding."""


_PLAIN = frozenset({type(None), bool, int, str, bytes})  # exact types returned as they are


def _normalise(obj: Any, depth: int = 0) -> Any:
    t = type(obj)
    if t in _PLAIN:  # the common case, before any isinstance
        return obj
    if depth > MAX_DEPTH:
        raise EncodingError(f"nested deeper than {MAX_DEPTH}")
    if t is list or t is tuple:
        if obj and depth >= MAX_DEPTH:
            raise EncodingError(f"nested deeper than {MAX_DEPTH}")
        out = []
        for v in obj:
            out.append(v if type(v) in _PLAIN else _normalise(v, depth + 1))
        return out
    if t is dict:
        if obj and depth >= MAX_DEPTH:
            raise EncodingError(f"nested deeper than {MAX_DEPTH}")
        keys = sorted(obj) if all(type(k) is str for k in obj) else None
        if keys is None:
            if not all(isinstance(k, str) for k in obj):
                raise EncodingError("map keys must be strings")
            keys = sorted(obj)
        normal = {}
        for k in keys:
            v = obj[k]
            normal[k] = v if type(v) in _PLAIN else _normalise(v, depth + 1)
        return normal
    if obj is None or isinstance(obj, bool | int | str | bytes):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise EncodingError("floats must be finite")
        return obj
    if isinstance(obj, list | tuple):
        return [_normalise(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise EncodingError("map keys must be strings")
        return {k: _normalise(obj[k], depth + 1) for k in sorted(obj)}
    raise EncodingError(f"cannot encode {type(obj).__name__} canonically")


def canonical(obj: Any) -> bytes:
    """The canonical bytes of `obj`."""
    try:
        data: bytes = msgpack.packb(_normalise(obj), use_bin_type=True, use_single_float=False)
    except OverflowError:
        raise EncodingError("integer out of the 64-bit range") from None
    return data


def decode_canonical(data: bytes, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """Decode bytes that must be canonical; raises EncodingError otherwise."""
    if len(data) > max_bytes:
        raise EncodingError(f"{len(data)} bytes exceeds {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_ext_len=0,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
        )
    except Exception as exc:
        raise EncodingError(f"not msgpack: {type(exc).__name__}") from None
    try:
        again = canonical(obj)
    except EncodingError:
        raise
    if again != data:
        raise EncodingError("not in canonical form")
    return obj


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()
