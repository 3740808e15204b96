"""Committers: how a role turns submitted transactions into committed blocks of one chain.

A role installs one committer per chain it writes to (``ctx.chains[cid].install(c)``); then
``ctx.chains[cid].submit(txs)`` gets the transactions on that chain whatever its finality
rule. Kinds:

- `SingleWriterCommitter`: the node is the chain's single writer (`SingleWriter` finality):
  it builds the block on its head, signs it, appends it and sends it to the given peers as
  ``chain.block`` (the vanilla publisher's way).
- PBFT: the chain's committee orders submissions by PBFT (`node.roles.validator`); a
  submitting node sends ``submit`` to the committee and its validators commit the block.

Further kinds (proof of learning, proof of work) implement the same `Committer` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from node.core.block import Block
from node.core.tx import Transaction
from node.ledger.chains import ChainHandle, Committer
from node.ledger.sync import CHAIN_FIELD
from node.roles.base import NodeContext

log = logging.getLogger(__name__)

__all__ = ["Committer", "SingleWriterCommitter"]


class SingleWriterCommitter:
    """Builds, signs, appends and sends each block itself (the chain's single writer)."""

    def __init__(
        self,
        ctx: NodeContext,
        chain: ChainHandle,
        peers: Sequence[str] | Callable[[], Sequence[str]],
    ) -> None:
        """`peers`: who gets each block (or a function giving them at commit time)."""
        self.ctx = ctx
        self.chain = chain
        self.peers = peers
        self.last_block: Block | None = None

    def submit(self, txs: Sequence[Transaction]) -> None:
        """One block of `txs` (those the contracts reject outright are left out), appended
        and sent to the peers; reverted calls are logged."""
        replica = self.chain.replica
        block = replica.chain.build(txs, replica.key, self.ctx.wall_ms())
        for receipt in self.chain.append_block(block):
            if not receipt.ok:
                log.warning("tx %s reverted: %s", receipt.tx_hash.hex()[:16], receipt.error)
        peers = self.peers() if callable(self.peers) else self.peers
        payload = {
            "block": block.to_bytes(),
            "height": block.height,
            CHAIN_FIELD: self.chain.chain_id,
        }
        self.ctx.multicast(peers, "chain.block", payload)
        self.ctx.metrics.write(
            "block",
            chain=self.chain.chain_id,
            height=block.height,
            txs=len(block.txs),
            hash=block.hash.hex(),
        )
        self.last_block = block
