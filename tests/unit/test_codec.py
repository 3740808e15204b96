"""Unit tests for node.codec: signed, versioned, size-limited frames with raw-array payloads."""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from node.codec import (
    ALLOWED_DTYPES,
    ARRAY_EXT,
    DROP_REASONS,
    MAGIC,
    REPLAY_WINDOW,
    VERSION,
    Codec,
    DecodeError,
    Message,
    _digest,
)
from node.keys import NodeKey, Roster

# Deterministic keys: the sender "alice", the receiver "bob", and "mallory" (not in the roster).
ALICE = NodeKey.from_seed(b"\x01" * 32)
BOB = NodeKey.from_seed(b"\x02" * 32)
MALLORY = NodeKey.from_seed(b"\x03" * 32)
ROSTER = Roster({"alice": ALICE.public_key, "bob": BOB.public_key})

HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)


def _sender(max_bytes: int = 1 << 24) -> Codec:
    return Codec("alice", ALICE, ROSTER, max_bytes=max_bytes)


def _receiver(max_bytes: int = 1 << 24) -> Codec:
    return Codec("bob", BOB, ROSTER, max_bytes=max_bytes)


def _signed_frame(
    body: bytes,
    *,
    seq: int = 0,
    msg_type: str = "test",
    sender: str = "alice",
    key: NodeKey = ALICE,
    version: object = VERSION,
) -> bytes:
    """A frame built by hand, signed exactly as Codec.encode signs."""
    sig = key.sign(_digest(msg_type, sender, seq, body))
    frame: bytes = msgpack.packb(
        [MAGIC, version, msg_type, sender, seq, body, sig], use_bin_type=True
    )
    return frame


def _array_ext(dtype: str, shape: tuple[int, ...], data: bytes, code: int = ARRAY_EXT) -> Any:
    """An array extension value built by hand (dtype, ndim, shape, raw bytes)."""
    dt = dtype.encode()
    head = struct.pack(f"<B{len(dt)}sB{len(shape)}Q", len(dt), dt, len(shape), *shape)
    return msgpack.ExtType(code, head + data)


def _assert_same(got: object, want: object) -> None:
    """Deep equality where arrays must match in dtype, shape and values."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict)
        assert list(got) == list(want)
        for k in want:
            _assert_same(got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w)
    else:
        assert type(got) is type(want)
        assert got == want


def _round_trip(payload: dict[str, Any], msg_type: str = "test") -> Message:
    return _receiver().decode(_sender().encode(msg_type, payload))


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_of_nested_plain_values() -> None:
    payload = {
        "str": "héllo ✓",
        "int": -(2**63),
        "big": 2**64 - 1,
        "float": 3.141592653589793,
        "inf": float("-inf"),
        "bytes": b"\x00\xff" * 10,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "two", [3.0, None], {"four": b"4"}],
        "nested": {"a": {"b": {"c": []}}, "empty": {}},
    }

    msg = _round_trip(payload, msg_type="model.update")

    _assert_same(msg.payload, payload)
    assert (msg.type, msg.sender, msg.seq) == ("model.update", "alice", 0)
    assert msg.size > 0


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((), id="0-d"),
        *[
            pytest.param(s, id=str(s))
            for s in [(0,), (7,), (2, 3), (2, 0, 3), (1, 2, 3, 4), (1,) * 8]
        ],
    ],
)
def test_round_trip_of_arrays_of_every_allowed_dtype_and_shape(
    dtype: str, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    arr = np.asarray(rng.standard_normal(shape) * 50).astype(np.dtype(dtype))
    assert arr.shape == shape
    payload = {"w": arr, "nested": [{"w": arr}]}

    msg = _round_trip(payload)

    _assert_same(msg.payload, payload)


def test_round_trip_of_non_contiguous_arrays_and_numpy_scalars() -> None:
    base = np.arange(24, dtype="<f4").reshape(4, 6)
    payload = {"t": base.T, "slice": base[:, ::2], "scalar": np.float32(1.5), "i": np.int64(-3)}

    msg = _round_trip(payload)

    _assert_same(msg.payload["t"], np.ascontiguousarray(base.T))
    _assert_same(msg.payload["slice"], np.ascontiguousarray(base[:, ::2]))
    assert msg.payload["scalar"] == 1.5
    assert msg.payload["i"] == -3


def test_sequence_numbers_count_up_per_sender() -> None:
    sender, receiver = _sender(), _receiver()

    seqs = [receiver.decode(sender.encode("ping", {"i": i})).seq for i in range(3)]

    assert seqs == [0, 1, 2]


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        elements=st.floats(width=32, allow_nan=False),
    )
)
_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(HYPOTHESIS, max_examples=60)
@given(payload=st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_property_encode_decode_returns_an_equal_payload(payload: dict[str, Any]) -> None:
    msg = _round_trip(payload)

    _assert_same(msg.payload, payload)


# --- rejections ----------------------------------------------------------------------------


def _decode_reason(frame: bytes, receiver: Codec | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        (receiver or _receiver()).decode(frame)
    assert info.value.reason in DROP_REASONS
    return info.value.reason


def test_tampered_signature_is_bad_signature() -> None:
    frame = bytearray(_sender().encode("test", {"x": 1}))

    frame[-1] ^= 0x01  # the signature is the last field of the envelope

    assert _decode_reason(bytes(frame)) == "bad_signature"


def test_tampered_body_is_bad_signature() -> None:
    frame = bytearray(_sender().encode("test", {"weights": np.zeros(16, "<f4")}))
    pos = bytes(frame).index(np.zeros(16, "<f4").tobytes())

    frame[pos + 5] ^= 0x40

    assert _decode_reason(bytes(frame)) == "bad_signature"


def test_sender_not_in_the_roster_is_unknown_sender() -> None:
    mallory = Codec("mallory", MALLORY, Roster({"mallory": MALLORY.public_key}))

    assert _decode_reason(mallory.encode("test", {"x": 1})) == "unknown_sender"


def test_roster_member_impersonated_with_another_key_is_bad_signature() -> None:
    frame = _signed_frame(msgpack.packb({}), key=MALLORY)

    assert _decode_reason(frame) == "bad_signature"


def test_frame_bigger_than_the_receivers_limit_is_oversize() -> None:
    frame = _sender().encode("test", {"blob": b"\x00" * 2000})

    assert len(frame) > 1000
    assert _decode_reason(frame, _receiver(max_bytes=1000)) == "oversize"


def test_same_frame_twice_is_replay() -> None:
    receiver = _receiver()
    frame = _sender().encode("test", {"x": 1})
    receiver.decode(frame)

    assert _decode_reason(frame, receiver) == "replay"


def test_replay_is_tracked_per_sender() -> None:
    receiver = _receiver()
    from_alice = _sender().encode("test", {})
    from_bob = Codec("bob", BOB, ROSTER).encode("test", {})  # also seq 0

    assert receiver.decode(from_alice).seq == 0
    assert receiver.decode(from_bob).seq == 0


@pytest.mark.parametrize("version", [0, 2, 255, "1", None])
def test_other_envelope_version_is_bad_version(version: object) -> None:
    env = msgpack.unpackb(_sender().encode("test", {"x": 1}), raw=False)
    env[1] = version

    assert _decode_reason(msgpack.packb(env, use_bin_type=True)) == "bad_version"


def test_version_true_is_bad_version() -> None:
    env = msgpack.unpackb(_sender().encode("test", {"x": 1}), raw=False)
    env[1] = True

    assert _decode_reason(msgpack.packb(env, use_bin_type=True)) == "bad_version"


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x00garbage", id="trailing-data"),
        pytest.param(bytes(range(256)), id="garbage"),
        pytest.param(msgpack.packb({"a": 1}), id="a-map"),
        pytest.param(msgpack.packb(["bcfl", 1, "t", "alice"]), id="short-envelope"),
        pytest.param(msgpack.packb(["xxxx", 1, "t", "alice", 0, b"", b"s" * 64]), id="magic"),
        pytest.param(msgpack.packb(["bcfl", 1, "T!", "alice", 0, b"", b"s" * 64]), id="type"),
        pytest.param(msgpack.packb(["bcfl", 1, "t", "Alice", 0, b"", b"s" * 64]), id="sender"),
        pytest.param(msgpack.packb(["bcfl", 1, "t", "alice", -1, b"", b"s" * 64]), id="seq"),
        pytest.param(msgpack.packb(["bcfl", 1, "t", "alice", 0, "x", b"s" * 64]), id="body-str"),
        pytest.param(msgpack.packb(["bcfl", 1, "t", "alice", 0, b"", b"s" * 63]), id="sig-len"),
    ],
)
def test_garbage_and_bad_envelopes_are_malformed(frame: bytes) -> None:
    assert _decode_reason(frame) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(msgpack.packb([1, 2, 3]), id="body-is-a-list"),
        pytest.param(msgpack.packb(7), id="body-is-an-int"),
        pytest.param(b"\xc1", id="body-is-not-msgpack"),
        pytest.param(msgpack.packb({"a": 1}) + b"\x00", id="body-has-trailing-data"),
        pytest.param(msgpack.packb({1: "int key"}), id="non-string-key"),
        pytest.param(
            msgpack.packb({"w": _array_ext("<f4", (5,), b"\x00" * 16)}), id="shape-too-big"
        ),
        pytest.param(
            msgpack.packb({"w": _array_ext("<f4", (2, 2), b"\x00" * 20)}), id="shape-too-small"
        ),
        pytest.param(
            msgpack.packb({"w": _array_ext("<c8", (2,), b"\x00" * 16)}), id="complex-dtype"
        ),
        pytest.param(msgpack.packb({"w": _array_ext("|O", (1,), b"\x00" * 8)}), id="object"),
        pytest.param(msgpack.packb({"w": _array_ext(">f4", (1,), b"\x00" * 4)}), id="big-end"),
        pytest.param(
            msgpack.packb({"w": _array_ext("<f4", (1,) * 9, b"\x00" * 4)}), id="ndim-over-8"
        ),
        pytest.param(
            msgpack.packb({"w": _array_ext("<f4", (1,), b"\x00" * 4, code=2)}), id="ext-code-2"
        ),
        pytest.param(
            msgpack.packb({"w": msgpack.ExtType(ARRAY_EXT, b"\x03<f")}), id="truncated-header"
        ),
        pytest.param(
            msgpack.packb({"w": _array_ext("<f8", (2**40, 2**40), b"")}), id="huge-claimed-shape"
        ),
    ],
)
def test_signed_frame_with_a_bad_body_is_bad_payload(body: bytes) -> None:
    frame = _signed_frame(body)

    assert _decode_reason(frame) == "bad_payload"


@HYPOTHESIS
@given(garbage=st.binary(max_size=4096))
def test_property_random_bytes_always_raise_decode_error(garbage: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        _receiver().decode(garbage)

    assert info.value.reason in DROP_REASONS


_VALID_FRAME = Codec("alice", ALICE, ROSTER).encode(
    "model.update", {"round": 3, "w": np.linspace(-1, 1, 12, dtype="<f4").reshape(3, 4)}
)
_VERSION_OFFSET = 6  # 0x97, 0xa4 "bcfl", then the version as a positive fixint


@HYPOTHESIS
@given(data=st.data())
def test_property_one_mutated_byte_always_raises_decode_error(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(_VALID_FRAME) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    mutated = bytearray(_VALID_FRAME)
    mutated[index] ^= mask

    with pytest.raises(DecodeError) as info:
        _receiver().decode(bytes(mutated))

    assert info.value.reason in DROP_REASONS


def test_every_single_byte_mutation_of_the_envelope_header_is_rejected() -> None:
    frame = _sender().encode("t", {"k": 1})
    assert frame[_VERSION_OFFSET] == VERSION
    # Everything up to and including the body's bin header (magic, version, type, sender,
    # seq); mutations of the body and signature are covered by the hypothesis property.
    header_end = frame.index(msgpack.packb({"k": 1}))
    accepted = []

    for index in range(header_end):
        for new_byte in range(256):
            if new_byte == frame[index]:
                continue
            mutated = bytearray(frame)
            mutated[index] = new_byte
            try:
                _receiver().decode(bytes(mutated))
            except DecodeError as exc:
                assert exc.reason in DROP_REASONS
            else:
                accepted.append((index, new_byte))

    assert accepted == []


# --- the replay window ---------------------------------------------------------------------


def test_reordered_frames_are_accepted_and_duplicates_rejected() -> None:
    sender, receiver = _sender(), _receiver()
    frames = [sender.encode("test", {"i": i}) for i in range(10)]

    got = [receiver.decode(f).payload["i"] for f in reversed(frames)]

    assert got == list(range(9, -1, -1))
    for frame in frames:
        assert _decode_reason(frame, receiver) == "replay"


def test_seq_older_than_the_window_is_rejected_but_inside_it_accepted() -> None:
    receiver = _receiver()
    body = msgpack.packb({})
    highest = REPLAY_WINDOW + 1000
    receiver.decode(_signed_frame(body, seq=highest))

    too_old = _signed_frame(body, seq=highest - REPLAY_WINDOW)
    oldest_ok = _signed_frame(body, seq=highest - REPLAY_WINDOW + 1)

    assert _decode_reason(too_old, receiver) == "replay"
    assert receiver.decode(oldest_ok).seq == highest - REPLAY_WINDOW + 1
    assert _decode_reason(_signed_frame(body, seq=0), receiver) == "replay"


def test_replay_window_keeps_rejecting_duplicates_after_many_messages() -> None:
    receiver = _receiver()
    body = msgpack.packb({})
    frames = [_signed_frame(body, seq=s) for s in range(2 * REPLAY_WINDOW + 10)]
    for frame in frames:
        receiver.decode(frame)

    recent = frames[-REPLAY_WINDOW + 1 :]
    rejected = [f for f in recent if _rejected(receiver, f)]

    assert len(rejected) == len(recent)
    assert _decode_reason(frames[0], receiver) == "replay"


def _rejected(receiver: Codec, frame: bytes) -> bool:
    try:
        receiver.decode(frame)
    except DecodeError as exc:
        return exc.reason == "replay"
    return False


# --- encoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
        pytest.param(1 + 2j, id="complex"),
        pytest.param(np.zeros(2, dtype=np.complex64), id="complex64-array"),
        pytest.param(np.zeros(2, dtype=object), id="object-array"),
        pytest.param(np.zeros(2, dtype=np.uint32), id="uint32-array"),
        pytest.param(np.zeros(2, dtype=">f4"), id="big-endian-array"),
        pytest.param(np.array(["a"]), id="str-array"),
        pytest.param(2**64, id="int-too-big"),
    ],
)
def test_encoding_an_unsupported_value_raises_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        _sender().encode("test", {"nested": [{"x": value}]})


def test_encode_refuses_a_frame_bigger_than_max_bytes() -> None:
    sender = _sender(max_bytes=1000)

    with pytest.raises(ValueError, match="exceeds the limit 1000"):
        sender.encode("test", {"w": np.zeros(1000, dtype="<f4")})


@pytest.mark.parametrize("msg_type", ["", "Upper", "1st", "has space", "x" * 33, "é"])
def test_encode_rejects_a_bad_message_type(msg_type: str) -> None:
    with pytest.raises(ValueError, match="message type"):
        _sender().encode(msg_type, {})


def test_encode_rejects_a_message_type_with_a_trailing_newline() -> None:
    with pytest.raises(ValueError, match="message type"):
        _sender().encode("ping\n", {})


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"nested": {1: "int key"}}, id="int-key"),
        pytest.param({"text": "x" * ((1 << 20) + 1)}, id="long-string"),
    ],
)
def test_encode_only_produces_frames_that_decode(payload: dict[str, Any]) -> None:
    sender, receiver = _sender(), _receiver()

    try:
        frame = sender.encode("test", payload)
    except (TypeError, ValueError):
        return  # refusing at the sender is fine
    assert receiver.decode(frame).payload == payload


def test_nan_survives_the_round_trip() -> None:
    msg = _round_trip({"x": float("nan"), "a": np.array([np.nan], dtype="<f4")})

    assert math.isnan(msg.payload["x"])
    assert np.isnan(msg.payload["a"]).all()


def test_a_restarted_sender_starting_above_its_old_sequence_numbers_is_accepted() -> None:
    key = NodeKey.generate()
    roster = Roster({"a": key.public_key, "b": NodeKey.generate().public_key})
    receiver = Codec("b", NodeKey.generate(), roster)
    before = Codec("a", key, roster)
    for _ in range(3):
        receiver.decode(before.encode("ping", {}))

    restarted_from_zero = Codec("a", key, roster)
    with pytest.raises(DecodeError) as info:
        receiver.decode(restarted_from_zero.encode("ping", {}))
    assert info.value.reason == "replay"
    restarted = Codec("a", key, roster, first_seq=1_000_000)
    assert receiver.decode(restarted.encode("ping", {})).seq == 1_000_000
