"""The contract runtime: checks a transaction's sender and nonce, then runs its contract call.

`Registry.execute` rejects a tx that may not be in a block (TxRejected: unknown_sender,
bad_nonce, unknown_contract) without touching the state; otherwise it records the nonce
(ns "nonce", key sender hex) and runs the method in a journal level, so a ContractError
reverts everything the call wrote and gives a failed Receipt. A method may itself raise
TxRejected (the BEES election check does): the tx may not be in a block at all, so nothing
it wrote stays, its nonce included, and the exception goes on. `execute_block` runs a
block's txs in order and is all-or-nothing if one is rejected (the block is invalid; a
proposer building a candidate leaves the tx out).

Adding a contract: write node/contracts/<name>.py exporting NAME, METHODS and API, and add
the module to CONTRACTS below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from node.contracts import bees, flchain, gmuc, identity, incentive, reputation, sfl, task, token
from node.contracts.base import BlockContext, Calls, Event, Method, Receipt
from node.contracts.errors import ContractError, TxRejected
from node.contracts.genesis import Genesis, genesis_state
from node.contracts.state import State
from node.core.tx import TYPE_RE, Transaction

__all__ = [
    "CONTRACTS",
    "NS_NONCE",
    "BlockContext",
    "Calls",
    "ContractError",
    "Event",
    "Genesis",
    "Method",
    "Receipt",
    "Registry",
    "TxRejected",
    "default_registry",
    "genesis_state",
    "last_nonce",
]

NS_NONCE = "nonce"
CONTRACTS: tuple[ModuleType, ...] = (
    identity,
    token,
    task,
    flchain,
    gmuc,
    reputation,
    incentive,
    bees,
    sfl,
)


def last_nonce(state: State, sender: bytes) -> int:
    """The last nonce `sender` used (-1 if none)."""
    return int(state.get(NS_NONCE, sender.hex(), -1))


class Registry:
    """Contracts by name, and the deterministic execution of transactions against them."""

    def __init__(self, is_member: Callable[[State, bytes], bool] = identity.is_registered) -> None:
        self._methods: dict[str, dict[str, Method]] = {}
        self._internals: dict[str, object] = {}
        self._is_member = is_member

    def register(
        self, name: str, methods: Mapping[str, Method], internal: object | None = None
    ) -> None:
        """Add contract `name` with its methods and (optionally) its internal API object."""
        if name in self._methods:
            raise ValueError(f"contract {name!r} is already registered")
        probe = [f"{name}.{m}" for m in methods] or [f"{name}.x"]
        bad = [t for t in probe if not TYPE_RE.fullmatch(t)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a valid 'contract.method' name")
        self._methods[name] = dict(methods)
        if internal is not None:
            self._internals[name] = internal

    def names(self) -> list[str]:
        """The registered contract names, sorted."""
        return sorted(self._methods)

    def methods(self, name: str) -> list[str]:
        """The method names of contract `name`, sorted."""
        return sorted(self._methods.get(name, {}))

    def _lookup(self, tx_type: str) -> Method:
        contract, _, method = tx_type.partition(".")
        found = self._methods.get(contract, {}).get(method)
        if found is None:
            raise TxRejected("unknown_contract", f"no method {tx_type!r}")
        return found

    def check(self, state: State, tx: Transaction) -> Method:
        """The method `tx` calls; TxRejected if the tx may not be in a block. Writes nothing."""
        if not self._is_member(state, tx.sender):
            raise TxRejected("unknown_sender", f"key {tx.sender.hex()[:16]} is not registered")
        last = last_nonce(state, tx.sender)
        if tx.nonce <= last:
            raise TxRejected("bad_nonce", f"nonce {tx.nonce} is not above {last}")
        return self._lookup(tx.type)

    def execute(self, state: State, ctx: BlockContext, tx: Transaction) -> Receipt:
        """Run one tx: TxRejected (state untouched), or a Receipt (nonce always recorded)."""
        method = self.check(state, tx)
        state.begin()  # the nonce's level: undone only if the method raises TxRejected
        state.set(NS_NONCE, tx.sender.hex(), tx.nonce)
        state.begin()
        try:
            events = method(state, tx, ctx, Calls(self._internals))
        except ContractError as exc:
            state.rollback()
            state.commit()
            return Receipt(tx.hash, False, (), str(exc))
        except TxRejected:  # the tx may not be in a block: nothing of it stays
            state.rollback()
            state.rollback()
            raise
        except BaseException:  # a bug: the call's writes are undone, its nonce stays
            state.rollback()
            state.commit()
            raise
        state.commit()
        state.commit()
        return Receipt(tx.hash, True, tuple(events))

    def execute_block(
        self, state: State, ctx: BlockContext, txs: Sequence[Transaction]
    ) -> list[Receipt]:
        """Run `txs` in order; if one is rejected, undo the whole block and re-raise."""
        state.begin()
        try:
            receipts = [self.execute(state, ctx, tx) for tx in txs]
        except BaseException:
            state.rollback()
            raise
        state.commit()
        return receipts


def default_registry() -> Registry:
    """A registry with every contract in CONTRACTS (identity, token, task, flchain, gmuc,
    reputation, incentive, bees, sfl)."""
    registry = Registry()
    for module in CONTRACTS:
        registry.register(module.NAME, module.METHODS, module.API)
    return registry
