"""The token ledger: integer balances of members, moved by transfers and other contracts.

How it works
- State: ns "token.balance": node id -> int (> 0; a zero balance is deleted).
- Methods: `token.transfer` {to, amount}: any member sends `amount` (> 0) of its own
  tokens to another registered member (not itself).
- Internal API (TokenApi, via `Calls.api("token", TokenApi)`): `credit(state, id, amount)`
  and `debit(state, id, amount)`; debit raises ContractError on insufficient funds. Other
  contracts (the task escrow) move tokens only through these.
- Invariants: balances are ints in [0, MAX_AMOUNT]; a transfer never changes the total
  supply (`total_supply`); tokens are only created by genesis.
"""

from __future__ import annotations

from typing import Any

from node.contracts import identity
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    int_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.core.tx import Transaction

NAME = "token"
NS_BALANCE = "token.balance"
MAX_AMOUNT = 2**63 - 1


def balance_of(state: State, node_id: str) -> int:
    """The balance of `node_id` (0 if none)."""
    return int(state.get(NS_BALANCE, node_id, 0))


def total_supply(state: State) -> int:
    """The sum of all balances."""
    return sum(int(v) for _, v in state.items(NS_BALANCE))


def _set_balance(state: State, node_id: str, amount: int) -> None:
    if amount == 0:
        state.delete(NS_BALANCE, node_id)
    else:
        state.set(NS_BALANCE, node_id, amount)


def _check_amount(amount: object) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ContractError(f"amount: must be an integer, not {type(amount).__name__}")
    if not 0 < amount <= MAX_AMOUNT:
        raise ContractError(f"amount: {amount} out of range [1, {MAX_AMOUNT}]")
    return amount


def credit(state: State, node_id: str, amount: int) -> None:
    """Add `amount` (> 0) to `node_id`'s balance; ContractError on overflow."""
    _check_amount(amount)
    new = balance_of(state, node_id) + amount
    if new > MAX_AMOUNT:
        raise ContractError(f"amount: balance of {node_id!r} would overflow")
    _set_balance(state, node_id, new)


def debit(state: State, node_id: str, amount: int) -> None:
    """Take `amount` (> 0) from `node_id`'s balance; ContractError on insufficient funds."""
    _check_amount(amount)
    have = balance_of(state, node_id)
    if have < amount:
        raise ContractError(f"amount: insufficient balance of {node_id!r} ({have} < {amount})")
    _set_balance(state, node_id, have - amount)


def transfer(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """token.transfer {to, amount}: move own tokens to another member."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("to", "amount"))
    sender = identity.require_member(state, tx)
    to = identity.check_node_id(str_field(payload, "to", 32), "to")
    amount = int_field(payload, "amount", 1, MAX_AMOUNT)
    if not identity.id_registered(state, to):
        raise ContractError(f"to: {to!r} is not registered")
    if to == sender:
        raise ContractError("to: cannot transfer to yourself")
    debit(state, sender, amount)
    credit(state, to, amount)
    return [Event(NAME, "transfer", {"from": sender, "to": to, "amount": amount})]


class TokenApi:
    """The token contract's internal API for other contracts."""

    credit = staticmethod(credit)
    debit = staticmethod(debit)
    balance_of = staticmethod(balance_of)


METHODS: dict[str, Method] = {"transfer": transfer}
API = TokenApi()
