"""The SFL MEC: relays its devices' updates one by one (vanilla's MEC), and, as a member of
the task chain's PBFT committee, orders the blocks and evaluates every round (the paper's
miners running the contract's evaluation)."""

from __future__ import annotations

import logging

from node.codec import Message
from node.core.tx import Transaction
from node.roles.base import NodeContext
from node.roles.learner import Learner
from node.schemes.sfl.common import params_of
from node.schemes.sfl.evaluation import Evaluator
from node.schemes.sfl.messages import EvaluateRequest, EvaluatorVote
from node.schemes.vanilla.common import PUBLISHER, replica_of
from node.schemes.vanilla.mec import MecRole
from topologies import NodeKind

log = logging.getLogger(__name__)


class SflMecRole(MecRole):
    """Forwards every update unaveraged (the contract judges each); a PBFT member also
    evaluates when the publisher asks, once its own chain holds the block asked about."""

    update_tx_type = "sfl.submit_model_update"

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; updates go on one by one; an evaluator if a committee member."""
        super().start(ctx)
        self.individual = True
        self.evaluator: Evaluator | None = None
        self.waiting: list[EvaluateRequest] = []
        if self.validator is not None:
            replica = replica_of(ctx)
            others = [n.id for n in ctx.topology.of_kind(NodeKind.MEC) if n.id != ctx.node_id]
            learner = Learner(ctx.config.learning, ctx.config.seed)
            self.evaluator = Evaluator(ctx, replica, learner, params_of(ctx), [PUBLISHER, *others])
            replica.chain.subscribe(lambda _block: self._serve(ctx))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """``sfl.evaluate`` from the publisher (evaluators); the rest is vanilla's."""
        body = msg.payload
        if isinstance(body, EvaluateRequest) and msg.sender == PUBLISHER:
            if self.evaluator is None:
                ctx.drop("unexpected", "sfl.evaluate to a MEC that is no evaluator")
                return
            self.waiting.append(body)
            self._serve(ctx)
        else:
            super().on_message(ctx, msg)

    def _serve(self, ctx: NodeContext) -> None:
        """Evaluate each request whose block this replica holds."""
        height = replica_of(ctx).height
        ready = [r for r in self.waiting if r.height <= height]
        self.waiting = [r for r in self.waiting if r.height > height]
        for request in ready:
            assert self.evaluator is not None
            self.evaluator.evaluate(
                ctx, request.round, request.phase, lambda tx: self._vote(ctx, tx)
            )

    def _vote(self, ctx: NodeContext, tx: Transaction) -> None:
        ctx.send(PUBLISHER, EvaluatorVote(tx.to_bytes()))
