"""The vanilla MEC server: forwards the global model, averages or forwards its devices' updates."""

from __future__ import annotations

import logging

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.core.encoding import sha256
from node.core.finality import Committee
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import Weights, weights_from_bytes
from node.roles.base import NodeContext
from node.roles.learner import check_update
from node.roles.threats import edge_fault, edge_output
from node.roles.validator import PbftValidator
from node.schemes.vanilla.common import (
    MEC_DEADLINE_FRACTION,
    PUBLISHER,
    Greeter,
    devices_of,
    parse_update_tx,
    replica_of,
    stop_after_last_block,
)
from node.schemes.vanilla.messages import (
    DeviceUpdate,
    GlobalModel,
    IndividualUpdate,
    Partial,
    PbftMessage,
    Stop,
    Submit,
    split_partial,
)

log = logging.getLogger(__name__)


class MecRole(Greeter):
    """Forwards the global model to its devices and their average to the publisher."""

    kind = "mec"
    update_tx_type = "task.record_update"  # what a device's update transaction must be

    def start(self, ctx: NodeContext) -> None:
        """Find this MEC's devices, then say hello."""
        self.devices = devices_of(ctx, ctx.node_id)
        self.round = 0
        self.round_started = 0.0
        self.reference: Weights | None = None
        self.global_weights: Weights = {}
        agg = ctx.config.aggregator
        self.strategy = make_strategy(agg.name, agg.params)
        self.individual = self.strategy.needs.individual
        self.updates: dict[str, tuple[Weights, float]] = {}
        self.txs: dict[str, bytes] = {}
        self.forwarded = True
        self.validator: PbftValidator | None = None
        replica = replica_of(ctx)
        finality = replica.chain.config.finality
        if isinstance(finality, Committee) and replica.key.public_key in finality.members:
            # a member of the task chain's committee: order the publisher's submissions by PBFT
            roster = ctx.config.roster
            ids = {nid: bytes.fromhex(key) for nid, key in roster.items()}
            self.validator = PbftValidator(
                ctx,
                replica,
                committee_replicas(finality, ids),
                proposer=bytes.fromhex(roster[PUBLISHER]),
                forward_to=[*self.devices, PUBLISHER],
            )
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` and `stop` from the publisher and `update` from own devices."""
        body = msg.payload
        if msg.sender == PUBLISHER and isinstance(body, Stop):
            stop_after_last_block(ctx, body)
        elif msg.sender == PUBLISHER and isinstance(body, GlobalModel):
            self._on_global(ctx, body)
        elif isinstance(body, DeviceUpdate) and msg.sender in self.devices:
            self._on_update(ctx, msg.sender, body)
        elif self.validator is not None and isinstance(body, PbftMessage):
            self.validator.on_pbft(ctx, msg.sender, body)
        elif self.validator is not None and isinstance(body, Submit) and msg.sender == PUBLISHER:
            self.validator.on_submit(ctx, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        round_no, deadline, model = msg.round, msg.deadline_s, msg.model
        if round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            weights = weights_from_bytes(model)
            if self.reference is None:
                self.reference = weights
            self.global_weights = check_update(self.reference, weights)
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round, self.round_started = round_no, ctx.now()
        self.updates, self.txs, self.forwarded = {}, {}, False
        my_deadline = MEC_DEADLINE_FRACTION * deadline
        # the publisher's encoded model goes on as it came (no re-encoding per hop)
        ctx.multicast(self.devices, GlobalModel(round_no, model, my_deadline))
        ctx.set_timer("deadline", my_deadline)
        # kept as the blob the next block's task.record_global names (no blob.get for it);
        # a light replica keeps no global models
        replica = replica_of(ctx)
        if not replica.light:
            replica.blobs.put_behind(sha256(model), model)

    def _on_update(self, ctx: NodeContext, sender: str, update: DeviceUpdate) -> None:
        if update.round != self.round or self.forwarded or sender in self.updates:
            ctx.drop("stale_round", f"update round {update.round!r} from {sender}")
            return
        if self.reference is None:
            ctx.drop("stale_round", "update before any global model")
            return
        try:
            tx, blob = parse_update_tx(ctx, sender, update, self.round, self.update_tx_type)
        except ValueError as exc:
            ctx.drop("bad_tx", f"{sender}: {exc}")
            return
        try:
            weights = check_update(self.reference, weights_from_bytes(blob))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.updates[sender] = (weights, float(tx.payload["samples"]))
        self.txs[sender] = tx.to_bytes()
        if len(self.updates) == len(self.devices):
            self._forward(ctx, "all_answered")
        # kept after the partial left (the last update's write is off the round's path; the
        # device keeps its own copy, so a MEC killed in between loses nothing on chain)
        replica_of(ctx).blobs.put_behind(tx.payload["blob"], blob)  # hashed by parse_update_tx

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The round deadline: forward what arrived (and PBFT's timers)."""
        if self.validator is not None and self.validator.on_timer(ctx, name):
            return
        if name == "deadline" and not self.forwarded:
            self._forward(ctx, "deadline")
        super().on_timer(ctx, name)

    def send_partial(self, ctx: NodeContext, partial: Partial) -> int:
        """Send `partial` to the publisher, in parts where its updates forwarded one by one
        would not fit one message (300 devices' updates of a 420 KB model are 127 MB):
        each part at most half of ``max_message_bytes`` (our choice: room for the envelope
        and the encoding); returns how many messages went."""
        parts = split_partial(partial, ctx.config.max_message_bytes // 2)
        for part in parts:
            ctx.send(PUBLISHER, part)
        return len(parts)

    def _forward(self, ctx: NodeContext, why: str) -> None:
        """Send the round's partial; `why`: "all_answered" or "deadline" (in the metrics)."""
        ctx.cancel_timer("deadline")
        self.forwarded = True
        missing = sorted(set(self.devices) - set(self.updates))
        if missing:
            log.warning(
                "round %d: left out %s (no update before the deadline)", self.round, missing
            )
        updates = [Update(w, n, None, d) for d, (w, n) in sorted(self.updates.items())]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        contributors = [u.sender for u in updates]
        samples = sum(u.samples for u in updates)
        individual: tuple[IndividualUpdate, ...] | None = None
        average: Weights | None = None
        if updates and self.individual:
            individual = tuple(
                IndividualUpdate(
                    u.sender,
                    edge_output(ctx.config, self.round, dict(u.weights)),
                    int(u.samples),
                )
                for u in updates
            )
        elif updates:
            average = dict(self.strategy.partial(updates).weights)
            average = edge_output(ctx.config, self.round, average)
        partial = Partial(
            self.round,
            int(samples),
            tuple(contributors),
            tuple(missing),
            tuple(self.txs[c] for c in sorted(self.txs)),
            weights=average,
            updates=individual,
        )
        parts = self.send_partial(ctx, partial)
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(samples),
            contributors=len(contributors),
            missing=missing,
            forwarded_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - self.round_started,
            **({"parts": parts} if parts > 1 else {}),
        )
