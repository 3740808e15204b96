"""A sans-IO proof-of-learning (PoL) core for one BEES edge server (ES).

How it works
------------
Each round (one block height h) every ES computes the PoL ranking from the chain state at
h-1 — the ES ids sorted by importance I_k = n_k·c_k/B_k, best first (the BEES contract does
that; this core takes the ranking as input) — and calls `start_round(h, ranking, now_ms)`.

- Turns: rank r's turn opens at ``start + r·timeout_ms`` on this node's clock. The rank-0 ES
  (the main node) proposes at once (`Propose`); the rank-r ES proposes at its turn unless it
  has accepted a block for h by then (`tick` reports it). The schedule depends on the
  clock only, never on what was received, so no peer can move it (our choice: after the
  winner's block is rejected as unverifiable, the next rank still waits for its turn rather
  than take over at once: a Byzantine winner could show a bad block to some nodes only,
  and those that saw it would open the next turn early while the others would not).
- Acceptance (`on_block`): a block for h is accepted iff it is the first acceptable one for
  h at this node, its certificate is its proposer's signature (the chain's
  `ProofOfLearning` rule), its proposer is in the ranking at a rank r whose turn has come,
  less `grace_ms` (``now >= start + r·timeout_ms - grace_ms``), and the caller's `verify`
  (re-verifying the round's transactions) finds nothing wrong. A turn never closes: a
  lower-rank block arriving late is still acceptable while nothing is accepted.
- Rejections (`Reject`, counted in `counts` by reason): ``not_winner`` (proposer not in the
  ranking, or its rank's turn has not come), ``unverifiable:<detail>`` (the callback's
  reason), ``bad_certificate:<detail>`` (our addition: not exactly one valid signature by a
  member proposer — else anyone could forge a block naming the winner), ``wrong_height``
  (below the current round, more than `lookahead` rounds above it, or kept for a round
  that was skipped), ``duplicate`` (a block for a height already accepted, including one
  of a lower rank that arrives after a higher rank's block was accepted: first acceptable
  wins, our choice — changing an accepted block would need a second agreement round the
  paper does not have; also a second block by one proposer for a round not yet started).
  `counts` also has ``accepted``.
- Early blocks: a block for a round this node has not started yet (it accepted the
  previous blocks late, while the next winners proposed at once) is kept if its height is
  at most `lookahead` (default 4, our choice) above the current round, at most one per
  (height, member proposer), and judged when its round starts, at that time; blocks kept
  for a round that was skipped are rejected ``wrong_height`` then. A node further behind
  catches up by the ledger's sync, not here.

Our choice of `grace_ms` (default ``timeout_ms // 4``): rounds start at different times on
different nodes (each starts h+1 when it accepts h). If every honest node starts a round
within ``grace_ms`` of the others, an honest rank-r block is never refused as early; if,
in addition, ``timeout_ms`` exceeds that skew plus the time a block takes to reach and be
verified by every node, rank r+1 has accepted rank r's block before its own turn, so honest
nodes never accept different blocks for one height. PoL is not Byzantine fault tolerant:
an equivocating winner, or one that sends its block to some nodes just before the next
turn, can split the honest nodes; the paper has no agreement round to stop it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from node.core.block import Block
from node.core.finality import FinalityError, ProofOfLearning

log = logging.getLogger(__name__)

NOT_WINNER = "not_winner"
UNVERIFIABLE = "unverifiable"
BAD_CERTIFICATE = "bad_certificate"
WRONG_HEIGHT = "wrong_height"
DUPLICATE = "duplicate"

Verify = Callable[[Block], str | None]
"""Re-verifies a block's transactions: None if they are valid, else a one-line reason."""


@dataclass(frozen=True)
class Propose:
    """It is this node's turn: build, sign and broadcast a block for `height`."""

    height: int
    rank: int


@dataclass(frozen=True)
class Accept:
    """This node accepts `block_hash` (proposed by ES `proposer`, at `rank`) for `height`."""

    height: int
    block_hash: bytes
    proposer: str
    rank: int


@dataclass(frozen=True)
class Reject:
    """This node refuses `block_hash` for `height`; `reason` as in the module docstring."""

    height: int
    block_hash: bytes
    reason: str


PolAction = Propose | Accept | Reject


def _category(reason: str) -> str:
    return reason.split(":", 1)[0]


class PolCore:
    """One ES's PoL round logic: feed it rounds, blocks and clock ticks; it returns actions."""

    def __init__(
        self,
        node_id: str,
        members: Mapping[str, bytes],
        verify: Verify,
        timeout_ms: int,
        grace_ms: int | None = None,
        lookahead: int = 4,
    ) -> None:
        """`members`: every ES id and its public key; `grace_ms` defaults to a quarter of
        `timeout_ms` and must be below it; `lookahead`: how many rounds ahead blocks are
        kept until their round starts."""
        if node_id not in members:
            raise ValueError(f"{node_id!r} is not a member")
        if not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValueError(f"timeout_ms {timeout_ms!r} must be an integer >= 1")
        grace = timeout_ms // 4 if grace_ms is None else grace_ms
        if not isinstance(grace, int) or not 0 <= grace < timeout_ms:
            raise ValueError(f"grace_ms {grace!r} must be in 0..{timeout_ms - 1}")
        if not isinstance(lookahead, int) or lookahead < 0:
            raise ValueError(f"lookahead {lookahead!r} must be an integer >= 0")
        self.id = node_id
        self.lookahead = lookahead
        self.rule = ProofOfLearning(tuple(members.values()))
        self._keys = dict(members)
        self.ids = {key: es for es, key in members.items()}  # public key -> ES id
        self.verify = verify
        self.timeout_ms = timeout_ms
        self.grace_ms = grace
        self.counts: Counter[str] = Counter()
        self.height = 0  # the current round; 0: none started
        self.start_ms = 0
        self.ranking: tuple[str, ...] = ()
        self.accepted: Accept | None = None
        self._proposed = False
        self._early: dict[tuple[int, bytes], tuple[Block, str]] = {}  # (height, proposer)

    # ---- public API -------------------------------------------------------------------

    @property
    def rank(self) -> int | None:
        """This node's rank in the current round's ranking (None if not ranked)."""
        return self.ranking.index(self.id) if self.id in self.ranking else None

    def start_round(self, height: int, ranking: Sequence[str], now_ms: int) -> list[PolAction]:
        """Round `height` starts now; `ranking`: the ES ids by PoL importance, best first."""
        order = tuple(ranking)
        if height <= self.height:
            raise ValueError(f"round {height} does not follow round {self.height}")
        if not order or len(set(order)) != len(order):
            raise ValueError("ranking must be a non-empty sequence of distinct ES ids")
        unknown = [es for es in order if es not in self._keys]
        if unknown:
            raise ValueError(f"ranking names non-members: {', '.join(unknown)}")
        self.height, self.ranking, self.start_ms = height, order, now_ms
        self.accepted, self._proposed = None, False
        early, self._early = self._early, {}
        acts: list[PolAction] = []
        for slot, (block, sender) in early.items():
            if block.height == height:
                acts += self._judge(block, sender, now_ms)
            elif block.height < height:
                acts.append(self._reject(block, WRONG_HEIGHT))
            else:
                self._early[slot] = (block, sender)
        return acts + self.tick(now_ms)

    def on_block(self, block: Block, sender: str, now_ms: int) -> list[PolAction]:
        """A block proposed for some round, relayed by `sender` (its own block included:
        the host passes the block it built here too, and gets its `Accept`)."""
        ahead = self.height < block.height <= self.height + self.lookahead
        if ahead and block.header.proposer in self.ids:
            slot = (block.height, block.header.proposer)
            if slot in self._early:  # a second block by one proposer for a future round
                return [self._reject(block, DUPLICATE)]
            self._early[slot] = (block, sender)
            return []
        if block.height != self.height:
            return [self._reject(block, WRONG_HEIGHT)]
        return self._judge(block, sender, now_ms)

    def tick(self, now_ms: int) -> list[PolAction]:
        """The clock reads `now_ms`: `Propose` if this node's turn has come."""
        due = self.next_tick_ms()
        if due is None or now_ms < due:
            return []
        self._proposed = True
        rank = self.rank
        assert rank is not None
        return [Propose(self.height, rank)]

    def next_tick_ms(self) -> int | None:
        """When `tick` will next have something to do (None: nothing this round)."""
        rank = self.rank
        if self.height == 0 or self._proposed or self.accepted is not None or rank is None:
            return None
        return self.start_ms + rank * self.timeout_ms

    # ---- plumbing ---------------------------------------------------------------------

    def _judge(self, block: Block, sender: str, now_ms: int) -> list[PolAction]:
        if self.accepted is not None:
            return [self._reject(block, DUPLICATE)]
        try:
            self.rule.check(block)
        except FinalityError as exc:
            return [self._reject(block, f"{BAD_CERTIFICATE}:{exc.detail}")]
        proposer = self.ids[block.header.proposer]
        if proposer not in self.ranking:
            return [self._reject(block, NOT_WINNER)]
        rank = self.ranking.index(proposer)
        if now_ms < self.start_ms + rank * self.timeout_ms - self.grace_ms:
            return [self._reject(block, NOT_WINNER)]
        problem = self.verify(block)
        if problem is not None:
            return [self._reject(block, f"{UNVERIFIABLE}:{problem}")]
        self.accepted = Accept(self.height, block.hash, proposer, rank)
        self.counts["accepted"] += 1
        log.debug(
            "%s accepts %s's rank-%d block via %s at %d", self.id, proposer, rank, sender, now_ms
        )
        return [self.accepted]

    def _reject(self, block: Block, reason: str) -> Reject:
        self.counts[_category(reason)] += 1
        log.debug("%s rejects a block for %d: %s", self.id, block.height, reason)
        return Reject(block.height, block.hash, reason)
