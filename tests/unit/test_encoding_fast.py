"""The fast paths of `canonical` give exactly the bytes (and errors) of the plain recursion."""

from __future__ import annotations

import enum
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.encoding import MAX_DEPTH, EncodingError, canonical


def reference(obj: Any, depth: int = 0) -> Any:
    """The straightforward normalisation the fast paths must match."""
    if depth > MAX_DEPTH:
        raise EncodingError("deep")
    if obj is None or isinstance(obj, bool | int | str | bytes):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise EncodingError("float")
        return obj
    if isinstance(obj, list | tuple):
        return [reference(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise EncodingError("keys")
        return {k: reference(obj[k], depth + 1) for k in sorted(obj)}
    raise EncodingError("type")


def reference_bytes(obj: Any) -> bytes:
    return bytes(msgpack.packb(reference(obj), use_bin_type=True, use_single_float=False))


class Level(enum.IntEnum):
    LOW = 1


class Key(str):
    pass


def _nest(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def _dnest(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = {"k": leaf}
    return leaf


@pytest.mark.parametrize(
    "obj",
    [
        [Level.LOW, True, 0, -1, 2**63 - 1, "s", b"b", None, 1.5, (1, 2)],
        {Key("b"): 1, "a": {"z": [1.0, {"y": b""}]}},
        _nest(MAX_DEPTH, 1),
        _nest(MAX_DEPTH + 1, 1),
        _nest(MAX_DEPTH + 1, []),
        _dnest(MAX_DEPTH, 1),
        _dnest(MAX_DEPTH + 1, 1),
        _dnest(MAX_DEPTH + 1, {}),
    ],
)
def test_edge_cases_match_the_reference(obj: Any) -> None:
    try:
        want = reference_bytes(obj)
    except EncodingError:
        with pytest.raises(EncodingError):
            canonical(obj)
    else:
        assert canonical(obj) == want


@pytest.mark.parametrize(
    "bad", [[math.nan], {"a": math.inf}, {1: 2}, {"a": 1, 2: 3}, [object()], {"a": {b"k": 1}}]
)
def test_refusals_match(bad: Any) -> None:
    with pytest.raises(EncodingError):
        reference(bad)
    with pytest.raises(EncodingError):
        canonical(bad)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values)
def test_random_values_match_the_reference(obj: Any) -> None:
    assert canonical(obj) == reference_bytes(obj)
