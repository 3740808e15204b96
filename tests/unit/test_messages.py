"""Typed messages (node.messages): the registry, round trips through the codec, and one
refusal per malformed field (its reason and the field it names)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pytest

from node.codec import Codec
from node.keys import NodeKey, Roster
from node.messages import (
    Bounds,
    MessageError,
    from_payload,
    message,
    message_type,
    registered,
    to_payload,
)
from node.schemes.vanilla.messages import (
    MESSAGES,
    DeviceUpdate,
    GlobalModel,
    Hello,
    IndividualUpdate,
    Partial,
    PbftMessage,
    Stop,
    Submit,
)


@dataclass(frozen=True)
class Inner:
    name: str
    count: Annotated[int, Bounds(ge=0)]


@message("test.sample")
@dataclass(frozen=True)
class Sample:
    """One field of each supported kind."""

    i: int
    f: float
    s: Annotated[str, Bounds(max_len=4)]
    b: bytes
    flag: bool
    arr: np.ndarray
    ints: list[int]
    names: tuple[str, ...]
    table: dict[str, float]
    inner: Inner
    inners: list[Inner]
    maybe: int | None
    ratio: Annotated[float, Bounds(gt=0, le=1)] = 0.5
    nested_maybe: Inner | None = None
    extra: list[int] = field(default_factory=list)


@message("test.checked")
@dataclass(frozen=True)
class Checked:
    low: int
    high: int

    def validate(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


def sample(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "i": 3,
        "f": 1.5,
        "s": "ab",
        "b": b"\x00\x01",
        "flag": True,
        "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ints": [1, 2],
        "names": ["a", "b"],
        "table": {"x": 1.0, "y": 2},
        "inner": {"name": "n", "count": 1},
        "inners": [{"name": "m", "count": 0}],
        "maybe": None,
        "ratio": 1,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not _ABSENT}


_ABSENT = object()


def _codec_pair() -> tuple[Codec, Codec]:
    keys = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(("a", "b"))}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    return Codec("a", keys["a"], roster), Codec("b", keys["b"], roster)


def _through_codec(instance: object) -> object:
    """`instance` sent by one codec and decoded by another, then typed (as the daemon will)."""
    sender, receiver = _codec_pair()
    msg = receiver.decode(sender.encode(message_type(instance), to_payload(instance)))
    return from_payload(msg.type, msg.payload)


def _weights() -> dict[str, np.ndarray]:
    return {"w": np.ones((2, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}


def _same(a: object, b: object) -> None:
    """Equal, arrays compared by value (dataclass == would compare arrays elementwise)."""
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            _same(getattr(a, name), getattr(b, name))
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b


VANILLA = [
    Hello("device"),
    GlobalModel(3, b"model-bytes", 24.0),
    DeviceUpdate(3, b"blob", b"tx", 0.25, 0.9),
    DeviceUpdate(3, b"blob", b"tx", math.nan, 0.0),
    Partial(3, 20, ("d0", "d1"), ("d2",), (b"t0", b"t1"), weights=_weights()),
    Partial(3, 0, (), ("d0",), ()),
    Partial(
        3,
        20,
        ("d0",),
        (),
        (b"t0",),
        updates=(IndividualUpdate("d0", _weights(), 20),),
    ),
    Stop(9),
    Submit((b"tx0", b"tx1"), 1_700_000_000_000),
    PbftMessage(b"pbft-bytes"),
]


@pytest.mark.parametrize("instance", VANILLA, ids=lambda m: type(m).__name__)
def test_vanilla_messages_round_trip_through_the_codec(instance: object) -> None:
    _same(_through_codec(instance), instance)


def test_every_vanilla_message_is_registered_under_its_tag() -> None:
    tags = {message_type(cls) for cls in MESSAGES}
    assert tags == {"hello", "global", "update", "partial", "stop", "submit", "pbft"}
    assert all(registered(message_type(cls)) is cls for cls in MESSAGES)


def test_a_payload_decodes_into_converted_immutable_values() -> None:
    got = from_payload("test.sample", sample())

    assert isinstance(got, Sample)
    assert got.ratio == 1.0 and type(got.ratio) is float  # an int accepted as a float
    assert got.table == {"x": 1.0, "y": 2.0} and type(got.table["y"]) is float
    assert got.names == ("a", "b")  # tuple annotation: a tuple
    assert got.inner == Inner("n", 1) and got.inners == [Inner("m", 0)]
    assert got.maybe is None and got.nested_maybe is None and got.extra == []
    _same(from_payload("test.sample", to_payload(got)), got)


def test_optional_values_and_defaults() -> None:
    got = from_payload("test.sample", sample(maybe=4, nested_maybe={"name": "x", "count": 2}))

    assert got.maybe == 4 and got.nested_maybe == Inner("x", 2)
    assert to_payload(got)["nested_maybe"] == {"name": "x", "count": 2}


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"i": True}, "test.sample.i: expected an integer, got bool"),
        ({"i": 1.0}, "test.sample.i: expected an integer, got float"),
        ({"i": None}, "test.sample.i: expected an integer, got NoneType"),
        ({"f": "1"}, "test.sample.f: expected a number, got str"),
        ({"f": math.nan}, "test.sample.f: expected a finite number, got nan"),
        ({"f": -math.inf}, "test.sample.f: expected a finite number, got -inf"),
        ({"f": True}, "test.sample.f: expected a number, got bool"),
        ({"f": 10**400}, "test.sample.f: integer too large for a float"),
        ({"s": b"ab"}, "test.sample.s: expected a string, got bytes"),
        ({"s": "abcde"}, "test.sample.s: length 5 exceeds 4"),
        ({"b": "ab"}, "test.sample.b: expected bytes, got str"),
        ({"flag": 1}, "test.sample.flag: expected a boolean, got int"),
        ({"arr": [1, 2]}, "test.sample.arr: expected an array, got list"),
        ({"ints": [1, True]}, "test.sample.ints[1]: expected int, got bool"),
        ({"ints": {"a": 1}}, "test.sample.ints: expected a list, got dict"),
        ({"names": ["a", 1]}, "test.sample.names[1]: expected str, got int"),
        ({"table": {"x": "1"}}, "test.sample.table['x']: expected a number, got str"),
        ({"table": [1.0]}, "test.sample.table: expected a map, got list"),
        ({"inner": {"name": "n"}}, "test.sample.inner: missing field count"),
        ({"inner": {"name": "n", "count": -1}}, "test.sample.inner.count: -1 is out of bounds"),
        ({"inner": "n"}, "test.sample.inner: expected a map, got str"),
        (
            {"inners": [{"name": "m", "count": 0}, {"name": 5, "count": 0}]},
            "test.sample.inners[1].name: expected a string, got int",
        ),
        ({"maybe": "x"}, "test.sample.maybe: expected an integer, got str"),
        ({"ratio": 0}, "test.sample.ratio: 0.0 is out of bounds (must be > 0 and <= 1)"),
        ({"ratio": 1.5}, "test.sample.ratio: 1.5 is out of bounds"),
        ({"i": _ABSENT}, "test.sample: missing field i"),
        ({"surplus": 1}, "test.sample: unknown field surplus"),
    ],
)
def test_each_malformed_field_is_bad_payload_naming_the_field(
    changes: dict[str, Any], where: str
) -> None:
    with pytest.raises(MessageError) as caught:
        from_payload("test.sample", sample(**changes))

    assert caught.value.reason == "bad_payload"
    assert caught.value.detail.startswith(where), caught.value.detail


def test_a_map_key_that_is_not_a_string_is_bad_payload() -> None:
    with pytest.raises(MessageError, match="map key 1 is not a string") as caught:
        from_payload("test.sample", sample(table={1: 1.0}))
    assert caught.value.reason == "bad_payload"


@pytest.mark.parametrize("payload", [None, [], b"x", "x", 3])
def test_a_payload_that_is_not_a_map_is_bad_payload(payload: object) -> None:
    with pytest.raises(MessageError) as caught:
        from_payload("test.sample", payload)
    assert caught.value.reason == "bad_payload"


def test_the_validate_hook_refuses_fields_that_do_not_fit_together() -> None:
    assert from_payload("test.checked", {"low": 1, "high": 2}) == Checked(1, 2)
    with pytest.raises(MessageError, match="low must not exceed high") as caught:
        from_payload("test.checked", {"low": 3, "high": 2})
    assert caught.value.reason == "bad_payload"


def test_an_unregistered_tag_is_unexpected() -> None:
    with pytest.raises(MessageError) as caught:
        from_payload("no-such-type", {})
    assert caught.value.reason == "unexpected"


@pytest.mark.parametrize(
    ("tag", "payload", "where"),
    [
        ("global", {"round": -1, "model": b"m", "deadline_s": 1.0}, "global.round"),
        ("global", {"round": 1, "model": b"m", "deadline_s": 0}, "global.deadline_s"),
        ("global", {"round": 1, "model": b"m", "deadline_s": math.inf}, "global.deadline_s"),
        ("global", {"round": 1, "model": None, "deadline_s": 1.0}, "global.model"),
        ("update", {"round": 1, "blob": b"", "tx": b"", "loss": 0.0}, "update: missing"),
        (
            "partial",
            {"round": 1, "samples": -1, "contributors": [], "missing": [], "txs": []},
            "partial.samples",
        ),
        (
            "partial",
            {
                "round": 1,
                "samples": 1,
                "contributors": ["d0"],
                "missing": [],
                "txs": [b"t"],
                "updates": [{"node": "d0", "weights": {"w": 1.0}, "samples": 1}],
            },
            "partial.updates[0].weights['w']: expected an array",
        ),
        ("stop", {"height": "9"}, "stop.height"),
        ("submit", {"txs": [b"t", "u"], "timestamp_ms": 1}, "submit.txs[1]"),
        ("submit", {"txs": [b"t"], "timestamp_ms": -1}, "submit.timestamp_ms"),
        ("pbft", {"data": "x"}, "pbft.data"),
        ("hello", {}, "hello: missing field kind"),
    ],
)
def test_malformed_vanilla_messages_are_bad_payload(
    tag: str, payload: dict[str, Any], where: str
) -> None:
    with pytest.raises(MessageError) as caught:
        from_payload(tag, payload)
    assert caught.value.reason == "bad_payload"
    assert caught.value.detail.startswith(where), caught.value.detail


def test_update_loss_and_accuracy_may_be_nan() -> None:
    got = from_payload(
        "update", {"round": 1, "blob": b"", "tx": b"", "loss": math.nan, "accuracy": 0}
    )
    assert math.isnan(got.loss) and got.accuracy == 0.0


def test_a_tag_registered_twice_is_an_error_at_import() -> None:
    with pytest.raises(ValueError, match="'hello' is already registered by"):

        @message("hello")
        @dataclass(frozen=True)
        class OtherHello:
            kind: str


def test_the_same_class_registered_again_replaces_itself() -> None:
    """A module imported again (importlib.reload) registers its classes again: no error."""

    def define() -> type:
        @message("test.again")
        @dataclass(frozen=True)
        class Again:
            x: int

        return Again

    first, second = define(), define()
    assert registered("test.again") is second
    assert from_payload("test.again", {"x": 1}) == second(1)
    with pytest.raises(TypeError):
        message_type(first(1))


def test_classes_the_checker_cannot_check_are_refused_at_import() -> None:
    with pytest.raises(TypeError, match="frozen dataclass"):

        @message("test.mutable")
        @dataclass
        class Mutable:
            x: int

    with pytest.raises(TypeError, match="not supported"):

        @message("test.set")
        @dataclass(frozen=True)
        class WithSet:
            x: set[int]

    with pytest.raises(TypeError, match="dict"):

        @message("test.intkeys")
        @dataclass(frozen=True)
        class IntKeys:
            x: dict[int, int]

    with pytest.raises(ValueError, match="must match"):
        message("Bad Tag")


def test_only_registered_instances_can_be_sent() -> None:
    with pytest.raises(TypeError, match="not a registered message"):
        to_payload(Inner("n", 1))
    with pytest.raises(TypeError, match="not a registered message"):
        message_type({"round": 1})
