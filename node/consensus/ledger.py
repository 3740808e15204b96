"""Adapter between PBFT and the ledger: digests are block hashes, certificates are
`CommitSignature`s, so a decided block can be appended with `Chain.append`; the PBFT
replica set of a chain is its `Committee` finality rule's members (`committee_replicas`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from node.consensus.actions import Commit, PbftConfig
from node.core.block import Block, CommitSignature
from node.core.finality import Committee, Finality


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


def committee_replicas(finality: Finality, ids: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    """The PBFT replica set (node id, key), in the committee's order, of a chain whose rule
    is `finality`; `ids`: node id -> public key (the run's roster). Raises ValueError unless
    the rule is a `Committee` whose quorum is PBFT's 2f+1 (then a block PBFT commits is final
    on the chain, and no fewer signatures make one final) and every member has an id."""
    if not isinstance(finality, Committee):
        raise ValueError(f"a PBFT chain needs committee finality, not {finality.kind}")
    bft = Committee.bft(finality.members)
    if finality.quorum != bft.quorum:
        raise ValueError(
            f"committee quorum {finality.quorum} is not PBFT's 2f+1 = {bft.quorum} "
            f"for {len(finality.members)} members"
        )
    by_key = {key: nid for nid, key in ids.items()}
    missing = [m.hex()[:16] for m in finality.members if m not in by_key]
    if missing:
        raise ValueError(f"committee members without a node id: {', '.join(missing)}")
    return [(by_key[m], m) for m in finality.members]
