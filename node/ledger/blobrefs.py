"""Which blobs a chain references, which of them a node is expected to hold, and a check of
a node's blob store against its chain.

How it works
------------
Blocks carry only blob hashes. The transaction types whose payload fields hold a blob hash
come from one place, the task contract's `BLOB_FIELDS`; `tx_blobs` reads them. A node is
*expected* to hold (a) every blob of a transaction it signed itself (a device its updates,
the publisher its global models) and (b) with `replicated=True`, every blob of the types in
`REPLICATED_BLOB_TYPES` (global models), which every replica fetches after appending a
block. Other referenced blobs (another device's update, held by that device and its MEC)
are not expected: `check_blobs` re-hashes them if present and counts them as *not held*
otherwise. A blob that is present but does not hash to its key is *corrupt*; an expected
blob that is absent is *missing*; both are failures.

`chain verify` checks (a) only: a replica stops at the final height as soon as it holds
the blocks, so a global model's fetch may still be in flight when it exits; such a blob
is reported as not held, not as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from node.contracts.task import BLOB_FIELDS, REPLICATED_BLOB_TYPES
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.ledger.blobs import blob_path
from node.ledger.store import ChainStore, StoreError

HASH_BYTES = 32


def tx_blobs(tx: Transaction, types: tuple[str, ...] | None = None) -> list[bytes]:
    """The blob hashes `tx` references (only for `types`, when given)."""
    if types is not None and tx.type not in types:
        return []
    out = []
    for name in BLOB_FIELDS.get(tx.type, ()):
        value = tx.payload.get(name)
        if isinstance(value, bytes) and len(value) == HASH_BYTES:
            out.append(value)
    return out


@dataclass(frozen=True)
class BlobRef:
    """One blob referenced on chain: its hash, where, and by whom."""

    key: bytes
    height: int
    tx_type: str
    sender: bytes


def chain_blobs(store: ChainStore) -> Iterator[BlobRef]:
    """Every blob reference in the stored chain, in chain order, each hash once (first use)."""
    seen: set[bytes] = set()
    for height in range(1, store.height() + 1):
        try:
            block = store.block(height)
        except StoreError:  # `verify_store` reports the unreadable block
            continue
        if block is None:
            continue
        for tx in block.txs:
            for key in tx_blobs(tx):
                if key not in seen:
                    seen.add(key)
                    yield BlobRef(key, block.height, tx.type, tx.sender)


def expected(ref: BlobRef, node_key: bytes | None, replicated: bool) -> bool:
    """True if a node with `node_key` must hold the blob of `ref` (see the module doc)."""
    return ref.sender == node_key or (replicated and ref.tx_type in REPLICATED_BLOB_TYPES)


@dataclass
class BlobReport:
    """What `check_blobs` found: failures as (hash, height) pairs, and counts."""

    checked: int = 0
    corrupt: list[tuple[bytes, int]] = field(default_factory=list)
    missing: list[tuple[bytes, int]] = field(default_factory=list)
    not_held: int = 0

    @property
    def ok(self) -> bool:
        """True if no blob is corrupt and none the node must hold is missing."""
        return not self.corrupt and not self.missing


def check_blobs(
    store: ChainStore, blob_root: Path, node_key: bytes | None, replicated: bool = False
) -> BlobReport:
    """Re-hash every referenced blob present under `blob_root` (a FileBlobStore's root);
    report corrupt and missing ones.

    Read-only: unlike `FileBlobStore.get`, a corrupt file is reported, not deleted.
    """
    report = BlobReport()
    for ref in chain_blobs(store):
        try:
            data = blob_path(blob_root, ref.key).read_bytes()
        except FileNotFoundError:
            if expected(ref, node_key, replicated):
                report.missing.append((ref.key, ref.height))
            else:
                report.not_held += 1
            continue
        report.checked += 1
        if sha256(data) != ref.key:
            report.corrupt.append((ref.key, ref.height))
    return report
