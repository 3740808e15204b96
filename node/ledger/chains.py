"""The chains a node keeps, by chain id: their replicas, one shared blob store, message routing.

How it works
------------
A node keeps one or more chains (a task chain, a MEC's local chain, a global chain...), each
known by a chain id (``CHAIN_ID_RE``). `ChainSet` maps each id to a `ChainHandle` around the
chain's `Replica`; all of them share the node's one blob store (``nodes/<id>/blobs``), and
each chain's store lives in ``nodes/<id>/chains/<chain id>/ledger.sqlite`` (`chain_dir`).

Routing: a ``chain.*`` message carries its chain id in the ``chain`` field (`CHAIN_FIELD`);
`ChainSet.handle` hands it to that chain's `ChainSync`, and raises `UnknownChain` (the daemon
counts it as a dropped message) for an id the node does not keep, or for a message without
one when the node keeps several chains (with one, such a message is for it). ``blob.get`` is
answered from the shared store; ``blob.data`` goes to every chain waiting for that blob.

A `ChainHandle` is what a role uses for one chain: `submit(txs)` hands transactions to the
chain's committer (an object the role installs per chain with `install`: e.g. a single
writer that builds, appends and sends the block, or a PBFT validator), `append` checks and
stores a block, `subscribe` registers a callback for every block appended to the chain
(synced or own), `head`/`height` read the chain's tip.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from node.contracts.runtime import Receipt
from node.core.block import Block, BlockHeader
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import FileBlobStore, open_blobs
from node.ledger.chain import ChainConfig
from node.ledger.replica import Replica
from node.ledger.sync import CHAIN_FIELD, Outgoing

log = logging.getLogger(__name__)

CHAIN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAIN_CHAIN = "main"  # the id of a node's only chain where nothing names it
CHAINS_DIR = "chains"

__all__ = [
    "CHAIN_ID_RE",
    "MAIN_CHAIN",
    "ChainHandle",
    "ChainSet",
    "Committer",
    "UnknownChain",
    "chain_dir",
    "check_chain_id",
    "open_chains",
]


class UnknownChain(ValueError):
    """A ledger message names a chain this node does not keep (or none, where it keeps several)."""


def check_chain_id(chain_id: object) -> str:
    """`chain_id` if it is a valid chain id; raises ValueError naming the pattern."""
    if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
        raise ValueError(f"chain id {chain_id!r} must match {CHAIN_ID_RE.pattern}")
    return chain_id


def chain_dir(node_dir: Path, chain_id: str) -> Path:
    """The directory of chain `chain_id`'s store inside a node's directory."""
    return Path(node_dir) / CHAINS_DIR / check_chain_id(chain_id)


class Committer(Protocol):
    """Turns submitted transactions into committed blocks of one chain (a single writer,
    a PBFT validator, ...); installed per chain by the node's role (`node.roles.committers`)."""

    def submit(self, txs: Sequence[Transaction]) -> None:
        """Get `txs` into a block of the chain (now or once consensus decides)."""
        ...


class ChainHandle:
    """One chain of a node, as a role uses it."""

    def __init__(self, chain_id: str, replica: Replica) -> None:
        self.chain_id = check_chain_id(chain_id)
        self.replica = replica
        self.committer: Committer | None = None

    def install(self, committer: Committer) -> None:
        """Make `committer` the one `submit` hands transactions to."""
        self.committer = committer

    def submit(self, txs: Sequence[Transaction]) -> None:
        """Hand `txs` to the chain's committer; raises RuntimeError if none is installed."""
        if self.committer is None:
            raise RuntimeError(
                f"chain {self.chain_id!r}: no committer installed (the role installs one "
                "with ctx.chains[chain_id].install(...))"
            )
        self.committer.submit(txs)

    def append(self, data: bytes, received_ms: float | None = None) -> list[Receipt]:
        """Check and store a block given as bytes (that reached this node at `received_ms`,
        wall-clock ms; None: now); raises LedgerError."""
        return self.replica.chain.append_bytes(data, received_ms)

    def append_block(self, block: Block, received_ms: float | None = None) -> list[Receipt]:
        """Check and store `block`; raises LedgerError. `received_ms`: when it reached this
        node (wall-clock ms; None: now), recorded in its timing row."""
        return self.replica.chain.append(block, received_ms)

    def subscribe(self, callback: Callable[[Block], None]) -> None:
        """Call `callback(block)` for each block appended to this chain from now on."""
        self.replica.chain.subscribe(callback)

    def transaction(self, type_: str, payload: dict[str, Any]) -> Transaction:
        """A transaction signed by this node with its next nonce on this chain."""
        return self.replica.transaction(type_, payload)

    @property
    def head(self) -> BlockHeader:
        """The chain's head block header."""
        return self.replica.chain.head

    @property
    def height(self) -> int:
        """The chain's height."""
        return self.replica.height

    @property
    def config(self) -> ChainConfig:
        """The chain's config (genesis, finality)."""
        return self.replica.chain.config


class ChainSet(Mapping[str, ChainHandle]):
    """A node's chains by id, sharing one blob store."""

    def __init__(self, replicas: Mapping[str, Replica], blobs: FileBlobStore | None = None) -> None:
        """`blobs`: the store every replica shares (None: the replicas' own, at most one)."""
        self._handles = {cid: ChainHandle(cid, r) for cid, r in sorted(replicas.items())}
        if blobs is None and len(replicas) > 1:
            raise ValueError("several chains share one blob store: give it")
        for cid, r in replicas.items():
            if blobs is not None and r.blobs is not blobs:
                raise ValueError(f"chain {cid!r} does not use the node's blob store")
        self._blobs = blobs

    @classmethod
    def single(cls, replica: Replica, chain_id: str = MAIN_CHAIN) -> ChainSet:
        """A set holding one chain (a node in its own directory, before several chains)."""
        return cls({chain_id: replica}, replica.blobs)

    @classmethod
    def empty(cls) -> ChainSet:
        """A node without a ledger."""
        return cls({})

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, chain_id: str) -> ChainHandle:
        handle = self._handles.get(chain_id)
        if handle is None:
            raise KeyError(
                f"chain {chain_id!r} is not kept by this node; kept: "
                f"{', '.join(self._handles) or 'none'}"
            )
        return handle

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)

    # -- the node's view -------------------------------------------------------------------
    @property
    def blobs(self) -> FileBlobStore | None:
        """The node's blob store (None: no chains)."""
        return self._blobs

    def only(self) -> ChainHandle:
        """The node's only chain; raises RuntimeError if it keeps none or several."""
        if len(self._handles) != 1:
            kept = ", ".join(self._handles) or "none"
            raise RuntimeError(
                f"this node keeps {len(self._handles)} chains ({kept}), not one: "
                "use ctx.chains[chain_id]"
            )
        return next(iter(self._handles.values()))

    def replicas(self) -> Iterator[tuple[str, Replica]]:
        """(chain id, replica) in chain id order."""
        return ((cid, h.replica) for cid, h in self._handles.items())

    # -- ledger messages -------------------------------------------------------------------
    def route(self, msg_type: str, payload: Mapping[str, Any]) -> ChainHandle:
        """The chain a ``chain.*`` message is for; raises UnknownChain."""
        chain_id = payload.get(CHAIN_FIELD)
        if chain_id is None:
            if len(self._handles) == 1:
                return next(iter(self._handles.values()))
            raise UnknownChain(f"{msg_type} without a chain id; kept: {', '.join(self) or 'none'}")
        handle = self._handles.get(chain_id) if isinstance(chain_id, str) else None
        if handle is None:
            raise UnknownChain(f"{msg_type} for chain {str(chain_id)[:70]!r}, not kept here")
        return handle

    def handle(
        self,
        sender: str,
        msg_type: str,
        payload: dict[str, Any],
        now: float,
        received_ms: float | None = None,
    ) -> list[Outgoing]:
        """Dispatch one ``chain.*`` or ``blob.*`` message that reached the node at
        `received_ms` (wall-clock ms, recorded with the blocks it brings; None: when they
        are appended); raises UnknownChain."""
        if not self._handles:
            raise UnknownChain(f"{msg_type}: this node keeps no chain")
        if msg_type.startswith("chain."):
            sync = self.route(msg_type, payload).replica.sync
            return sync.handle(sender, msg_type, payload, now, received_ms)
        syncs = [h.replica.sync for h in self._handles.values()]
        if msg_type == "blob.data":
            key = payload.get("hash")
            wanting = [s for s in syncs if isinstance(key, bytes) and s.wants_blob(key)]
            out: list[Outgoing] = []
            for sync in wanting or syncs[:1]:  # none wants it: the first counts it unsolicited
                out += sync.handle(sender, msg_type, payload, now)
            return out
        return syncs[0].handle(sender, msg_type, payload, now)  # blob.get: the shared store

    def tick(self, now: float) -> list[Outgoing]:
        """Every chain's sync tick."""
        out: list[Outgoing] = []
        for handle in self._handles.values():
            out += handle.replica.sync.tick(now)
        return out

    def pending_writes(self) -> bool:
        """True if a chain's store has deferred block writes waiting."""
        return any(
            h.replica.chain.store.deferred and h.replica.chain.store.pending_blocks() > 0
            for h in self._handles.values()
        )

    def write_pending(self) -> None:
        """Do every chain's deferred block writes."""
        for handle in self._handles.values():
            store = handle.replica.chain.store
            if store.deferred and store.pending_blocks() > 0:
                store.write_pending()

    def failures(self) -> dict[str, int]:
        """Every chain's refused-message counts, summed by reason."""
        total: dict[str, int] = {}
        for handle in self._handles.values():
            for reason, n in handle.replica.sync.failures.items():
                total[reason] = total.get(reason, 0) + n
        return total

    def flush_blobs(self, timeout_s: float) -> bool:
        """Wait for the blob store's pending fsyncs; False if some were left."""
        return self._blobs is None or self._blobs.flush(timeout_s)

    def close(self) -> None:
        """Close every chain's store (pending writes are written first)."""
        for handle in self._handles.values():
            handle.replica.close()


def open_chains(
    node_dir: Path,
    configs: Mapping[str, ChainConfig],
    key: NodeKey,
    synchronous: str = "NORMAL",
    templates: Mapping[str, Path] | None = None,
    light: Collection[str] = (),
    storage_time_ms: float = 0.0,
) -> ChainSet:
    """Open (or create) the chains a node keeps: chain `cid`'s store in
    ``node_dir/chains/<cid>/`` (a new store starts as a copy of ``templates[cid]`` where
    given: `write_genesis_template`), one blob store in ``node_dir/blobs`` for all. The
    chains in `light` are kept as light replicas (`node.ledger.light`). `storage_time_ms`:
    the block storage time t every chain's appends emulate (`node.ledger.storage_time`)."""
    node_dir = Path(node_dir)
    blobs = open_blobs(node_dir)
    templates = templates or {}
    replicas: dict[str, Replica] = {}
    try:
        for cid, config in configs.items():
            replicas[cid] = Replica(
                chain_dir(node_dir, cid),
                config,
                key,
                synchronous,
                template=templates.get(cid),
                blobs=blobs,
                chain_id=cid,
                light=cid in light,
                storage_time_ms=storage_time_ms,
            )
    except BaseException:
        for replica in replicas.values():
            replica.close()
        raise
    return ChainSet(replicas, blobs)
