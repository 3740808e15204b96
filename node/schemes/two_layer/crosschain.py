"""Cross-chain checks of the two-layer scheme: a MEC takes another MEC's LMUC block as a light
client (header, certificate and transactions checked against that LMUC's finality rule, with
no copy of that chain), and the round's updates from every LMUC block in one canonical order.

How it works
------------
A relayed block is accepted when it decodes, its transactions match its Merkle root, and its
certificate satisfies the LMUC's `Committee` (quorum of valid commit signatures by the MEC
and its full devices: `Finality.check`). Its ``task.record_update`` transactions of the
task's current round are the round's updates from that LMUC; each must be signed by a
device member of that LMUC (its genesis). All this is checked (`checked_block`) before any
blob is fetched; then each update needs the blob its payload names (hash and size:
`block_updates`), which the MEC fetches on demand (`node.ledger.sync.ChainSync.fetch_blob`).
The MEC cannot alter an update once it is certified: the block hash, and so
every commit signature, covers each transaction, and each transaction its blob's hash.
We do not check the block's parent (the receiver keeps no copy of that LMUC): a certified
block of an older round carries no update of this round, and a certificate cannot be made
without a quorum of that LMUC's committee.

Canonical order: LMUC chain ids sorted, then each block's transaction order, so every
honest MEC aggregates the same updates in the same order and gets the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.core.block import Block, BlockError
from node.core.encoding import sha256
from node.core.finality import Finality, FinalityError
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.learning.aggregators import Update
from node.learning.weights import Weights, weights_from_bytes
from node.roles.learner import check_update

UPDATE_TX = "task.record_update"
HASH_BYTES = 32


@dataclass(frozen=True)
class LmucUpdate:
    """One device update taken from a certified LMUC block."""

    device: str
    tx: Transaction
    blob: bytes

    @property
    def samples(self) -> int:
        """The sample count the device signed."""
        return int(self.tx.payload["samples"])


def needed_blobs(data: bytes, task_id: str, round_no: int) -> set[bytes]:
    """The blob hashes the update transactions of `round_no` in block `data` name (nothing is
    verified here; `round_updates` does); ValueError for a malformed block."""
    try:
        block = Block.from_bytes(data)
    except BlockError as exc:
        raise ValueError(f"malformed block: {exc}") from None
    out: set[bytes] = set()
    for tx in block.txs:
        p = tx.payload
        if tx.type != UPDATE_TX or p.get("task_id") != task_id or p.get("round") != round_no:
            continue
        if isinstance(p.get("blob"), bytes):
            out.add(p["blob"])
    return out


def checked_block(
    data: bytes,
    finality: Finality,
    devices: Mapping[bytes, str],
    task_id: str,
    round_no: int,
) -> tuple[Block, dict[bytes, int]]:
    """The certified block `data`, checked as a light client before any blob is fetched
    (decoding, Merkle root, certificate, and each update of `round_no`: signature, signer a
    device of that LMUC, sample count), and the blobs its updates name (hash -> size);
    ValueError naming what is wrong. `devices`: public key -> device id of the LMUC."""
    try:
        block = Block.from_bytes(data)
    except BlockError as exc:
        raise ValueError(f"malformed block: {exc}") from None
    if merkle_root([tx.hash for tx in block.txs]) != block.header.merkle_root:
        raise ValueError("transactions do not match the block's Merkle root")
    try:
        finality.check(block)
    except FinalityError as exc:
        raise ValueError(f"certificate: {exc.detail}") from None
    needed: dict[bytes, int] = {}
    for tx in _round_txs(block, task_id, round_no):
        p = tx.payload
        try:
            tx.verify()
        except TxError as exc:
            raise ValueError(f"transaction {tx.hash.hex()[:16]}: {exc}") from None
        device = devices.get(tx.sender)
        if device is None:
            raise ValueError(f"update {tx.hash.hex()[:16]} not signed by a device of the LMUC")
        blob, size = p.get("blob"), p.get("size")
        if not isinstance(blob, bytes) or len(blob) != HASH_BYTES:
            raise ValueError(f"{device}'s update names no blob hash")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"{device}'s update has no blob size")
        samples = p.get("samples")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples <= 0:
            raise ValueError(f"{device}'s update has no sample count")
        needed[blob] = size
    return block, needed


def _round_txs(block: Block, task_id: str, round_no: int) -> list[Transaction]:
    return [
        tx
        for tx in block.txs
        if tx.type == UPDATE_TX
        and tx.payload.get("task_id") == task_id
        and tx.payload.get("round") == round_no
    ]


def block_updates(
    block: Block,
    blobs: Mapping[bytes, bytes],
    devices: Mapping[bytes, str],
    task_id: str,
    round_no: int,
) -> list[LmucUpdate]:
    """The updates of `round_no` of a block `checked_block` accepted, in block order, each
    with its blob from `blobs` (hash -> bytes; each checked against its hash and size);
    ValueError if one is missing."""
    out: list[LmucUpdate] = []
    for tx in _round_txs(block, task_id, round_no):
        key = tx.payload["blob"]
        blob = blobs.get(key)
        device = devices[tx.sender]
        if blob is None or len(blob) != tx.payload["size"] or sha256(blob) != key:
            raise ValueError(f"the blob of {device}'s update is missing or of another size")
        out.append(LmucUpdate(device, tx, blob))
    return out


def round_updates(
    data: bytes,
    blobs: Sequence[bytes],
    finality: Finality,
    devices: Mapping[bytes, str],
    task_id: str,
    round_no: int,
) -> tuple[Block, list[LmucUpdate]]:
    """The certified block `data` and its updates of `round_no` (in block order): the checks
    of `checked_block`, then `block_updates`; `blobs`: matched to the updates by hash."""
    block, _ = checked_block(data, finality, devices, task_id, round_no)
    by_hash = {sha256(b): b for b in blobs}
    return block, block_updates(block, by_hash, devices, task_id, round_no)


def canonical_updates(
    by_chain: Mapping[str, Sequence[LmucUpdate]], reference: Weights
) -> tuple[list[Update], list[str]]:
    """The aggregator's updates from every LMUC's round updates (chain ids sorted, block order
    within), and the devices whose blob does not decode to the model's shapes (left out)."""
    updates: list[Update] = []
    bad: list[str] = []
    for chain_id in sorted(by_chain):
        for item in by_chain[chain_id]:
            try:
                weights = check_update(reference, weights_from_bytes(item.blob))
            except ValueError:
                bad.append(item.device)
                continue
            updates.append(Update(weights, item.samples, None, item.device))
    return updates, bad
