"""The BEES publisher: the testbed's round clock and evaluator (the paper has none). It
proposes no block: it follows the edge servers' chain (appending a block once most ES report
they accepted it), and on each round's block fetches the global model, evaluates it, records
the round and starts the next."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from node.codec import Message
from node.contracts import bees as contract
from node.core.block import Block, BlockError
from node.core.tx import Transaction
from node.learning.weights import weights_from_bytes, weights_to_bytes
from node.ledger.chain import LedgerError
from node.ledger.chains import Committer
from node.roles.base import NodeContext
from node.roles.learner import check_update
from node.schemes.bees.common import params_of
from node.schemes.bees.messages import AcceptedBlock, RoundStart
from node.schemes.vanilla.common import replica_of
from node.schemes.vanilla.messages import Hello
from node.schemes.vanilla.publisher import PublisherRole
from topologies import NodeKind

log = logging.getLogger(__name__)


class _Follower:
    """The publisher's committer: it writes no block of the edge servers' chain."""

    def submit(self, txs: Sequence[Transaction]) -> None:
        raise RuntimeError("the bees publisher proposes no block (the edge servers do)")


class BeesPublisherRole(PublisherRole):
    """Vanilla's hello, start-up and stop, with the rounds driven by the ES's blocks."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; follow the chain's blocks."""
        super().start(ctx)
        self.params = params_of(ctx)
        self.ues = {n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)}
        self.es = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
        self.chain.subscribe(lambda block: self._on_block(ctx, block))
        self.recorded = 0
        self.accepted: dict[bytes, tuple[Block, set[str]]] = {}  # block hash -> (block, ES)
        self.voters: dict[int, set[str]] = {}  # height -> the ES that accepted its block

    def make_committer(self, ctx: NodeContext) -> Committer:
        """None: the ES write the chain."""
        return _Follower()

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Hellos, and the ES's accepted blocks."""
        body = msg.payload
        if isinstance(body, Hello) and msg.sender in self.expected:
            self._on_hello(ctx, msg.sender)
        elif isinstance(body, AcceptedBlock) and msg.sender in self.es:
            self._on_accepted(ctx, msg.sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_accepted(self, ctx: NodeContext, es: str, msg: AcceptedBlock) -> None:
        """Append a block once most ES accepted it (our choice, see the package docstring);
        blocks for later heights wait for their parent."""
        try:
            block = Block.from_bytes(msg.block)
        except BlockError as exc:
            ctx.drop("bad_block", f"from {es}: {exc}")
            return
        if block.height <= self.chain.height:
            if self.chain.replica.chain.store.stored_hash(block.height) == block.hash:
                self.voters.setdefault(block.height, set()).add(es)
            return
        votes = self.accepted.setdefault(block.hash, (block, set()))[1]
        votes.add(es)
        self._append_ready(ctx)

    def _append_ready(self, ctx: NodeContext) -> None:
        majority = len(self.es) // 2 + 1
        while True:
            ready = [
                b
                for b, votes in self.accepted.values()
                if b.height == self.chain.height + 1 and len(votes) >= majority
            ]
            if not ready:
                return
            block = ready[0]
            self.voters[block.height] = set(self.accepted[block.hash][1])
            try:
                self.chain.append_block(block)
            except LedgerError as exc:
                log.error(
                    "block %s accepted by most ES does not append: %s", block.hash.hex()[:16], exc
                )
                return
            finally:
                self.accepted = {
                    h: e for h, e in self.accepted.items() if e[0].height > self.chain.height
                }

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The round's deadline ends the run (no block came); the rest as vanilla's."""
        if name == "deadline":
            log.error("round %d: no block by the deadline; ending the run", self.round)
            ctx.metrics.write("round_timeout", round=self.round)
            self._finish(ctx)
        else:
            super().on_timer(ctx, name)

    def _publish_task(self, ctx: NodeContext) -> None:
        """Nothing: BEES has no task transaction (M is configured in round 1's block)."""

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        """Start the next round at the ES; round 1 carries the initial model and the signed
        ``bees.configure {m}`` for its block."""
        self.round += 1
        self.round_started = ctx.now()
        deadline = ctx.config.learning.training.round_deadline_s
        initial = configure = None
        if self.round == 1:
            initial = weights_to_bytes(self.weights)
            tx = replica_of(ctx).transaction("bees.configure", {"m": self.params.top_m})
            configure = tx.to_bytes()
        ctx.multicast(self.es, RoundStart(self.round, deadline, initial, configure))
        # the ES's own deadlines end at 75%; then PoL turns, one per ES at most
        ctx.set_timer("deadline", deadline + self.params.pol_timeout_s * (len(self.es) + 1))

    def _on_block(self, ctx: NodeContext, block: Block) -> None:
        rounds = [int(t.payload["round"]) for t in block.txs if t.type == "bees.elect"]
        if not rounds or rounds[0] != self.round or self.recorded >= rounds[0]:
            return
        round_no = rounds[0]
        state = self.chain.replica.chain.state
        entry = contract.global_of(state, round_no)
        election = contract.election(state, round_no) or {}
        if entry is None:  # no update this round: the model is unchanged
            self._record(ctx, round_no, None, election)
            return
        peers = [str(entry["es"]), *(m for m in self.es if m != entry["es"])]
        key = bytes.fromhex(entry["blob"])

        def got(_key: bytes, data: bytes | None) -> None:
            if data is None:
                log.error("round %d: the global model is unavailable", round_no)
            self._record(ctx, round_no, data, {**election, "selected": entry["selected"]})

        ctx.emit(self.chain.replica.sync.fetch_blob(key, peers, ctx.now(), on_done=got))

    def _record(
        self, ctx: NodeContext, round_no: int, model: bytes | None, info: dict[str, Any]
    ) -> None:
        """Evaluate round `round_no`'s global model, record it, start the next round."""
        if round_no <= self.recorded:
            return
        self.recorded = round_no
        ctx.cancel_timer("deadline")
        if model is not None:
            try:
                self.weights = check_update(self.weights, weights_from_bytes(model))
            except ValueError as exc:
                log.error("round %d: bad global model: %s", round_no, exc)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        selected = list(info.get("selected", []))
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            contributors=len(selected),
            proposer=info.get("es"),
            rank=info.get("rank"),
            round_time_s=ctx.now() - self.round_started,
            elapsed_s=ctx.now() - self.run_started,
        )
        log.info(
            "round %d: accuracy %.4f (block by %s, rank %s, %d selected)",
            round_no,
            result.accuracy,
            info.get("es"),
            info.get("rank"),
            len(selected),
        )
        if round_no >= ctx.config.learning.training.rounds:
            self._finish(ctx)
        else:
            self._begin_round(ctx)

    def _finish(self, ctx: NodeContext) -> None:
        """Stop: no rewards (BEES pays none); the UEs keep no chain, so only the ES are
        waited for at the final height."""
        ctx.cancel_timer("deadline")
        self.absent |= self.ues
        # an ES that accepted neither of the last two blocks is presumed down (a lagging one
        # accepted the one before): not waited for
        height = self.chain.height
        recent = self.voters.get(height, set()) | self.voters.get(height - 1, set())
        if height >= 2:
            self.absent |= set(self.es) - recent
        self.final_deadline = ctx.now()
        self._send_stop(ctx)
