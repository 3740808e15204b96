"""An edge server's proof-of-learning round: the `PolCore` turns, building the block when it
is this ES's turn, and re-verifying every block before it is appended.

How it works
------------
Once an ES holds its own and the other ES's shares of round r (or at the share deadline),
`begin(height, pending)` starts the core with the ranking the contract computes from the
chain state (``bees.ranking``: I = n·c/B from the ES's last reports, eq. 2). Actions:

- `Propose(h, rank)`: this ES builds the block: ``bees.configure`` (round 1, signed by the
  publisher), ``bees.elect {r, rank}``, its own report and updates (signed again after the
  election, so its nonces follow), the other ES's reports and updates, then
  ``bees.aggregate``. Each update's claimed accuracy is first checked against this ES's
  own evaluation (`audit.select`): a false one is left out and counted
  (``left_out_updates``), and the top-M average is computed over the rest. The block goes
  to the other ES (``bees.block``) and to the core as this node's own.
- A ``bees.block`` from another ES: its updates' weights must be here (from the shares;
  any missing is fetched from the proposer, then from the other ES, ``blob.get``); then the
  core judges it with `verify`: the ledger's full validation (links, certificate, the
  contract's election and top-M checks by re-execution) and `audit.verify_round`
  (accuracies re-evaluated, the global model recomputed and its hash compared).
- `Accept`: the block is appended and sent to the publisher (``bees.accepted``), which
  appends a block once most ES have accepted it (our choice: the publisher, a follower
  that is no part of the paper, then follows the ES's majority, never a lone proposer).
- `Reject`: counted by reason (``pol_rejects`` metrics records).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from node.consensus.pol import Accept, PolAction, PolCore, Propose, Reject
from node.contracts import bees as contract
from node.core.block import Block, BlockError, CommitSignature
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.ledger.chain import LedgerError
from node.ledger.chains import ChainHandle
from node.roles.base import NodeContext
from node.schemes.bees.audit import Auditor, global_model, select, verify_round
from node.schemes.bees.common import PUBLISHER
from node.schemes.bees.messages import AcceptedBlock, ProposedBlock

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """One ES's pending transactions of a round: report(s) and updates with their weights."""

    txs: list[Transaction]
    blobs: dict[bytes, bytes] = field(default_factory=dict)  # hash -> weights


@dataclass
class RoundInputs:
    """What the proposer needs besides the shares: its own signing of the round's txs."""

    round: int
    own: Callable[[], list[Transaction]]  # re-signs this ES's report and updates
    configure: Transaction | None  # round 1: the publisher's bees.configure


class Election:
    """Runs the PoL core of one ES against its chain."""

    def __init__(
        self,
        ctx: NodeContext,
        chain: ChainHandle,
        members: Mapping[str, bytes],
        auditor: Auditor,
        top_m: int,
        timeout_ms: int,
    ) -> None:
        self.ctx = ctx
        self.chain = chain
        self.auditor = auditor
        self.top_m = top_m
        self.members = sorted(members)
        self.core = PolCore(ctx.node_id, members, self._verify, timeout_ms)
        self.inputs: RoundInputs | None = None
        self.pending: Mapping[str, Pending] = {}  # the ES role's (a late share joins it)
        self.blobs: dict[bytes, bytes] = {}  # every update's weights this ES holds, by hash
        self.waiting: dict[bytes, tuple[Block, str, set[bytes]]] = {}  # blocks awaiting blobs
        self.left_out: list[str] = []
        self.seen: dict[bytes, Block] = {}  # blocks handed to the core, by hash (this round)

    # ---- round -------------------------------------------------------------------------

    def begin(self, inputs: RoundInputs, pending: Mapping[str, Pending]) -> None:
        """Start the core for the next height with the contract's ranking."""
        self.inputs = inputs
        self.pending = pending
        height = self.chain.height + 1  # blocks of earlier heights are no longer needed
        self.seen = {h: b for h, b in self.seen.items() if b.height >= height}
        self.waiting = {h: w for h, w in self.waiting.items() if w[0].height >= height}
        # only this round's weights are kept (and those of blocks already here for it)
        needed = {
            tx.payload.get("blob")
            for block in (*self.seen.values(), *(w[0] for w in self.waiting.values()))
            for tx in block.txs
            if tx.type == "bees.update"
        }
        self.blobs = {k: v for k, v in self.blobs.items() if k in needed}
        for p in pending.values():
            self.blobs.update(p.blobs)
        order = contract.ranking(self.chain.replica.chain.state)
        log.info("round %d (height %d): PoL ranking %s", inputs.round, height, list(order))
        self.ctx.metrics.write("pol_round", round=inputs.round, height=height, ranking=list(order))
        self._run(self.core.start_round(height, order, self._now_ms()))

    def add_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        """Weights that arrived in a share (a late share still serves verification)."""
        self.blobs.update(blobs)

    def tick(self) -> None:
        """The PoL timer fired."""
        self._run(self.core.tick(self._now_ms()))

    def on_block(self, sender: str, msg: ProposedBlock) -> None:
        """A proposed block: fetch the weights it needs, then let the core judge it."""
        try:
            block = Block.from_bytes(msg.block)
        except BlockError as exc:
            self.ctx.drop("bad_block", f"from {sender}: {exc}")
            return
        missing = {
            tx.payload["blob"]
            for tx in block.txs
            if tx.type == "bees.update"
            and isinstance(tx.payload.get("blob"), bytes)
            and tx.payload["blob"] not in self.blobs
        }
        self.seen[block.hash] = block
        if not missing:
            self._run(self.core.on_block(block, sender, self._now_ms()))
            return
        self.waiting[block.hash] = (block, sender, missing)
        peers = [sender, *(m for m in self.members if m not in (sender, self.ctx.node_id))]
        replica = self.chain.replica
        block_hash = block.hash

        def got(key: bytes, data: bytes | None) -> None:
            self._got(block_hash, key, data)

        for key in sorted(missing):
            self.ctx.emit(replica.sync.fetch_blob(key, peers, self.ctx.now(), on_done=got))

    def _got(self, block_hash: bytes, key: bytes, data: bytes | None) -> None:
        entry = self.waiting.get(block_hash)
        if entry is None:
            return
        block, sender, missing = entry
        if data is None:
            del self.waiting[block_hash]
            log.warning("block %s: update weights unavailable", block_hash.hex()[:16])
            self._run(self.core.on_block(block, sender, self._now_ms()))  # judged: unverifiable
            return
        self.blobs[key] = data
        missing.discard(key)
        if not missing:
            del self.waiting[block_hash]
            self._run(self.core.on_block(block, sender, self._now_ms()))

    def next_timer_s(self) -> float | None:
        """Seconds until the core's next tick (None: nothing to wait for)."""
        due = self.core.next_tick_ms()
        return None if due is None else max(0.0, (due - self._now_ms()) / 1000)

    # ---- actions ----------------------------------------------------------------------

    @staticmethod
    def _round_of(block: Block) -> int:
        rounds = [t.payload.get("round") for t in block.txs if t.type == "bees.elect"]
        return rounds[0] if rounds and isinstance(rounds[0], int) else 0

    def _now_ms(self) -> int:
        return int(self.ctx.now() * 1000)

    def _run(self, actions: Sequence[PolAction]) -> None:
        for act in actions:
            if isinstance(act, Propose):
                self._propose(act)
            elif isinstance(act, Accept):
                self._accept(act)
            elif isinstance(act, Reject):
                log.warning(
                    "height %d: block %s rejected: %s",
                    act.height,
                    act.block_hash.hex()[:16],
                    act.reason,
                )
                self.ctx.metrics.write("pol_reject", height=act.height, reason=act.reason)
        due = self.next_timer_s()
        if due is not None:
            self.ctx.set_timer("pol", due)

    def _propose(self, act: Propose) -> None:
        inputs = self.inputs
        assert inputs is not None
        replica = self.chain.replica
        elect = replica.transaction("bees.elect", {"round": inputs.round, "rank": act.rank})
        own = inputs.own()  # signed after the election: its nonces follow
        others = [self.pending[es] for es in sorted(self.pending) if es != self.ctx.node_id]
        txs = [*own, *(t for p in others for t in p.txs)]
        reports = [t for t in txs if t.type == "bees.report"]
        updates = [
            (t, self.blobs.get(t.payload.get("blob", b""), b""))
            for t in txs
            if t.type == "bees.update"
        ]
        kept, left = select(self.auditor, updates)
        for a in left:
            log.warning(
                "round %d: left out %s's update: %s",
                inputs.round,
                a.tx.payload.get("ue"),
                a.problem,
            )
        self.left_out = [str(a.tx.payload.get("ue")) for a in left]
        block_txs = [*([inputs.configure] if inputs.configure else []), elect, *reports]
        block_txs += [a.tx for a in kept]
        if kept:
            selected, model = global_model(kept, self.top_m)
            key = sha256(model)
            replica.blobs.put_behind(key, model)
            block_txs.append(
                replica.transaction(
                    "bees.aggregate",
                    {
                        "round": inputs.round,
                        "selected": list(selected),
                        "global_blob": key,
                        "size": len(model),
                    },
                )
            )
        candidate = replica.chain.candidate(block_txs, replica.key.public_key, self.ctx.wall_ms())
        if len(candidate.txs) != len(block_txs):
            log.error(
                "round %d: the ledger left out %d transactions",
                inputs.round,
                len(block_txs) - len(candidate.txs),
            )
        block = candidate.with_certificate((CommitSignature.create(replica.key, candidate.hash),))
        self.ctx.metrics.write(
            "pol_propose",
            round=inputs.round,
            height=act.height,
            rank=act.rank,
            updates=len(kept),
            left_out=self.left_out,
        )
        others_ids = [m for m in self.members if m != self.ctx.node_id]
        self.ctx.multicast(others_ids, ProposedBlock(inputs.round, block.to_bytes()))
        self.seen[block.hash] = block
        self._run(self.core.on_block(block, self.ctx.node_id, self._now_ms()))

    def _verify(self, block: Block) -> str | None:
        """The core's verify callback: the ledger's validation, then the audit."""
        try:
            self.chain.replica.chain.validate(block)
        except LedgerError as exc:
            return f"ledger: {exc.reason}: {exc.detail}"
        configure_m = self.top_m if block.height == 1 else None
        problem, model = verify_round(block, self.auditor, self.blobs, self.top_m, configure_m)
        if problem is None and model is not None:  # kept: the next round starts from it
            self.chain.replica.blobs.put_behind(sha256(model), model)
        return problem

    def _accept(self, act: Accept) -> None:
        block = self.seen.get(act.block_hash)
        if block is None:
            log.error("accepted block %s is not held", act.block_hash.hex()[:16])
            return
        try:
            receipts = self.chain.append_block(block)
        except LedgerError as exc:
            log.error("accepted block %s does not append: %s", act.block_hash.hex()[:16], exc)
            return
        for r in receipts:
            if not r.ok:
                log.warning("tx %s reverted: %s", r.tx_hash.hex()[:16], r.error)
        self.ctx.metrics.write(
            "pol_accept",
            height=act.height,
            proposer=act.proposer,
            rank=act.rank,
            txs=len(block.txs),
        )
        self.ctx.send(PUBLISHER, AcceptedBlock(self._round_of(block), block.to_bytes()))
