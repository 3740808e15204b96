"""A node's ledger replica: its chain, its blob store, its sync state, and its nonces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.contracts.runtime import last_nonce
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import FileBlobStore, open_blobs
from node.ledger.chain import Chain, ChainConfig
from node.ledger.light import LightChain
from node.ledger.store import open_store
from node.ledger.sync import DEFAULT_BLOB_TYPES, ChainSync

# A light replica's SQLite page cache (KiB). Its store is written a block a round and read
# back only to answer a peer's catch-up; SQLite's default 2 MiB filled with the blocks of a
# 1,000-device run (~400 KB each) and stayed: 1.2 MiB more per daemon, measured by
# bench/replica_memory.py.
LIGHT_CACHE_KIB = 256


class Replica:
    """One chain a node keeps, fully (`Chain`) or light (`LightChain`): its store
    (``ledger.sqlite`` in `store_dir`), its sync state, its nonces, and the node's blob
    store."""

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
        light: bool = False,
        storage_time_ms: float = 0.0,
    ) -> None:
        """`template`: a store holding `config`'s genesis (`write_genesis_template`) that a
        new store starts as a copy of. `blobs`: the node's blob store, shared by its chains
        (None: ``store_dir/blobs``, a node with one chain in its own directory). `chain_id`:
        the id the node knows this chain by, put in its sync messages (see `ChainSync`).
        `light`: keep the chain as a light replica (`node.ledger.light`: certified headers,
        no state; `template` is not used). `storage_time_ms`: the block storage time t each
        append emulates, full or light (`node.ledger.storage_time`)."""
        self.key = key
        self.chain_id = chain_id
        self.light = light
        # a light replica's LightChain answers what a full Chain does except for state and
        # block building, which raise RuntimeError saying it is light
        store = open_store(
            store_dir,
            synchronous,
            None if light else template,
            storage_time_ms=storage_time_ms,
            cache_kib=LIGHT_CACHE_KIB if light else None,
        )
        self.chain: Chain = (
            LightChain(store, config, key.public_key) if light else Chain(store, config)
        )
        self.chain.store.set_deferred(deferred)
        self.blobs: FileBlobStore = blobs if blobs is not None else open_blobs(store_dir)
        # a light replica holds no replicated blobs (it fetches none; it answers for those
        # its node put itself)
        blob_types = () if light else DEFAULT_BLOB_TYPES
        self.sync = ChainSync(self.chain, self.blobs, blob_types, chain_id=chain_id)
        self._last_nonce = -1

    @property
    def height(self) -> int:
        """Height of this replica's head block."""
        return self.chain.height

    def next_nonce(self) -> int:
        """A nonce above every one this key used, on chain or locally."""
        chain = self.chain
        if isinstance(chain, LightChain):
            on_chain = chain.last_nonce()
        else:
            on_chain = last_nonce(chain.state, self.key.public_key)
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
