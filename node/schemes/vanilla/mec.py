"""The vanilla MEC server: forwards the global model, averages or forwards its devices' updates."""

from __future__ import annotations

import logging
from typing import Any

from node.codec import Message
from node.core.encoding import sha256
from node.learning.aggregate import fedavg
from node.learning.aggregators import (
    Update,
)
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
from topologies import NodeKind

log = logging.getLogger(__name__)


class MecRole(Greeter):
    """Forwards the global model to its devices and their average to the publisher."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Find this MEC's devices, then say hello."""
        self.devices = devices_of(ctx, ctx.node_id)
        self.round = 0
        self.round_started = 0.0
        self.reference: Weights | None = None
        self.global_weights: Weights = {}
        self.individual = ctx.config.aggregator["name"] != "fedavg"
        self.updates: dict[str, tuple[Weights, float]] = {}
        self.txs: dict[str, bytes] = {}
        self.forwarded = True
        self.validator: PbftValidator | None = None
        if ctx.config.consensus == "pbft":
            roster = ctx.config.roster
            mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
            self.validator = PbftValidator(
                ctx,
                replica_of(ctx),
                [(m, bytes.fromhex(roster[m])) for m in mecs],
                proposer=bytes.fromhex(roster[PUBLISHER]),
                forward_to=[*self.devices, PUBLISHER],
            )
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` and `stop` from the publisher and `update` from own devices."""
        if msg.sender == PUBLISHER and msg.type == "stop":
            stop_after_last_block(ctx, msg)
        elif msg.sender == PUBLISHER and msg.type == "global":
            self._on_global(ctx, msg)
        elif msg.type == "update" and msg.sender in self.devices:
            self._on_update(ctx, msg)
        elif self.validator is not None and msg.type == "pbft":
            self.validator.on_pbft(ctx, msg)
        elif self.validator is not None and msg.type == "submit" and msg.sender == PUBLISHER:
            self.validator.on_submit(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_global(self, ctx: NodeContext, msg: Message) -> None:
        round_no, deadline = msg.payload.get("round"), msg.payload.get("deadline_s")
        model = msg.payload.get("model")
        if not (isinstance(round_no, int) and round_no > self.round):
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        if not isinstance(deadline, int | float) or deadline <= 0 or not isinstance(model, bytes):
            ctx.drop("bad_payload", "global without deadline or model")
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
        my_deadline = MEC_DEADLINE_FRACTION * float(deadline)
        # the publisher's encoded model goes on as it came (no re-encoding per hop)
        ctx.multicast(
            self.devices, "global", {"round": round_no, "model": model, "deadline_s": my_deadline}
        )
        ctx.set_timer("deadline", my_deadline)
        # kept as the blob the next block's task.record_global names (no blob.get for it)
        replica_of(ctx).blobs.put_behind(sha256(model), model)

    def _on_update(self, ctx: NodeContext, msg: Message) -> None:
        p = msg.payload
        if p.get("round") != self.round or self.forwarded or msg.sender in self.updates:
            ctx.drop("stale_round", f"update round {p.get('round')!r} from {msg.sender}")
            return
        if self.reference is None:
            ctx.drop("stale_round", "update before any global model")
            return
        try:
            tx, blob = parse_update_tx(ctx, msg, self.round)
        except ValueError as exc:
            ctx.drop("bad_tx", f"{msg.sender}: {exc}")
            return
        try:
            weights = check_update(self.reference, weights_from_bytes(blob))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        replica_of(ctx).blobs.put_behind(tx.payload["blob"], blob)  # hashed by parse_update_tx
        self.updates[msg.sender] = (weights, float(tx.payload["samples"]))
        self.txs[msg.sender] = tx.to_bytes()
        if len(self.updates) == len(self.devices):
            self._forward(ctx, "all_answered")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The round deadline: forward what arrived (and PBFT's timers)."""
        if self.validator is not None and self.validator.on_timer(ctx, name):
            return
        if name == "deadline" and not self.forwarded:
            self._forward(ctx, "deadline")
        super().on_timer(ctx, name)

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
        payload: dict[str, Any] = {
            "round": self.round,
            "samples": int(samples),
            "contributors": contributors,
            "missing": missing,
            "txs": [self.txs[c] for c in sorted(self.txs)],
        }
        if updates and self.individual:
            payload["updates"] = [
                {
                    "node": u.sender,
                    "weights": edge_output(ctx.config, self.round, dict(u.weights)),
                    "samples": int(u.samples),
                }
                for u in updates
            ]
        elif updates:
            average = fedavg([(u.weights, u.samples) for u in updates])
            payload["weights"] = edge_output(ctx.config, self.round, average)
        ctx.send(PUBLISHER, "partial", payload)
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(samples),
            contributors=len(contributors),
            missing=missing,
            forwarded_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - self.round_started,
        )
