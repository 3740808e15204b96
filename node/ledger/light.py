"""A light replica: follows a chain by its headers and certificates, without its state.

How it works
------------
A node that does not order blocks need not re-execute every transaction to know the chain:
the chain's finality rule (`node.core.finality`) says when a block is final, and the header
commits to everything else (the previous block by ``prev_hash``, the transactions by
``merkle_root``, the state by ``state_root``). A `LightChain` accepts a block when

1. its header follows the head (`verify_header`: height + 1, ``prev_hash`` is the head's
   hash, the timestamp does not go back),
2. its certificate satisfies the chain's finality rule (``Finality.check``), and
3. the Merkle root of its transactions' hashes is the header's ``merkle_root``;

transaction signatures are not checked one by one and nothing is executed (the certified
header vouches for them: whoever signed the certificate validated the block). The block is
then stored as received in a `ChainStore` (SQLite, one transaction per block: kill -9 safe
like a full replica's store) with no state rows; the store's ``meta`` says
``light_replica`` so that nothing takes it for a full replica, and `verify_light_store`
replays such a store's header chain from its genesis. Keeping the block bytes (a few KB a
round) lets a light replica answer its peers' catch-up requests (they validate completely)
and prove that a transaction is in block h (`LightChain.inclusion`, `verify_inclusion`).

A light replica knows no balances or nonces; it remembers the highest nonce its own key
used in a stored block (scanned from the store when opened), which is what a node needs to
sign its next transaction.

API for other chains' users (e.g. a cross-chain check of another chain's certificate):
`verify_header(prev, header, certificate, finality)` checks one link, `follow(start,
links, finality)` a run of them; `merkle_proof`/`verify_inclusion` prove a transaction's
membership against a header's ``merkle_root``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from node.contracts.runtime import Receipt, Registry
from node.contracts.state import State
from node.core.block import Block, BlockError, BlockHeader, CommitSignature
from node.core.encoding import EncodingError, decode_canonical
from node.core.finality import Finality, FinalityError
from node.core.merkle import leaf_hash, node_hash
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.chain import (
    CONFIG_META_KEY,
    Chain,
    ChainConfig,
    LedgerError,
    VerifyReport,
    _same_config,
    verify_store,
)
from node.ledger.store import HEAD_HASH_KEY, ChainStore

log = logging.getLogger(__name__)

LIGHT_META_KEY = "light_replica"

__all__ = [
    "LIGHT_META_KEY",
    "Inclusion",
    "LightChain",
    "follow",
    "is_light_store",
    "merkle_proof",
    "verify_header",
    "verify_inclusion",
    "verify_light_store",
    "verify_replica_store",
]


def verify_header(
    prev: BlockHeader,
    header: BlockHeader,
    certificate: Sequence[CommitSignature],
    finality: Finality,
) -> None:
    """Check that `header` follows `prev` and that `certificate` makes it final under
    `finality`; raises LedgerError (bad_height, bad_prev_hash, bad_timestamp,
    bad_certificate)."""
    height = header.height
    if height != prev.height + 1:
        raise LedgerError("bad_height", height, f"expected {prev.height + 1}")
    if header.prev_hash != prev.hash:
        raise LedgerError("bad_prev_hash", height, f"expected {prev.hash.hex()[:16]}")
    if header.timestamp_ms < prev.timestamp_ms:
        raise LedgerError("bad_timestamp", height, "earlier than the previous block")
    try:  # a finality rule looks at the header's hash and the certificate only
        finality.check(Block(header, (), tuple(certificate)))
    except FinalityError as exc:
        raise LedgerError("bad_certificate", height, exc.detail) from None


def follow(
    start: BlockHeader,
    links: Iterable[tuple[BlockHeader, Sequence[CommitSignature]]],
    finality: Finality,
) -> BlockHeader:
    """The last header of `links` (header, certificate pairs in height order) after checking
    each with `verify_header` from the trusted header `start`; raises LedgerError at the
    first that does not follow."""
    head = start
    for header, certificate in links:
        verify_header(head, header, certificate, finality)
        head = header
    return head


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[tuple[bool, bytes]]:
    """The audit path of ``leaves[index]`` under `merkle_root` (`node.core.merkle`): per level
    (sibling_is_left, sibling hash), a level where the node is promoted unpaired omitted."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of {len(leaves)}")
    level = [leaf_hash(leaf) for leaf in leaves]
    path: list[tuple[bool, bytes]] = []
    i = index
    while len(level) > 1:
        if i % 2 == 1:
            path.append((True, level[i - 1]))
        elif i + 1 < len(level):
            path.append((False, level[i + 1]))
        paired = [node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
        i //= 2
    return path


def verify_inclusion(leaf: bytes, proof: Sequence[tuple[bool, bytes]], root: bytes) -> bool:
    """True if `proof` (`merkle_proof`) leads from `leaf` to `root`."""
    h = leaf_hash(leaf)
    for sibling_is_left, sibling in proof:
        h = node_hash(sibling, h) if sibling_is_left else node_hash(h, sibling)
    return h == root


@dataclass(frozen=True)
class Inclusion:
    """Where a transaction is: block `height`'s `header`, position `index`, and the Merkle
    `proof` from the transaction's hash to ``header.merkle_root``."""

    tx_hash: bytes
    height: int
    index: int
    header: BlockHeader
    proof: tuple[tuple[bool, bytes], ...]

    def verify(self) -> bool:
        """True if the proof leads from the transaction hash to the header's Merkle root."""
        return verify_inclusion(self.tx_hash, self.proof, self.header.merkle_root)


def is_light_store(store: ChainStore) -> bool:
    """True if `store` holds a light replica (`LightChain`)."""
    return store.meta_get(LIGHT_META_KEY) is not None


class LightChain(Chain):
    """One node's light replica of a chain: certified headers (and the blocks as received)
    on top of a `ChainStore`, without state. A `Chain` where a node keeps one (its replica's
    `chain`): `head`, `height`, `store`, `config`, `append`, `append_bytes` and `subscribe`
    work as on a full one; what needs the state (`state`, `validate`, building blocks)
    raises RuntimeError saying the replica is light (`check` is its validation)."""

    def __init__(
        self, store: ChainStore, config: ChainConfig, own_key: bytes | None = None
    ) -> None:
        """`own_key`: the node's public key, whose highest stored nonce `last_nonce` gives."""
        # Chain.__init__ is not called: it would load (or write) the genesis state
        self.store = store
        self.config = config
        self.own_key = own_key
        self._subscribers: list[Callable[[Block], None]] = []
        encoded = config.encoded
        if store.height() < 0:
            store.meta_set(CONFIG_META_KEY, encoded)
            store.meta_set(LIGHT_META_KEY, b"1")
            store.append(config.genesis_block[0], {})
        elif not _same_config(store.meta_get(CONFIG_META_KEY), encoded):
            raise ValueError("this store holds a different chain (its chain config differs)")
        elif not is_light_store(store):
            raise ValueError("this store holds a full replica, not a light one")
        head = store.head()
        assert head is not None
        self.head: BlockHeader = head.header
        self._own_nonce = -1
        if own_key is not None:
            for block in store.blocks(1):
                self._note_own(block)

    # What a full Chain has and a light replica cannot: each raises RuntimeError.

    @classmethod
    def open(cls, store: ChainStore, registry: Registry | None = None) -> LightChain:
        """A light chain whose config is read from the store itself (`registry`: unused)."""
        raw = store.meta_get(CONFIG_META_KEY)
        if raw is None:
            raise ValueError("this store has no chain config (not a bcfl ledger?)")
        return cls(store, ChainConfig.from_dict(decode_canonical(raw)))

    @property
    def state(self) -> State:
        """A light replica keeps no state: RuntimeError."""
        raise RuntimeError(self._no("state"))

    @state.setter
    def state(self, value: State) -> None:
        raise RuntimeError(self._no("state"))

    def validate(self, block: Block) -> tuple[State, list[Receipt]]:
        """A full validation needs the state: RuntimeError (see `check`)."""
        raise RuntimeError(self._no("state to validate against (LightChain.check)"))

    def candidate(self, txs: Sequence[Transaction], proposer: bytes, timestamp_ms: int) -> Block:
        """A light replica builds no blocks: RuntimeError."""
        raise RuntimeError(self._no("block building"))

    def build(self, txs: Sequence[Transaction], proposer: NodeKey, timestamp_ms: int) -> Block:
        """A light replica builds no blocks (it cannot compute a state root): RuntimeError."""
        raise RuntimeError(self._no("block building"))

    def candidate_on(
        self,
        parent: BlockHeader,
        parent_state: State,
        txs: Sequence[Transaction],
        proposer: bytes,
        timestamp_ms: int,
    ) -> tuple[Block, State]:
        """A light replica builds no blocks: RuntimeError."""
        raise RuntimeError(self._no("block building"))

    def _no(self, what: str) -> str:
        return (
            f"this node keeps the chain as a light replica (ledger.device_replica: light): "
            f"no {what}"
        )

    def last_nonce(self) -> int:
        """The highest nonce of the node's own transactions in stored blocks (-1: none)."""
        return self._own_nonce

    def _note_own(self, block: Block) -> None:
        for tx in block.txs:
            if tx.sender == self.own_key and tx.nonce > self._own_nonce:
                self._own_nonce = tx.nonce

    def check(self, block: Block) -> None:
        """Check `block` as the next block (header link, certificate, Merkle root); raises
        LedgerError."""
        verify_header(self.head, block.header, block.certificate, self.config.finality)
        if block.computed_merkle_root() != block.header.merkle_root:
            raise LedgerError("bad_merkle_root", block.height)

    def append(self, block: Block, received_ms: float | None = None) -> list[Receipt]:
        """Check and store `block` (no receipts: nothing is executed); raises LedgerError
        and writes nothing then. `received_ms`: when this node received the block (as in
        `Chain.append`)."""
        self.check(block)
        self.store.append(block, {}, received_ms=received_ms)
        self.head = block.header
        if self.own_key is not None:
            self._note_own(block)
        for callback in self._subscribers:
            callback(block)
        return []

    def inclusion(self, tx_hash: bytes) -> Inclusion | None:
        """Where transaction `tx_hash` is on this chain, with its Merkle proof (None: not in
        a stored block)."""
        where = self.store.tx_location(tx_hash)
        if where is None:
            return None
        height, index = where
        block = self.store.block(height)
        if block is None:
            return None
        proof = merkle_proof([tx.hash for tx in block.txs], index)
        return Inclusion(tx_hash, height, index, block.header, tuple(proof))


def verify_light_store(store: ChainStore) -> VerifyReport:
    """Replay a light store's header chain from its genesis: each stored block's hash, height,
    header link, certificate and Merkle root, and the head hash; report the first failure."""
    report = VerifyReport(height=-1, head_hash=b"", tx_count=0)
    raw_config = store.meta_get(CONFIG_META_KEY)
    if raw_config is None:
        report.failures.append(LedgerError("bad_genesis", 0, "no chain config in the store"))
        return report
    try:
        config = ChainConfig.from_dict(decode_canonical(raw_config))
    except (EncodingError, KeyError, TypeError, ValueError) as exc:
        report.failures.append(LedgerError("bad_genesis", 0, f"unreadable chain config: {exc}"))
        return report
    expected_genesis = config.genesis_block[0]
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
            if store.stored_hash(height) != block.hash:
                raise LedgerError("bad_stored_hash", height, "blocks.hash differs from the block")
            if prev is None:
                if block.to_bytes() != expected_genesis.to_bytes():
                    raise LedgerError("bad_genesis", 0, "genesis block differs from the config")
            else:
                verify_header(prev, block.header, block.certificate, config.finality)
                if block.computed_merkle_root() != block.header.merkle_root:
                    raise LedgerError("bad_merkle_root", height)
        except LedgerError as exc:
            report.failures.append(exc)
            return report
        prev = block.header
        report.height = height
        report.head_hash = block.hash
        report.tx_count += len(block.txs)
    if report.height >= 0 and store.meta_get(HEAD_HASH_KEY) != report.head_hash:
        report.failures.append(
            LedgerError("bad_head_hash", report.height, "meta head_hash is not the head block's")
        )
    return report


def verify_replica_store(store: ChainStore) -> VerifyReport:
    """`verify_light_store` for a light replica's store, `verify_store` (a full replay with
    the state) for any other."""
    return verify_light_store(store) if is_light_store(store) else verify_store(store)
