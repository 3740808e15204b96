"""Cross-chain checks of the two-layer scheme: a MEC takes another MEC's LMUC block as a light
client (header, certificate and transactions checked against that LMUC's finality rule, with
no copy of that chain), and the round's updates from every LMUC block in one canonical order.

How it works
------------
A relayed block is accepted when it decodes, its transactions match its Merkle root, and its
certificate satisfies the LMUC's `Committee` (quorum of valid commit signatures by the MEC
and its full devices: `Finality.check`). Its ``task.record_update`` transactions of the
task's current round are the round's updates from that LMUC; each must be signed by a
device member of that LMUC (its genesis) and come with the blob its payload names (hash
and size). The MEC cannot alter an update once it is certified: the block hash, and so
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


def round_updates(
    data: bytes,
    blobs: Sequence[bytes],
    finality: Finality,
    devices: Mapping[bytes, str],
    task_id: str,
    round_no: int,
) -> tuple[Block, list[LmucUpdate]]:
    """The certified block `data` and its updates of `round_no` (in block order); ValueError
    naming what is wrong. `devices`: public key -> device id of that LMUC's members;
    `blobs`: the relayed blobs, matched to the transactions by hash."""
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
    by_hash = {sha256(b): b for b in blobs}
    out: list[LmucUpdate] = []
    for tx in block.txs:
        p = tx.payload
        if tx.type != UPDATE_TX or p.get("task_id") != task_id or p.get("round") != round_no:
            continue
        try:
            tx.verify()
        except TxError as exc:
            raise ValueError(f"transaction {tx.hash.hex()[:16]}: {exc}") from None
        device = devices.get(tx.sender)
        if device is None:
            raise ValueError(f"update {tx.hash.hex()[:16]} not signed by a device of the LMUC")
        blob = by_hash.get(p.get("blob"))  # type: ignore[arg-type]
        if blob is None or len(blob) != p.get("size"):
            raise ValueError(f"the blob of {device}'s update is missing or of another size")
        samples = p.get("samples")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples <= 0:
            raise ValueError(f"{device}'s update has no sample count")
        out.append(LmucUpdate(device, tx, blob))
    return block, out


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
