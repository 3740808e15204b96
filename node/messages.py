"""Typed application messages: frozen dataclasses registered under a message type tag.

How it works
------------
A scheme declares each of its messages as a frozen dataclass registered with
``@message("tag")``; the tag is the codec's message type (`node.codec`). `to_payload` turns
an instance into the map the codec signs and sends (msgpack-able: ints, floats, str, bytes,
bools, None, lists, str-keyed maps, numpy arrays). `from_payload(tag, payload)` turns a
verified frame's map back into an instance of the tag's class, checking it once, field by
field, against the class's annotations:

- ``int`` (not a bool), ``float`` (an int is accepted and converted; finite unless the field
  says otherwise), ``str``, ``bytes``, ``bool``, ``numpy.ndarray``;
- ``X | None``; ``list[X]``, ``tuple[X, ...]`` and ``dict[str, X]`` of these;
- a nested frozen dataclass (registered or not), travelling as a map;
- bounds a field declares as ``Annotated[int, Bounds(ge=0)]`` (``ge``/``gt``/``le``/``lt``
  for numbers, ``max_len`` for str, bytes and containers, ``finite=False`` to let a float
  carry NaN and ±inf), and the class's own ``validate()`` hook (it raises ValueError for a
  message whose fields are each fine but not together).

A payload with unknown or missing keys, a value of the wrong type, out of bounds or refused
by ``validate()`` raises ``MessageError("bad_payload", detail)``, the detail naming the field
(``partial.updates[1].samples: expected an integer, got str``); an unregistered tag raises
``MessageError("unexpected")``. The caller (the daemon) counts the reason. Whether a
well-formed message is welcome (its round, its sender, its model's shapes) is the role's
business, with its own reasons (``stale_round``, ``bad_model``...).

The checks are compiled once per class, when it is registered, into one closure per field
(a message costs a few microseconds to check, see bench/messages.py); an annotation the
checker does not know is a TypeError at import, as is a tag registered twice.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np

MESSAGE_ERROR_REASONS = ("bad_payload", "unexpected")
TAG_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")  # what node.codec accepts as a message type

T = TypeVar("T")
Check = Callable[[Any], Any]


class MessageError(ValueError):
    """A payload is refused; `reason` (one of MESSAGE_ERROR_REASONS) is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in MESSAGE_ERROR_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _Invalid(Exception):
    """A value refused somewhere inside a payload; `where` grows as it travels up."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.where: list[str] = []

    def at(self, step: str) -> _Invalid:
        self.where.append(step)
        return self

    def detail(self, tag: str) -> str:
        return f"{tag}{''.join(reversed(self.where))}: {self.problem}"


@dataclass(frozen=True)
class Bounds:
    """Limits on one field's value (numbers) or length (str, bytes, containers)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    max_len: int | None = None
    finite: bool = True  # floats only: refuse NaN and ±inf


NonNegativeInt = Annotated[int, Bounds(ge=0)]
AnyFloat = Annotated[float, Bounds(finite=False)]


# -- checks --------------------------------------------------------------------------------


def _kind(value: object) -> str:
    return type(value).__name__


def _numeric_bounds(check: Check, b: Bounds) -> Check:
    ge, gt, le, lt = b.ge, b.gt, b.le, b.lt
    if ge is None and gt is None and le is None and lt is None:
        return check

    def bounded_number(value: Any) -> Any:
        v = check(value)
        if (
            (ge is not None and v < ge)
            or (gt is not None and v <= gt)
            or (le is not None and v > le)
            or (lt is not None and v >= lt)
        ):
            limits = [
                f"{op} {lim}"
                for op, lim in ((">=", ge), (">", gt), ("<=", le), ("<", lt))
                if lim is not None
            ]
            raise _Invalid(f"{v!r} is out of bounds (must be {' and '.join(limits)})")
        return v

    return bounded_number


def _length_bound(check: Check, b: Bounds) -> Check:
    limit = b.max_len
    if limit is None:
        return check

    def bounded_length(value: Any) -> Any:
        v = check(value)
        if len(v) > limit:
            raise _Invalid(f"length {len(v)} exceeds {limit}")
        return v

    return bounded_length


def _exact(tp: type, what: str) -> Check:
    def exact(value: Any) -> Any:
        if type(value) is not tp:
            raise _Invalid(f"expected {what}, got {_kind(value)}")
        return value

    return exact


def _float(finite: bool) -> Check:
    isfinite = math.isfinite

    def check_float(value: Any) -> float:
        t = type(value)
        if t is float:
            if finite and not isfinite(value):
                raise _Invalid(f"expected a finite number, got {value!r}")
            return value
        if t is int:
            try:
                return float(value)
            except OverflowError:
                raise _Invalid("integer too large for a float") from None
        raise _Invalid(f"expected a number, got {_kind(value)}")

    return check_float


def _ndarray(value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        raise _Invalid(f"expected an array, got {_kind(value)}")
    return value


def _optional(inner: Check) -> Check:
    def optional(value: Any) -> Any:
        return None if value is None else inner(value)

    return optional


_PLAIN = {int, str, bytes, bool}  # checked by `type(v) is t`; returned as they are


def _sequence(inner: Check, plain: type | None, as_tuple: bool) -> Check:
    make: Callable[[Iterable[Any]], Any] = tuple if as_tuple else list

    def sequence(value: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise _Invalid(f"expected a list, got {_kind(value)}")
        if plain is not None:  # the common case: no conversion, one pass
            for i, item in enumerate(value):
                if type(item) is not plain:
                    raise _Invalid(f"expected {plain.__name__}, got {_kind(item)}").at(f"[{i}]")
            return value if type(value) is (tuple if as_tuple else list) else make(value)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(inner(item))
            except _Invalid as exc:
                raise exc.at(f"[{i}]") from None
        return make(out)

    return sequence


def _mapping(inner: Check, identity: bool) -> Check:
    def mapping(value: Any) -> Any:
        if type(value) is not dict:
            raise _Invalid(f"expected a map, got {_kind(value)}")
        out = {} if not identity else value
        for key, item in value.items():
            if type(key) is not str:
                raise _Invalid(f"map key {key!r} is not a string")
            try:
                checked = inner(item)
            except _Invalid as exc:
                raise exc.at(f"[{key!r}]") from None
            if not identity:
                out[key] = checked
        return out

    return mapping


def _compile(tp: Any, b: Bounds, owner: str) -> Check:
    """The check of one annotation; `owner` names the field for errors at import."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        found = [m for m in tp.__metadata__ if isinstance(m, Bounds)]
        return _compile(args[0], found[-1] if found else b, owner)
    if origin is types.UnionType or origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"{owner}: only `X | None` unions are supported, not {tp}")
        return _optional(_compile(rest[0], b, owner))
    if tp is bool:
        return _exact(bool, "a boolean")
    if tp is int:
        return _numeric_bounds(_exact(int, "an integer"), b)
    if tp is float:
        return _numeric_bounds(_float(b.finite), b)
    if tp is str:
        return _length_bound(_exact(str, "a string"), b)
    if tp is bytes:
        return _length_bound(_exact(bytes, "bytes"), b)
    if tp is np.ndarray or origin is np.ndarray:
        return _ndarray
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        inner = _compile(item, Bounds(), owner)
        plain = item if item in _PLAIN else None  # (`type(x) is int` keeps bools out)
        return _length_bound(_sequence(inner, plain, origin is tuple), b)
    if origin is dict:
        if len(args) != 2 or args[0] is not str:
            raise TypeError(f"{owner}: maps must be dict[str, X], not {tp}")
        value = args[1]
        identity = value in _PLAIN or value is np.ndarray or typing.get_origin(value) is np.ndarray
        return _length_bound(_mapping(_compile(value, Bounds(), owner), identity), b)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _codec_of(tp).decode
    raise TypeError(f"{owner}: annotation {tp!r} is not supported in a message")


# -- per-class codecs ----------------------------------------------------------------------


class _ClassCodec:
    """The compiled checks (decode) and conversion (encode) of one dataclass."""

    def __init__(self, cls: type) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"message class {cls.__qualname__} must be a frozen dataclass")
        hints = typing.get_type_hints(cls, include_extras=True)
        self.cls = cls
        self.name = cls.__qualname__
        self.fields: list[tuple[str, Check]] = []
        required = set()
        self.nested: list[tuple[str, Callable[[Any], Any]]] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                raise TypeError(f"{self.name}.{f.name}: message fields must be init fields")
            tp = hints[f.name]
            self.fields.append((f.name, _compile(tp, Bounds(), f"{self.name}.{f.name}")))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.add(f.name)
            encode = _encoder(tp)
            if encode is not None:
                self.nested.append((f.name, encode))
        self.names = frozenset(name for name, _ in self.fields)
        self.required = frozenset(required)
        validate = getattr(cls, "validate", None)
        self.validate: Callable[[Any], None] | None = validate if callable(validate) else None
        self.slots = "__slots__" in cls.__dict__

    def decode(self, payload: Any) -> Any:
        if type(payload) is not dict:
            raise _Invalid(f"expected a map, got {_kind(payload)}")
        keys = payload.keys()
        if keys != self.names and (keys - self.names or self.required - keys):
            unknown, missing = sorted(map(str, keys - self.names)), sorted(self.required - keys)
            what = [f"unknown field {', '.join(unknown)}"] if unknown else []
            what += [f"missing field {', '.join(missing)}"] if missing else []
            raise _Invalid("; ".join(what))
        values = {}
        name = ""
        try:
            for name, check in self.fields:
                if name in payload:
                    values[name] = check(payload[name])
        except _Invalid as exc:
            raise exc.at(f".{name}") from None
        instance = self.cls(**values)
        if self.validate is not None:
            try:
                self.validate(instance)
            except ValueError as exc:
                raise _Invalid(str(exc)) from None
        return instance

    def encode(self, instance: Any) -> dict[str, Any]:
        if self.slots:
            out = {name: getattr(instance, name) for name, _ in self.fields}
        else:
            out = dict(instance.__dict__)  # a frozen dataclass's __dict__: its fields
        for name, encode in self.nested:
            value = out[name]
            if value is not None:
                out[name] = encode(value)
        return out


def _encoder(tp: Any) -> Callable[[Any], Any] | None:
    """How a value of annotation `tp` becomes plain data; None if it already is."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _encoder(args[0])
    if origin is types.UnionType or origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return _encoder(rest[0]) if rest else None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _codec_of(tp).encode
    item = _encoder(args[0]) if origin in (list, tuple) and args else None
    if item is not None:
        return lambda seq: [item(x) for x in seq]
    value = _encoder(args[1]) if origin is dict and len(args) == 2 else None
    if value is not None:
        return lambda m: {k: value(v) for k, v in m.items()}
    return None


_CODECS: dict[type, _ClassCodec] = {}
_BY_TAG: dict[str, type] = {}
_TAG_OF: dict[type, str] = {}


def _codec_of(cls: type) -> _ClassCodec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _ClassCodec(cls)
    return codec


def message(tag: str) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as the application message of type `tag`.

    TypeError if the class is not a frozen dataclass or an annotation is not supported;
    ValueError if `tag` is not a valid message type or another class already has it."""
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"message type {tag!r} must match {TAG_RE.pattern}")

    def register(cls: type[T]) -> type[T]:
        other = _BY_TAG.get(tag)
        if other is not None and _qualified(other) != _qualified(cls):
            raise ValueError(
                f"message type {tag!r} is already registered by {_qualified(other)}; "
                f"{_qualified(cls)} needs another tag"
            )
        codec = _ClassCodec(cls)
        if other is not None:  # the same class again (its module re-imported)
            _TAG_OF.pop(other, None)
        _CODECS[cls] = codec
        _BY_TAG[tag] = cls
        _TAG_OF[cls] = tag
        return cls

    return register


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered(tag: str) -> type | None:
    """The class registered under `tag`, if any."""
    return _BY_TAG.get(tag)


def registered_tags() -> dict[str, type]:
    """Every registered tag and its class."""
    return dict(_BY_TAG)


def message_type(instance: object) -> str:
    """The tag of a registered message class or instance; TypeError for anything else."""
    cls = instance if isinstance(instance, type) else type(instance)
    tag = _TAG_OF.get(cls)
    if tag is None:
        raise TypeError(f"{cls.__qualname__} is not a registered message")
    return tag


def to_payload(instance: object) -> dict[str, Any]:
    """The map the codec signs and sends for a registered message instance."""
    cls = type(instance)
    if cls not in _TAG_OF:
        raise TypeError(f"{cls.__qualname__} is not a registered message")
    return _CODECS[cls].encode(instance)


def from_payload(tag: str, payload: Any) -> Any:
    """The instance of `tag`'s class that `payload` encodes, checked field by field;
    MessageError("bad_payload") naming the field, or ("unexpected") for an unknown tag."""
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise MessageError("unexpected", f"no message type {tag!r}")
    try:
        return _CODECS[cls].decode(payload)
    except _Invalid as exc:
        raise MessageError("bad_payload", exc.detail(tag)) from None
