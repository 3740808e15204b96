"""blockfl's application messages (the protocol: see the package docstring).

Device updates travel as vanilla's ``update`` (`DeviceUpdate`), sent to every miner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from node.messages import Bounds, message

HASH = Annotated[bytes, Bounds(max_len=32)]


@message("pow.block")
@dataclass(frozen=True)
class PowBlock:
    """A mined block (its canonical bytes), from its miner to every node, or an answer to
    ``pow.want``."""

    block: bytes


@message("pow.want")
@dataclass(frozen=True)
class BlockWant:
    """Ask a node for the block with hash `hash` (the parent of a block that arrived first)."""

    hash: HASH


@message("pow.txs")
@dataclass(frozen=True)
class PowTxs:
    """Signed transactions for the miners to put in a block (the publisher's)."""

    txs: Annotated[tuple[bytes, ...], Bounds(max_len=4096)]


@message("pow.blob_want")
@dataclass(frozen=True)
class BlobWant:
    """Ask for blobs (update weights, global models) by their SHA-256 hashes."""

    hashes: Annotated[tuple[HASH, ...], Bounds(max_len=1024)]


@message("pow.blob")
@dataclass(frozen=True)
class BlobGive:
    """One blob asked for with ``pow.blob_want`` (`data` empty: the node lacks it)."""

    hash: HASH
    data: bytes


MESSAGES = (PowBlock, BlockWant, PowTxs, BlobWant, BlobGive)

__all__ = ["MESSAGES", "BlobGive", "BlobWant", "BlockWant", "PowBlock", "PowTxs"]
