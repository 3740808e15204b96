"""A node's ledger replica: its chain, its blob store, its sync state, and its nonces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.contracts.runtime import last_nonce
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import FileBlobStore, open_blobs
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import open_store
from node.ledger.sync import ChainSync


class Replica:
    """One chain a node keeps: its store (``ledger.sqlite`` in `store_dir`), its sync state,
    its nonces, and the node's blob store."""

    def __init__(
        self,
        store_dir: Path,
        config: ChainConfig,
        key: NodeKey,
        synchronous: str = "NORMAL",
        deferred: bool = False,
        template: Path | None = None,
        blobs: FileBlobStore | None = None,
        chain_id: str | None = None,
    ) -> None:
        """`template`: a store holding `config`'s genesis (`write_genesis_template`) that a
        new store starts as a copy of. `blobs`: the node's blob store, shared by its chains
        (None: ``store_dir/blobs``, a node with one chain in its own directory). `chain_id`:
        the id the node knows this chain by, put in its sync messages (see `ChainSync`)."""
        self.key = key
        self.chain_id = chain_id
        self.chain = Chain(open_store(store_dir, synchronous, template), config)
        self.chain.store.set_deferred(deferred)
        self.blobs: FileBlobStore = blobs if blobs is not None else open_blobs(store_dir)
        self.sync = ChainSync(self.chain, self.blobs, chain_id=chain_id)
        self._last_nonce = -1

    @property
    def height(self) -> int:
        """Height of this replica's head block."""
        return self.chain.height

    def next_nonce(self) -> int:
        """A nonce above every one this key used, on chain or locally."""
        on_chain = last_nonce(self.chain.state, self.key.public_key)
        self._last_nonce = max(self._last_nonce, on_chain) + 1
        return self._last_nonce

    def transaction(self, type_: str, payload: dict[str, Any]) -> Transaction:
        """A transaction signed by this node with a fresh nonce."""
        return Transaction.create(self.key, type_, self.next_nonce(), payload)

    def flush(self) -> None:
        """Wait until every appended block is in the database (deferred writes)."""
        self.chain.store.flush()

    def close(self) -> None:
        """Write what is pending and close the SQLite store."""
        self.chain.store.close()
