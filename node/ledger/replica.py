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
    """Everything ledger-related a node keeps in `nodes/<id>/` (ledger.sqlite, blobs/)."""

    def __init__(
        self,
        node_dir: Path,
        config: ChainConfig,
        key: NodeKey,
        synchronous: str = "NORMAL",
        deferred: bool = False,
        template: Path | None = None,
    ) -> None:
        """`template`: a store holding `config`'s genesis (`write_genesis_template`) that a
        new store starts as a copy of."""
        self.key = key
        self.chain = Chain(open_store(node_dir, synchronous, template), config)
        self.chain.store.set_deferred(deferred)
        self.blobs: FileBlobStore = open_blobs(node_dir)
        self.sync = ChainSync(self.chain, self.blobs)
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
