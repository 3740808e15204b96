"""Types shared by the runtime and the contracts: block context, events, receipts, calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from node.contracts.errors import ContractError
from node.contracts.state import State
from node.core.tx import Transaction

T = TypeVar("T")


@dataclass(frozen=True)
class BlockContext:
    """What a contract may know about the block it runs in (never the wall clock)."""

    height: int
    timestamp_ms: int
    proposer: bytes


@dataclass(frozen=True)
class Event:
    """Something a contract call reports (goes into the receipt)."""

    contract: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [self.contract, self.name, self.data]


@dataclass(frozen=True)
class Receipt:
    """The outcome of one transaction in a block."""

    tx_hash: bytes
    ok: bool
    events: tuple[Event, ...]
    error: str = ""

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [self.tx_hash, self.ok, [e.to_obj() for e in self.events], self.error]


class Calls:
    """Lets a contract reach another contract's internal API (same state, same tx)."""

    def __init__(self, internals: Mapping[str, object]) -> None:
        self._internals = dict(internals)

    def api(self, name: str, kind: type[T]) -> T:
        """The internal API object registered for contract `name`, checked to be a `kind`."""
        obj = self._internals.get(name)
        if obj is None:
            raise ContractError(f"contract {name!r} has no internal API")
        if not isinstance(obj, kind):
            raise TypeError(f"internal API of {name!r} is not a {kind.__name__}")
        return obj


Method = Callable[[State, Transaction, BlockContext, Calls], list[Event]]


def field_of(payload: dict[str, Any], name: str) -> Any:
    """payload[name], or ContractError naming the missing field."""
    if name not in payload:
        raise ContractError(f"{name}: missing")
    return payload[name]


def int_field(payload: dict[str, Any], name: str, lo: int, hi: int = 2**63 - 1) -> int:
    """An int field in [lo, hi] (bools refused)."""
    value = field_of(payload, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(f"{name}: must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ContractError(f"{name}: {value} out of range [{lo}, {hi}]")
    return value


def str_field(payload: dict[str, Any], name: str, max_len: int = 128) -> str:
    """A non-empty string field of at most `max_len` characters."""
    value = field_of(payload, name)
    if not isinstance(value, str):
        raise ContractError(f"{name}: must be a string, not {type(value).__name__}")
    if not 0 < len(value) <= max_len:
        raise ContractError(f"{name}: length must be 1..{max_len}")
    return value


def bytes_field(payload: dict[str, Any], name: str, size: int) -> bytes:
    """A bytes field of exactly `size` bytes."""
    value = field_of(payload, name)
    if not isinstance(value, bytes):
        raise ContractError(f"{name}: must be bytes, not {type(value).__name__}")
    if len(value) != size:
        raise ContractError(f"{name}: must be {size} bytes, not {len(value)}")
    return value


def float_field(payload: dict[str, Any], name: str, lo: float, hi: float) -> float:
    """A number field in [lo, hi], returned as a float (bools refused)."""
    value = field_of(payload, name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ContractError(f"{name}: must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ContractError(f"{name}: {value} out of range [{lo}, {hi}]") from None
    if not lo <= number <= hi:  # NaN fails this too
        raise ContractError(f"{name}: {value} out of range [{lo}, {hi}]")
    return number


def no_extra_fields(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse payload fields a method does not know."""
    extra = sorted(set(payload) - set(allowed))
    if extra:
        raise ContractError(f"{extra[0]}: unknown field")
