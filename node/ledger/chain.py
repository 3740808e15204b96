"""The chain: validate a block completely, then append it atomically; replay to verify.

How it works
------------
A `Chain` wraps one node's `ChainStore` and the contract `Registry`. Height 0 is the
genesis block, derived deterministically from the run's `ChainConfig` (members, initial
balances, and the chain's finality rule, `node.core.finality`), so every replica starts
from the same state root. `validate(block)` checks, in order: the height follows the head,
the previous hash is the head's hash, the timestamp does not go back, the size limits, the
Merkle root of the transaction hashes, every transaction's form and signature, the commit
certificate (the chain's finality rule: the writer's signature, or a committee's quorum of
signatures over the block hash), then re-executes every transaction on a copy of the state
(only registered senders, nonces above the sender's last one) and compares the state root.
Any failure raises `LedgerError` with a reason from `REASONS` and the height; nothing is
written. `append` stores the block, its transactions and the state changes in one SQLite
transaction (or, on a store with deferred writes, hands them to its writer thread: head,
height, state and the store's reads change at once, durability follows).
Every append above genesis also records when the block was proposed (its timestamp),
received (the caller's `received_ms`, else when `append` was called), validated and stored,
and takes at least the store's emulated storage time (`node.ledger.storage_time`).
`verify_store` replays a stored chain from genesis the same way
and also checks what the store keeps besides the block bytes against the replay: each
``blocks.hash`` column, the ``head_hash`` metadata and the state table.

The single-writer set-up (vanilla scheme) has `SingleWriter(publisher)`; with PBFT the
chain's rule is `Committee.bft(members)` (quorum 2f+1) over the nodes that order it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from node.contracts.runtime import (
    BlockContext,
    Genesis,
    Receipt,
    Registry,
    TxRejected,
    default_registry,
    genesis_state,
)
from node.contracts.state import State
from node.core.block import (
    MAX_BLOCK_TXS,
    Block,
    BlockError,
    BlockHeader,
    CommitSignature,
    genesis_header,
)
from node.core.encoding import EncodingError, canonical, decode_canonical
from node.core.finality import (
    Committee,
    Finality,
    FinalityError,
    SingleWriter,
    finality_from_dict,
)
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.keys import NodeKey
from node.ledger.store import HEAD_HASH_KEY, ChainStore, write_template

log = logging.getLogger(__name__)

MAX_BUILT = 8  # post-states of blocks built here, kept for their append

REASONS = (
    "malformed",
    "oversize",
    "bad_height",
    "bad_prev_hash",
    "bad_timestamp",
    "bad_merkle_root",
    "bad_signature",
    "bad_certificate",
    "unknown_sender",
    "bad_nonce",
    "unknown_contract",
    "bad_state_root",
    "bad_genesis",
    "state_mismatch",
    "bad_stored_hash",
    "bad_head_hash",
)
CONFIG_META_KEY = "chain_config"


class LedgerError(Exception):
    """A block is refused; `reason` is one of REASONS, `height` the block's height."""

    def __init__(self, reason: str, height: int, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"height {height}: {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason
        self.height = height
        self.detail = detail


@dataclass(frozen=True)
class ChainConfig:
    """What every replica of one chain agrees on before block 1: its genesis and its
    finality rule (`node.core.finality`)."""

    genesis: Genesis
    finality: Finality

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"genesis": self.genesis.to_dict(), "finality": self.finality.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainConfig:
        """Inverse of `to_dict`; also reads the form before finality rules (``validators``
        and ``quorum`` instead of ``finality``: the stores of earlier runs)."""
        genesis = Genesis.from_dict(d["genesis"])
        if "finality" in d and ("validators" in d or "quorum" in d):
            raise ValueError("chain config: give finality or validators/quorum, not both")
        if "finality" in d:
            return cls(genesis, finality_from_dict(d["finality"]))
        validators = tuple(bytes.fromhex(v) for v in d["validators"])
        return cls(genesis, legacy_finality(validators, int(d["quorum"])))

    # Computed once per config object (a fork server computes them before forking, so that
    # its node daemons share them instead of each building every member's genesis rows).

    @cached_property
    def encoded(self) -> bytes:
        """The canonical encoding of `to_dict()` (what a store keeps to recognise its chain)."""
        return canonical(self.to_dict())

    @cached_property
    def genesis_block(self) -> tuple[Block, State, dict[tuple[str, str], bytes | None]]:
        """The genesis block, its state (frozen: shared read-only; `copy()` to change it)
        and the state's rows as writes for an empty store."""
        block, state = _genesis_block(self)
        return block, state.freeze(), state.diff(State())


@dataclass
class VerifyReport:
    """The outcome of replaying a stored chain."""

    height: int
    head_hash: bytes
    tx_count: int
    failures: list[LedgerError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every block verified."""
        return not self.failures


def _validate(
    config: ChainConfig,
    registry: Registry,
    state: State,
    prev: BlockHeader,
    block: Block,
    executed: tuple[State, list[Receipt]] | None = None,
) -> tuple[State, list[Receipt]]:
    """Check `block` as the successor of `prev` on `state`; returns the new state and receipts.
    `executed`: the post-state and receipts of executing exactly this block's transactions
    on exactly `state` (this node built the block): every other check is made, the
    execution is not repeated."""
    h = block.header
    height = h.height
    if height != prev.height + 1:
        raise LedgerError("bad_height", height, f"expected {prev.height + 1}")
    if h.prev_hash != prev.hash:
        raise LedgerError("bad_prev_hash", height, f"expected {prev.hash.hex()[:16]}")
    if h.timestamp_ms < prev.timestamp_ms:
        raise LedgerError("bad_timestamp", height, "earlier than the previous block")
    if len(block.txs) > MAX_BLOCK_TXS:
        raise LedgerError("oversize", height, f"{len(block.txs)} transactions")
    if merkle_root([tx.hash for tx in block.txs]) != h.merkle_root:
        raise LedgerError("bad_merkle_root", height)
    for tx in block.txs:
        try:
            tx.verify()
        except TxError as exc:
            raise LedgerError(
                exc.reason if exc.reason in REASONS else "malformed", height, exc.detail
            ) from None
    _check_certificate(config, block)
    if executed is not None:
        new_state, receipts = executed
    else:
        new_state = state.copy()
        ctx = BlockContext(height=height, timestamp_ms=h.timestamp_ms, proposer=h.proposer)
        try:
            receipts = registry.execute_block(new_state, ctx, block.txs)
        except TxRejected as exc:
            raise LedgerError(exc.reason, height, str(exc)) from None
    root = new_state.root()
    if root != h.state_root:
        raise LedgerError(
            "bad_state_root",
            height,
            f"computed {root.hex()[:16]}, block says {h.state_root.hex()[:16]}",
        )
    return new_state, receipts


def _check_certificate(config: ChainConfig, block: Block) -> None:
    try:
        config.finality.check(block)
    except FinalityError as exc:
        raise LedgerError("bad_certificate", block.height, exc.detail) from None


def legacy_finality(validators: tuple[bytes, ...], quorum: int) -> Finality:
    """The rule the form before finality rules meant: one validator with quorum 1 is a
    single writer, anything else a committee."""
    if len(validators) == 1 and quorum == 1:
        return SingleWriter(validators[0])
    return Committee(validators, quorum)


def _same_config(stored: bytes | None, encoded: bytes) -> bool:
    """True if a store's config bytes are `encoded`, or an earlier form of the same config."""
    if stored == encoded:
        return True
    if stored is None:
        return False
    try:
        return ChainConfig.from_dict(decode_canonical(stored)).encoded == encoded
    except (EncodingError, KeyError, TypeError, ValueError):
        return False


def _genesis_block(config: ChainConfig) -> tuple[Block, State]:
    state = genesis_state(config.genesis)
    return Block(genesis_header(state.root()), (), ()), state


class Chain:
    """One node's replica of a chain: validated appends on top of a `ChainStore`."""

    def __init__(
        self, store: ChainStore, config: ChainConfig, registry: Registry | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.registry = registry or default_registry()
        # blocks this replica built, by hash: (parent state, post-state, receipts)
        self._built: dict[bytes, tuple[State, State, list[Receipt]]] = {}
        self._subscribers: list[Callable[[Block], None]] = []
        encoded = config.encoded
        if store.height() < 0:
            genesis, state, writes = config.genesis_block
            store.meta_set(CONFIG_META_KEY, encoded)
            store.append(genesis, writes)
            # What was just written: the config's frozen genesis state, shared by every chain
            # of this config (every block's state is a copy; this one is never written).
            self.state = state
        elif not _same_config(store.meta_get(CONFIG_META_KEY), encoded):
            raise ValueError("this store holds a different chain (its chain config differs)")
        elif (
            store.from_template
            and store.height() == 0
            and store.meta_get(HEAD_HASH_KEY) == config.genesis_block[0].hash
        ):
            self.state = config.genesis_block[1]  # a copy of `write_genesis_template`'s file
        else:
            self.state = State.from_rows(store.state_rows())
        head = store.head()
        assert head is not None
        self.head: BlockHeader = head.header

    @classmethod
    def open(cls, store: ChainStore, registry: Registry | None = None) -> Chain:
        """A chain whose config is read from the store itself."""
        raw = store.meta_get(CONFIG_META_KEY)
        if raw is None:
            raise ValueError("this store has no chain config (not a bcfl ledger?)")
        return cls(store, ChainConfig.from_dict(decode_canonical(raw)), registry)

    @property
    def height(self) -> int:
        """Height of the head block."""
        return self.head.height

    def build(self, txs: Sequence[Transaction], proposer: NodeKey, timestamp_ms: int) -> Block:
        """A block of `txs` on top of the head, with roots computed and signed by `proposer`
        (the single-writer certificate)."""
        block = self.candidate(txs, proposer.public_key, timestamp_ms)
        return block.with_certificate((CommitSignature.create(proposer, block.hash),))

    def candidate(self, txs: Sequence[Transaction], proposer: bytes, timestamp_ms: int) -> Block:
        """An uncertified block of `txs` on top of the head (what consensus decides on).

        Transactions the contracts reject outright (unknown sender, stale nonce) are left
        out; calls that revert stay in (their receipts say so). Deterministic: replicas at
        the same head given the same arguments build the same block.
        """
        return self.candidate_on(self.head, self.state, txs, proposer, timestamp_ms)[0]

    def candidate_on(
        self,
        parent: BlockHeader,
        parent_state: State,
        txs: Sequence[Transaction],
        proposer: bytes,
        timestamp_ms: int,
    ) -> tuple[Block, State]:
        """Like `candidate`, on top of `parent` with its post-state `parent_state` (a block
        not yet committed: pipelined proposals); also returns the block's post-state."""
        state = parent_state.copy()
        ctx = BlockContext(parent.height + 1, max(timestamp_ms, parent.timestamp_ms), proposer)
        kept = []
        receipts = []
        for tx in txs:
            try:  # a rejected transaction writes nothing (the registry checks before writing)
                receipts.append(self.registry.execute(state, ctx, tx))
            except TxRejected as exc:
                log.warning("left out transaction %s: %s", tx.hash.hex()[:16], exc)
                continue
            kept.append(tx)
        header = BlockHeader(
            height=ctx.height,
            prev_hash=parent.hash,
            timestamp_ms=ctx.timestamp_ms,
            proposer=proposer,
            merkle_root=merkle_root([tx.hash for tx in kept]),
            state_root=state.root(),
        )
        block = Block(header, tuple(kept), ())
        # appending this block on `parent_state` (checked by identity) takes `state` as it is
        # instead of executing the same transactions again
        while len(self._built) >= MAX_BUILT:
            del self._built[next(iter(self._built))]
        self._built[block.hash] = (parent_state, state, receipts)
        return block, state

    def validate(self, block: Block) -> tuple[State, list[Receipt]]:
        """Check `block` as the next block; raises LedgerError. A block this replica built
        on the current state (`candidate_on`, same hash: same header, hence the same
        transactions and state root) is checked completely except that its transactions
        are not executed again: the post-state from building it is taken."""
        built = self._built.get(block.hash)
        executed = None
        if built is not None and built[0] is self.state:
            executed = (built[1], list(built[2]))
        return _validate(self.config, self.registry, self.state, self.head, block, executed)

    def append(self, block: Block, received_ms: float | None = None) -> list[Receipt]:
        """Validate and store `block` atomically; raises LedgerError and writes nothing then.
        `received_ms`: when this node received the block (wall-clock ms, recorded with it;
        None: now)."""
        if received_ms is None:
            received_ms = self.store.clock.wall_ms()
        new_state, receipts = self.validate(block)
        self.store.append(block, new_state.diff(self.state), received_ms=received_ms)
        self.state = new_state
        self.head = block.header
        # what was built on an earlier state can no longer be appended as built
        self._built = {h: b for h, b in self._built.items() if b[0] is new_state}
        for callback in self._subscribers:
            callback(block)
        return receipts

    def subscribe(self, callback: Callable[[Block], None]) -> None:
        """Call `callback(block)` after each block appended from now on (own or synced)."""
        self._subscribers.append(callback)

    def append_bytes(self, data: bytes, received_ms: float | None = None) -> list[Receipt]:
        """Parse and append a block received from a peer (at `received_ms`, wall-clock ms;
        None: now)."""
        if received_ms is None:
            received_ms = self.store.clock.wall_ms()
        try:
            block = Block.from_bytes(data)
        except BlockError as exc:
            raise LedgerError(
                exc.reason if exc.reason in REASONS else "malformed", self.height + 1, exc.detail
            ) from None
        return self.append(block, received_ms)


def write_genesis_template(path: Path, config: ChainConfig) -> None:
    """Write a store holding only `config`'s genesis at `path` (atomically), for every node
    of a run to start its store from (`open_store(..., template=path)`): a copied file
    instead of each node writing every member's genesis rows (at 1,000 devices ~2 MB of
    private memory per daemon, measured by bench/daemon_memory.py)."""
    write_template(path, lambda store: Chain(store, config).store.flush())


def verify_store(store: ChainStore, registry: Registry | None = None) -> VerifyReport:
    """Replay every stored block from genesis; report the first failure (with its height)."""
    registry = registry or default_registry()
    raw_config = store.meta_get(CONFIG_META_KEY)
    report = VerifyReport(height=-1, head_hash=b"", tx_count=0)
    if raw_config is None:
        report.failures.append(LedgerError("bad_genesis", 0, "no chain config in the store"))
        return report
    try:
        config = ChainConfig.from_dict(decode_canonical(raw_config))
    except (EncodingError, KeyError, TypeError, ValueError) as exc:
        report.failures.append(LedgerError("bad_genesis", 0, f"unreadable chain config: {exc}"))
        return report
    expected_genesis, state = _genesis_block(config)
    prev: BlockHeader | None = None
    for height in range(store.height() + 1):
        raw = store.block_bytes(height)
        try:
            if raw is None:
                raise LedgerError("malformed", height, "block missing from the store")
            try:
                block = Block.from_bytes(raw)
            except BlockError as exc:
                raise LedgerError("malformed", height, exc.detail) from None
            if block.height != height:
                raise LedgerError("bad_height", height, f"stored block says {block.height}")
            stored = store.stored_hash(height)
            if stored != block.hash:
                raise LedgerError(
                    "bad_stored_hash",
                    height,
                    f"blocks.hash is {stored.hex()[:16] if stored else 'empty'}, "
                    f"the block hashes to {block.hash.hex()[:16]}",
                )
            if prev is None:
                if block.to_bytes() != expected_genesis.to_bytes():
                    raise LedgerError("bad_genesis", 0, "genesis block differs from the config")
            else:
                state, _ = _validate(config, registry, state, prev, block)
        except LedgerError as exc:
            report.failures.append(exc)
            return report
        prev = block.header
        report.height = height
        report.head_hash = block.hash
        report.tx_count += len(block.txs)
    head = store.meta_get(HEAD_HASH_KEY)
    if report.height >= 0 and head != report.head_hash:
        report.failures.append(
            LedgerError(
                "bad_head_hash",
                report.height,
                f"meta head_hash is {head.hex()[:16] if head else 'empty'}, "
                f"the head block hashes to {report.head_hash.hex()[:16]}",
            )
        )
    try:
        stored_root = State.from_rows(store.state_rows()).root()
    except ValueError as exc:
        stored_root = b""
        detail = f"stored state is unreadable: {exc}"
    else:
        detail = "stored state differs from the replay"
    if stored_root != state.root():
        report.failures.append(LedgerError("state_mismatch", report.height, detail))
    return report
