"""A MEC server as a PBFT validator of the task's chain (the GMUC shard of the two-layer
paper): it orders the publisher's submitted transactions into blocks by PBFT.

How it works
------------
The publisher sends ``submit {txs, timestamp_ms}`` (`Submit`) to every validator. Each keeps
the submissions in order and builds a candidate block for each (`Chain.candidate_on`, with
the publisher's key as the header's proposer and the publisher's timestamp): the first on
its head, the next on the previous candidate, up to MAX_IN_FLIGHT candidates not yet
committed (pipelined: PBFT orders sequence n+1 while n is still preparing, inside its
watermarks, and executes in sequence order). Validators at the same head given the same
submissions build the same blocks, so PBFT sees one request (one digest) per block. It
hands each block to its PBFT core (`propose`: the primary orders it, a backup forwards it
and starts the request timer that triggers a view change if the primary is faulty). PBFT
messages travel as ``pbft {data}`` (`PbftMessage`) in the node's signed envelopes. On a
`Commit`, the block gets the 2f+1 commit signatures as its certificate, is validated
completely and appended (a block that does not apply is refused the same way by every honest
validator, so they stay consistent), and is sent on to the MEC's devices and the publisher.
Transactions are verified once, on submission (`node.sigcache` spares the re-check in
`Chain.append`, and the commit signatures PBFT checked). The SQLite write is off the commit
path: the validator's store defers writes, which the daemon does when no frame is waiting
(a kill -9 loses at most the blocks not yet written; the restarted replica catches up from
its peers). A
submission is done once all its transactions are on chain; a commit that is not the next
in-flight candidate (the head moved under them) makes the validator rebuild on the new
head.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from node.consensus.actions import (
    Action,
    Broadcast,
    Commit,
    PbftConfig,
    Send,
    StartTimer,
    StopTimer,
)
from node.consensus.ledger import certified_block, ledger_config
from node.consensus.pbft import PbftReplica
from node.contracts.state import State
from node.core.block import Block
from node.core.tx import Transaction, TxError
from node.ledger.chain import LedgerError
from node.ledger.replica import Replica
from node.messages import NonNegativeInt, message
from node.roles.base import NodeContext

log = logging.getLogger(__name__)

TIMER_PREFIX = "pbft:"
MAX_IN_FLIGHT = 4  # candidates proposed and not yet committed (<= the PBFT log window)


@message("submit")
@dataclass(frozen=True)
class Submit:
    """Transactions for the validators to order into one block, with the proposer's block
    timestamp (the same on every validator, so that they build the same candidate)."""

    txs: tuple[bytes, ...]
    timestamp_ms: NonNegativeInt


@message("pbft")
@dataclass(frozen=True)
class PbftMessage:
    """One PBFT protocol message between validators (`node.consensus.pbft`'s own bytes)."""

    data: bytes


class PbftValidator:
    """The PBFT side of a MEC: submissions in, certified blocks out."""

    def __init__(
        self,
        ctx: NodeContext,
        replica: Replica,
        validators: Sequence[tuple[str, bytes]],
        proposer: bytes,
        forward_to: Sequence[str],
        request_timeout_s: float = 2.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        timer_prefix: str = TIMER_PREFIX,
    ) -> None:
        """`timer_prefix`: the start of the name of every node timer this validator sets (a
        node running several validators, one per chain, gives each its own prefix; none
        may be the start of another's)."""
        self.replica = replica
        self.timer_prefix = timer_prefix
        # commit, then write (see the docstring): the daemon writes when it is idle, which costs
        # less than a writer thread trading the GIL on a loaded machine (bench/consensus.py)
        replica.chain.store.set_deferred(True, thread=False)
        self.peers = [nid for nid, _ in validators if nid != ctx.node_id]
        self.proposer = proposer
        self.forward_to = list(forward_to)
        config = ledger_config(PbftConfig(request_timeout_s=request_timeout_s))
        self.core = PbftReplica(ctx.node_id, replica.key, validators, config)
        self.queue: deque[Submission] = deque()
        self.in_flight: list[InFlight] = []
        self.max_in_flight = max(1, min(max_in_flight, config.log_window))
        # committed blocks not yet appended, by height, with the wall-clock ms of their commit
        # here (their `received_ms`: a block that waits for a gap was received when committed)
        self.waiting: dict[int, tuple[Block, float]] = {}
        self.commits = 0

    def on_submit(self, ctx: NodeContext, submit: Submit) -> None:
        """Queue the publisher's transactions for a block (the caller checked the sender)."""
        try:
            txs = [Transaction.from_bytes(t) for t in submit.txs]
            for tx in txs:
                tx.verify()
        except (TxError, TypeError) as exc:
            ctx.drop("bad_tx", f"submission: {exc}")
            return
        self.queue.append(Submission(txs, submit.timestamp_ms))
        self._propose_next(ctx)

    def on_pbft(self, ctx: NodeContext, sender: str, msg: PbftMessage) -> None:
        """A PBFT protocol message from another validator."""
        if sender not in self.peers:
            ctx.drop("unexpected", f"pbft from {sender}")
            return
        self._run(ctx, self.core.handle(sender, msg.data, ctx.now()))

    def on_timer(self, ctx: NodeContext, name: str) -> bool:
        """Fire a PBFT timer; False if `name` is not one of this validator's."""
        if not name.startswith(self.timer_prefix):
            return False
        self._run(ctx, self.core.on_timer(name.removeprefix(self.timer_prefix), ctx.now()))
        return True

    def _run(self, ctx: NodeContext, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send):
                ctx.send(act.dst, PbftMessage(act.data))
            elif isinstance(act, Broadcast):
                ctx.multicast(self.peers, PbftMessage(act.data))
            elif isinstance(act, StartTimer):
                ctx.set_timer(self.timer_prefix + act.name, act.delay_s)
            elif isinstance(act, StopTimer):
                ctx.cancel_timer(self.timer_prefix + act.name)
            elif isinstance(act, Commit):
                self._on_commit(ctx, act)

    def _on_commit(self, ctx: NodeContext, commit: Commit) -> None:
        try:
            block = certified_block(commit)
        except ValueError as exc:
            ctx.drop("bad_commit", str(exc))
            return
        self.commits += 1
        self.waiting[block.height] = (block, ctx.wall_ms())
        self._append_waiting(ctx)
        if self.waiting:  # a gap: our ledger is behind the committed sequence
            ctx.emit(self.replica.sync.announce(self.peers))
        self._settle_queue()
        self._propose_next(ctx)

    def _append_waiting(self, ctx: NodeContext) -> None:
        chain = self.replica.chain
        for height in sorted(self.waiting):
            if height <= chain.height:
                del self.waiting[height]
                continue
            if height != chain.height + 1:
                return
            block, committed_ms = self.waiting.pop(height)
            try:
                chain.append(block, committed_ms)
            except LedgerError as exc:
                log.warning("committed block refused by the ledger: %s", exc)
                ctx.drop("refused_block", exc.reason)
                continue
            ctx.multicast(
                self.forward_to, "chain.block", {"block": block.to_bytes(), "height": block.height}
            )

    def _settle_queue(self) -> None:
        chain = self.replica.chain
        while self.queue and all(chain.store.tx_location(tx.hash) for tx in self.queue[0].txs):
            self.queue.popleft()
        while self.in_flight and self.in_flight[0].block.height <= chain.height:
            done = self.in_flight.pop(0)
            if chain.store.stored_hash(done.block.height) != done.block.hash:
                self.in_flight.clear()  # another block took its place: rebuild on the head
        if self.in_flight and self.in_flight[0].block.header.prev_hash != chain.head.hash:
            self.in_flight.clear()
        live = {id(s) for s in self.queue}
        if any(id(f.submission) not in live for f in self.in_flight):
            self.in_flight.clear()  # its submission is done some other way: rebuild

    def _propose_next(self, ctx: NodeContext) -> None:
        chain = self.replica.chain
        proposed = {id(f.submission) for f in self.in_flight}
        for sub in list(self.queue):
            if len(self.in_flight) >= self.max_in_flight:
                return
            if id(sub) in proposed:
                continue
            if self.in_flight:
                parent, state = self.in_flight[-1].block.header, self.in_flight[-1].state
            else:
                parent, state = chain.head, chain.state
            block, after = chain.candidate_on(parent, state, sub.txs, self.proposer, sub.ts)
            if not block.txs:
                if not self.in_flight:  # everything in it is on chain or can no longer apply
                    self.queue.remove(sub)
                continue  # (on a pipelined parent: decided once the parent commits)
            self.in_flight.append(InFlight(sub, block, after))
            self._run(ctx, self.core.propose(block.to_bytes(), ctx.now()))


@dataclass(eq=False)
class Submission:
    """The publisher's transactions for one block, and its timestamp."""

    txs: list[Transaction]
    ts: int


@dataclass(frozen=True, eq=False)
class InFlight:
    """A proposed candidate block for `submission` and the state after it."""

    submission: Submission
    block: Block
    state: State
