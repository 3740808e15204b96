"""Fork choice above the ledger: the mined blocks not yet confirmed, longest branch wins.

How it works
------------
The ledger (`node.ledger.chain.Chain`) is linear and never rolls back, so it holds only the
*confirmed* prefix of the chain. Mined blocks that are not yet confirmed live here, in a tree
rooted at the ledger's head. `add(block)` checks a block completely against its parent (its
proof of work and miner's signature through the chain's finality rule, every transaction's
signature, and, by executing its transactions on the parent's post-state, its Merkle and
state roots) and keeps it with its post-state. The best tip is the highest block (the
longest chain, Nakamoto's rule); between equally high ones the one with the lower hash (our
choice: Bitcoin keeps the first seen, but "first" differs from node to node, and here the
miners start each round together and find blocks within milliseconds of each other, so
first-seen ties split the replicas for good; the lower hash is the same everywhere once the
competing blocks have spread, which the miners' ``settle_s`` leaves time for). A block is
confirmed when `confirmations` blocks are mined on top of it on the best branch:
`confirmable` gives those blocks in order, the caller appends them to the ledger, and
`rebase` then drops every block that does not descend from the new ledger head (the losing
forks). Deeper reorganisations than `confirmations` are not possible here (what the ledger
holds is final): Nakamoto consensus with a fixed confirmation depth.

Pure: no I/O, no clock; the same blocks, in any order, give the same best tip.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.contracts.state import State
from node.core.block import Block, BlockHeader
from node.core.finality import FinalityError
from node.core.tx import TxError
from node.ledger.chain import Chain

__all__ = ["BlockTree", "InvalidBlock"]

MAX_ORPHANS = 64


class InvalidBlock(ValueError):
    """A block fails its checks; `reason` is the counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    block: Block
    state: State
    seq: int  # arrival order


class BlockTree:
    """The unconfirmed blocks above one chain's ledger head."""

    def __init__(self, chain: Chain, confirmations: int) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self.chain = chain
        self.confirmations = confirmations
        self._entries: dict[bytes, _Entry] = {}
        self._orphans: dict[bytes, Block] = {}  # by hash, waiting for their parent
        self._seq = 0
        self.forks = 0  # blocks added that did not extend the best tip

    # -- reading ---------------------------------------------------------------------------
    def _parent(self, block_hash: bytes) -> tuple[BlockHeader, State] | None:
        head = self.chain.head
        if block_hash == head.hash:
            return head, self.chain.state
        entry = self._entries.get(block_hash)
        return None if entry is None else (entry.block.header, entry.state)

    def _best(self) -> _Entry | None:
        if not self._entries:
            return None
        return min(self._entries.values(), key=lambda e: (-e.block.height, e.block.hash))

    @property
    def tip(self) -> tuple[BlockHeader, State]:
        """The best tip's header and post-state (the ledger head's when nothing is pending)."""
        best = self._best()
        if best is None:
            return self.chain.head, self.chain.state
        return best.block.header, best.state

    def branch(self) -> list[Block]:
        """The unconfirmed blocks of the best branch, oldest first."""
        out: list[Block] = []
        entry = self._best()
        while entry is not None:
            out.append(entry.block)
            entry = self._entries.get(entry.block.header.prev_hash)
        return out[::-1]

    def recent(self, limit: int) -> list[Block]:
        """The best branch's last `limit` blocks, newest first: the unconfirmed ones, then
        the ledger's (genesis excluded)."""
        out = self.branch()[::-1][:limit]
        height = self.chain.height
        while len(out) < limit and height >= 1:
            block = self.chain.store.block(height)
            if block is None:
                break
            out.append(block)
            height -= 1
        return out

    def get(self, block_hash: bytes) -> Block | None:
        """A block kept here (unconfirmed or orphan) or among the ledger's last 64 blocks."""
        entry = self._entries.get(block_hash)
        if entry is not None:
            return entry.block
        if block_hash in self._orphans:
            return self._orphans[block_hash]
        store = self.chain.store
        for height in range(self.chain.height, max(0, self.chain.height - 64), -1):
            if store.stored_hash(height) == block_hash:
                return store.block(height)
        return None

    # -- adding ----------------------------------------------------------------------------
    def add(self, block: Block) -> list[Block]:
        """Take `block` (and any orphans it was the missing parent of); returns the blocks
        added, in order (empty: already known, at or below the ledger head, or an orphan
        kept until its parent arrives: `missing_parent` says). Raises InvalidBlock."""
        known = block.hash in self._entries or block.hash in self._orphans
        if known or block.height <= self.chain.height:
            return []
        parent = self._parent(block.header.prev_hash)
        if parent is None:
            if len(self._orphans) >= MAX_ORPHANS:
                self._orphans.pop(next(iter(self._orphans)))
            self._orphans[block.hash] = block
            return []
        added = [self._check_and_keep(block, *parent)]
        progress = True
        while progress:
            progress = False
            for h, orphan in list(self._orphans.items()):
                parent = self._parent(orphan.header.prev_hash)
                if parent is not None:
                    del self._orphans[h]
                    try:
                        added.append(self._check_and_keep(orphan, *parent))
                    except InvalidBlock:
                        continue
                    progress = True
        return added

    def missing_parent(self, block: Block) -> bool:
        """True if `block` waits as an orphan for its parent."""
        return block.hash in self._orphans

    def _check_and_keep(self, block: Block, parent: BlockHeader, state: State) -> Block:
        try:
            self.chain.config.finality.check(block)
        except FinalityError as exc:
            raise InvalidBlock("bad_certificate", exc.detail) from None
        for tx in block.txs:
            try:
                tx.verify()
            except TxError as exc:
                raise InvalidBlock("bad_signature", exc.detail) from None
        h = block.header
        rebuilt, post = self.chain.candidate_on(
            parent, state, block.txs, h.proposer, h.timestamp_ms
        )
        if rebuilt.header != h:  # a left-out transaction, a wrong root or timestamp
            raise InvalidBlock("bad_block", f"block {block.hash.hex()[:16]} does not re-execute")
        best = self._best()
        extends = (best.block.hash if best else self.chain.head.hash) == h.prev_hash
        if not extends:
            self.forks += 1
        self._entries[block.hash] = _Entry(block, post, self._seq)
        self._seq += 1
        return block

    # -- confirming ------------------------------------------------------------------------
    def confirmable(self) -> list[Block]:
        """The best branch's blocks with at least `confirmations` blocks on top, oldest
        first (append them to the ledger, then call `rebase`)."""
        branch = self.branch()
        return branch[: max(0, len(branch) - self.confirmations)]

    def rebase(self) -> None:
        """Drop what no longer descends from the ledger head (confirmed, or a lost fork)."""
        keep: dict[bytes, _Entry] = {}
        frontier = {self.chain.head.hash}
        for entry in sorted(self._entries.values(), key=lambda e: e.block.height):
            if entry.block.header.prev_hash in frontier:
                keep[entry.block.hash] = entry
                frontier.add(entry.block.hash)
        self._entries = keep
        height = self.chain.height
        self._orphans = {h: b for h, b in self._orphans.items() if b.height > height}
