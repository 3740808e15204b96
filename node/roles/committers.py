"""Committers: how a role turns submitted transactions into committed blocks of one chain.

A role installs one committer per chain it writes to (``ctx.chains[cid].install(c)``); then
``ctx.chains[cid].submit(txs)`` gets the transactions on that chain whatever its finality
rule. Kinds:

- `SingleWriterCommitter`: the node is the chain's single writer (`SingleWriter` finality):
  it builds the block on its head, signs it, appends it and sends it to the given peers as
  ``chain.block`` (the vanilla publisher's way).
- `CommitteeSubmitter`: the chain's committee (`Committee` finality) orders submissions by
  PBFT (`node.roles.validator`); the submitting node sends ``submit`` to every member and
  their validators commit the block (later: the block reaches this node by sync).

`committer_for` picks the kind from the chain's finality rule, so a role never asks which
consensus a run uses.

Further kinds (proof of learning, proof of work) implement the same `Committer` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from node.consensus.ledger import committee_replicas
from node.core.block import Block
from node.core.finality import Committee, SingleWriter
from node.core.tx import Transaction
from node.ledger.chains import ChainHandle, Committer
from node.ledger.sync import CHAIN_FIELD
from node.roles.base import NodeContext
from node.roles.validator import Submit

log = logging.getLogger(__name__)

__all__ = ["CommitteeSubmitter", "Committer", "SingleWriterCommitter", "committer_for"]


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


class CommitteeSubmitter:
    """Sends each submission to the chain's committee, whose validators order it into a
    block by PBFT (the block comes back by sync)."""

    def __init__(self, ctx: NodeContext, chain: ChainHandle, members: Sequence[str]) -> None:
        self.ctx = ctx
        self.chain = chain
        self.members = list(members)

    def submit(self, txs: Sequence[Transaction]) -> None:
        """``submit{txs, timestamp_ms}`` to every member (one timestamp: every validator builds
        the same candidate block)."""
        self.ctx.multicast(
            self.members, Submit(tuple(tx.to_bytes() for tx in txs), self.ctx.wall_ms())
        )
        self.ctx.metrics.write("submitted", chain=self.chain.chain_id, txs=len(txs))


def committer_for(
    ctx: NodeContext, chain: ChainHandle, peers: Sequence[str] | Callable[[], Sequence[str]]
) -> Committer:
    """How this node gets transactions onto `chain`, from the chain's finality rule: as its
    single writer (blocks sent to `peers`), or by submitting to its committee. ValueError for a
    rule this node cannot write under (another node's single-writer chain, other kinds)."""
    finality = chain.config.finality
    if isinstance(finality, SingleWriter):
        if finality.writer != chain.replica.key.public_key:
            raise ValueError(f"chain {chain.chain_id!r} has another single writer")
        return SingleWriterCommitter(ctx, chain, peers)
    if isinstance(finality, Committee):
        ids = {nid: bytes.fromhex(key) for nid, key in ctx.config.roster.items()}
        return CommitteeSubmitter(ctx, chain, [nid for nid, _ in committee_replicas(finality, ids)])
    raise ValueError(f"chain {chain.chain_id!r}: no committer for {finality.kind} finality")
