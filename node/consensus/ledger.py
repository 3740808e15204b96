"""Adapter between PBFT and the ledger: digests are block hashes, certificates are
`CommitSignature`s, so a decided block can be appended with `Chain.append`."""

from __future__ import annotations

import dataclasses
import functools

from node.consensus.actions import Commit, PbftConfig
from node.core.block import Block, CommitSignature


@functools.lru_cache(maxsize=16)  # the PBFT log window
def _parse(request: bytes) -> Block:
    """A candidate block parsed once: the digest of its PRE-PREPARE and its commit share it
    (a Block is immutable; its transactions keep their computed hashes)."""
    return Block.from_bytes(request)


def block_digest(request: bytes) -> bytes:
    """The block hash of a candidate block's bytes; raises ValueError (BlockError) if bad."""
    return _parse(request).hash


def ledger_config(config: PbftConfig | None = None) -> PbftConfig:
    """`config` (or the defaults) with block hashes as request digests."""
    return dataclasses.replace(config or PbftConfig(), digest=block_digest)


def certified_block(commit: Commit) -> Block:
    """The committed block carrying its 2f+1 commit signatures as its certificate."""
    block = _parse(commit.request)
    if block.hash != commit.digest:
        raise ValueError("committed request is not the block with the committed digest")
    return block.with_certificate(CommitSignature(s, sig) for s, sig in commit.certificate)
