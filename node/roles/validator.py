"""A MEC server as a PBFT validator of the task's chain (the GMUC shard of the two-layer
paper): it orders the publisher's submitted transactions into blocks by PBFT.

How it works
------------
The publisher sends ``submit {txs, timestamp_ms}`` to every validator. Each keeps
the submissions in order and, when nothing of its own is in flight, builds the candidate
block for the first one on its current head (`Chain.candidate`, with the publisher's key
as the header's proposer and the publisher's timestamp), so validators at the same head
build the same block and PBFT sees one request (one digest). It hands the block to its
PBFT core (`propose`: the primary orders it, a backup forwards it and starts the request
timer that triggers a view change if the primary is faulty). PBFT messages travel as
``pbft {data}`` in the node's signed envelopes. On a `Commit`, the block gets the 2f+1
commit signatures as its certificate, is validated completely and appended (a block
that does not apply is refused the same way by every honest validator, so they stay
consistent), and is sent on to the MEC's devices and the publisher. A submission is done
once all its transactions are on chain; a commit that moved the head under an in-flight
candidate makes the validator rebuild on the new head.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from node.codec import Message
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
from node.ledger.block import Block
from node.ledger.chain import LedgerError
from node.ledger.replica import Replica
from node.ledger.tx import Transaction, TxError
from node.roles.base import NodeContext

log = logging.getLogger(__name__)

TIMER_PREFIX = "pbft:"


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
    ) -> None:
        self.replica = replica
        self.peers = [nid for nid, _ in validators if nid != ctx.node_id]
        self.proposer = proposer
        self.forward_to = list(forward_to)
        config = ledger_config(PbftConfig(request_timeout_s=request_timeout_s))
        self.core = PbftReplica(ctx.node_id, replica.key, validators, config)
        self.queue: deque[tuple[list[Transaction], int]] = deque()
        self.in_flight: bytes | None = None
        self.waiting: dict[int, Block] = {}
        self.commits = 0

    def on_submit(self, ctx: NodeContext, msg: Message) -> None:
        """Queue the publisher's transactions for a block."""
        raw, ts = msg.payload.get("txs"), msg.payload.get("timestamp_ms")
        if not isinstance(raw, list) or not isinstance(ts, int):
            ctx.drop("bad_payload", "submit without txs or timestamp")
            return
        try:
            txs = [Transaction.from_bytes(t) for t in raw]
            for tx in txs:
                tx.verify()
        except (TxError, TypeError) as exc:
            ctx.drop("bad_tx", f"submission: {exc}")
            return
        self.queue.append((txs, ts))
        self._propose_next(ctx)

    def on_pbft(self, ctx: NodeContext, msg: Message) -> None:
        """A PBFT protocol message from another validator."""
        data = msg.payload.get("data")
        if not isinstance(data, bytes) or msg.sender not in self.peers:
            ctx.drop("unexpected", f"pbft from {msg.sender}")
            return
        self._run(ctx, self.core.handle(msg.sender, data, ctx.now()))

    def on_timer(self, ctx: NodeContext, name: str) -> bool:
        """Fire a PBFT timer; False if `name` is not one."""
        if not name.startswith(TIMER_PREFIX):
            return False
        self._run(ctx, self.core.on_timer(name.removeprefix(TIMER_PREFIX), ctx.now()))
        return True

    def _run(self, ctx: NodeContext, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send):
                ctx.send(act.dst, "pbft", {"data": act.data})
            elif isinstance(act, Broadcast):
                ctx.multicast(self.peers, "pbft", {"data": act.data})
            elif isinstance(act, StartTimer):
                ctx.set_timer(TIMER_PREFIX + act.name, act.delay_s)
            elif isinstance(act, StopTimer):
                ctx.cancel_timer(TIMER_PREFIX + act.name)
            elif isinstance(act, Commit):
                self._on_commit(ctx, act)

    def _on_commit(self, ctx: NodeContext, commit: Commit) -> None:
        try:
            block = certified_block(commit)
        except ValueError as exc:
            ctx.drop("bad_commit", str(exc))
            return
        self.commits += 1
        self.waiting[block.height] = block
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
            block = self.waiting.pop(height)
            try:
                chain.append(block)
            except LedgerError as exc:
                log.warning("committed block refused by the ledger: %s", exc)
                ctx.drop("refused_block", exc.reason)
                continue
            ctx.multicast(
                self.forward_to, "chain.block", {"block": block.to_bytes(), "height": block.height}
            )

    def _settle_queue(self) -> None:
        store = self.replica.chain.store
        while self.queue and all(store.tx_location(tx.hash) for tx in self.queue[0][0]):
            self.queue.popleft()
            self.in_flight = None
        if self.in_flight is not None:
            self.in_flight = None  # the head moved: rebuild on the new head

    def _propose_next(self, ctx: NodeContext) -> None:
        if self.in_flight is not None or not self.queue:
            return
        txs, ts = self.queue[0]
        block = self.replica.chain.candidate(txs, self.proposer, ts)
        if not block.txs:  # everything in it is on chain or can no longer apply
            self.queue.popleft()
            self._propose_next(ctx)
            return
        self.in_flight = block.hash
        self._run(ctx, self.core.propose(block.to_bytes(), ctx.now()))
