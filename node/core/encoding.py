"""Canonical, deterministic byte encoding for everything that is hashed or signed on chain.

Canonical msgpack: maps must have string keys and are written with keys sorted; floats are
always float64; allowed values are None, bool, int, float, str, bytes, list/tuple and dict.
`decode_canonical` refuses input that is not byte-for-byte canonical, so one value has
exactly one encoding and one hash.

Fast paths (each gives exactly the bytes and errors of the plain recursion; the tests check
them against it): `canonical` packs a list or map whose items are all of a plain exact type
(None, bool, int, str, bytes; map keys str, already in order) without rebuilding it.
`decode_canonical` first checks what it read in place (`is_normal`: maps with str keys in
sorted order, finite floats, shallow enough) and re-packs it as it is; only input failing
that takes the old way (normalise, re-encode, compare), so every refusal and its message
are unchanged. A value decoded from canonical bytes is normal, so `packb_normal` of it (or
of any part of it) is its canonical encoding without normalising it again.
"""

from __future__ import annotations

import hashlib
import math
import threading
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


def is_normal(obj: Any, depth: int = 0) -> bool:
    """Whether packing `obj` as it is gives its canonical bytes: it is what `_normalise`
    would return up to tuples for lists (maps with str keys in sorted order, finite floats,
    plain values of exact types, nesting well inside MAX_DEPTH). False is not an error:
    such a value takes the plain way, which raises what it raises."""
    t = type(obj)
    if t is list or t is tuple:
        if depth >= MAX_DEPTH - 1:
            return False
        for v in obj:  # noqa: SIM110 (a loop is faster than all() over a generator)
            if type(v) not in _PLAIN and not is_normal(v, depth + 1):
                return False
        return True
    if t is dict:
        if depth >= MAX_DEPTH - 1:
            return False
        prev = None
        for k, v in obj.items():
            if type(k) is not str or (prev is not None and k <= prev):
                return False
            prev = k
            if type(v) not in _PLAIN and not is_normal(v, depth + 1):
                return False
        return True
    if t is float:
        return math.isfinite(obj)
    return t in _PLAIN


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack Packer (building one per call costs more than packing a small
    value; a Packer is not shared between threads)."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, use_single_float=False)
    return packer


def packb_normal(obj: Any) -> bytes:
    """The canonical bytes of a value for which `is_normal` holds (e.g. anything decoded by
    `decode_canonical`), packed as it is; raises EncodingError for an out-of-range int."""
    try:
        data: bytes = _packer().pack(obj)
    except OverflowError:
        raise EncodingError("integer out of the 64-bit range") from None
    return data


def array_header(n: int) -> bytes:
    """The canonical bytes that start a list of `n` items (a list's encoding is this
    followed by its items' encodings)."""
    data: bytes = _packer().pack_array_header(n)
    return data


def canonical(obj: Any) -> bytes:
    """The canonical bytes of `obj`."""
    t = type(obj)
    if (t in _PLAIN or t is list or t is tuple or t is dict) and is_normal(obj):
        return packb_normal(obj)
    return packb_normal(_normalise(obj))


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
    if is_normal(obj):
        try:
            if packb_normal(obj) == data:
                return obj
        except EncodingError:
            pass  # the plain way below raises what it raises
    again = canonical(obj)
    if again != data:
        raise EncodingError("not in canonical form")
    return obj


def decode_known(data: bytes) -> Any:
    """Decode bytes known to be canonical (made by `canonical` or `packb_normal`, or
    already accepted by `decode_canonical`: e.g. a contract state's own values) without
    checking them again; anything from outside goes through `decode_canonical`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, max_ext_len=0)


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()
