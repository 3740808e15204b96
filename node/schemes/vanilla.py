"""The `vanilla` scheme: hierarchical FedAvg, devices → their MEC → the publisher.

How it works
------------
Start-up: every node sends ``hello`` to the publisher (again each second until its first
``global``); the publisher starts round 1 when all have answered, or at the start-up
timeout with those that did.

Round r: the publisher sends ``global{round, weights, deadline_s}`` to every MEC; each MEC
forwards it to its devices with 80% of the deadline left (our choice: it leaves the rest
for the MEC→publisher leg). A device loads the weights, trains on its partition and sends
``update{round, weights, samples, loss, accuracy}`` to its MEC. The MEC averages what it
got (FedAvg weighted by samples) and sends ``partial{round, weights, samples,
contributors, missing}`` when all its devices answered or its deadline passed. The
publisher combines the partials (FedAvg over partials weighted by their sample totals
equals FedAvg over all devices), evaluates on the test set, records the round and starts
the next. A device that crashed or is too slow is left out of that round and logged.
After the last round the publisher sends ``stop`` to every node.

Each role checks who sent what (``global`` only from the publisher or one's own MEC,
``update`` only from one's own devices, for the current round, once) and that received
weights have the model's exact names, shapes and dtypes; anything else is dropped with
a counted reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from node.codec import Message
from node.learning.aggregate import fedavg
from node.learning.weights import Weights
from node.roles.base import NodeContext, Role
from node.roles.learner import Learner, check_update
from topologies import NodeKind

log = logging.getLogger(__name__)

PUBLISHER = "pub"
MEC_DEADLINE_FRACTION = 0.8
HELLO_INTERVAL_S = 1.0


def _devices_of(ctx: NodeContext, mec_id: str) -> list[str]:
    return [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE) if n.parent == mec_id]


class _Greeter(Role):
    """Says hello to the publisher until the first global model arrives."""

    greeted = False

    def start(self, ctx: NodeContext) -> None:
        """Announce this node."""
        self._hello(ctx)

    def _hello(self, ctx: NodeContext) -> None:
        if not self.greeted:
            ctx.send(PUBLISHER, "hello", {"kind": str(ctx.me.kind)})
            ctx.set_timer("hello", HELLO_INTERVAL_S)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Repeat the hello."""
        if name == "hello":
            self._hello(ctx)


class DeviceRole(_Greeter):
    """Trains on its partition whenever its MEC sends a global model."""

    kind = "device"

    def start(self, ctx: NodeContext) -> None:
        """Load this device's partition, then say hello."""
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        self.learner = Learner(
            ctx.config.learning, ctx.config.seed, (devices.index(ctx.node_id), len(devices))
        )
        self.reference = self.learner.weights()
        self.round = 0
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` from this device's MEC and `stop` from the publisher."""
        if msg.type == "stop" and msg.sender == PUBLISHER:
            ctx.stop()
        elif msg.type == "global" and msg.sender == ctx.me.parent:
            self._train(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _train(self, ctx: NodeContext, msg: Message) -> None:
        started = ctx.now()
        round_no = msg.payload.get("round")
        if not isinstance(round_no, int) or round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            self.learner.load(check_update(self.reference, msg.payload.get("weights")))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round = round_no
        result = self.learner.train(round_no)
        ctx.send(
            str(ctx.me.parent),
            "update",
            {
                "round": round_no,
                "weights": self.learner.weights(),
                "samples": result.samples,
                "loss": result.loss,
                "accuracy": result.accuracy,
            },
        )
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="local-train",
            samples=result.samples,
            train_time_s=result.seconds,
            round_time_s=ctx.now() - started,
        )


class MecRole(_Greeter):
    """Forwards the global model to its devices and their average to the publisher."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Find this MEC's devices, then say hello."""
        self.devices = _devices_of(ctx, ctx.node_id)
        self.round = 0
        self.round_started = 0.0
        self.reference: Weights | None = None
        self.updates: dict[str, tuple[Weights, float]] = {}
        self.forwarded = True
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` and `stop` from the publisher and `update` from own devices."""
        if msg.sender == PUBLISHER and msg.type == "stop":
            ctx.stop()
        elif msg.sender == PUBLISHER and msg.type == "global":
            self._on_global(ctx, msg)
        elif msg.type == "update" and msg.sender in self.devices:
            self._on_update(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_global(self, ctx: NodeContext, msg: Message) -> None:
        round_no, deadline = msg.payload.get("round"), msg.payload.get("deadline_s")
        weights = msg.payload.get("weights")
        if not (isinstance(round_no, int) and round_no > self.round):
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        if not isinstance(deadline, int | float) or deadline <= 0 or not isinstance(weights, dict):
            ctx.drop("bad_payload", "global without deadline or weights")
            return
        if self.reference is None:
            self.reference = {k: v for k, v in weights.items() if isinstance(v, np.ndarray)}
        try:
            check_update(self.reference, weights)
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round, self.round_started = round_no, ctx.now()
        self.updates, self.forwarded = {}, False
        my_deadline = MEC_DEADLINE_FRACTION * float(deadline)
        ctx.multicast(
            self.devices,
            "global",
            {"round": round_no, "weights": weights, "deadline_s": my_deadline},
        )
        ctx.set_timer("deadline", my_deadline)

    def _on_update(self, ctx: NodeContext, msg: Message) -> None:
        p = msg.payload
        if p.get("round") != self.round or self.forwarded or msg.sender in self.updates:
            ctx.drop("stale_round", f"update round {p.get('round')!r} from {msg.sender}")
            return
        samples = p.get("samples")
        if not isinstance(samples, int) or samples <= 0 or self.reference is None:
            ctx.drop("bad_payload", f"update from {msg.sender} without a sample count")
            return
        try:
            weights = check_update(self.reference, p.get("weights"))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.updates[msg.sender] = (weights, float(samples))
        if len(self.updates) == len(self.devices):
            self._forward(ctx)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The round deadline: forward what arrived."""
        if name == "deadline" and not self.forwarded:
            self._forward(ctx)
        super().on_timer(ctx, name)

    def _forward(self, ctx: NodeContext) -> None:
        ctx.cancel_timer("deadline")
        self.forwarded = True
        contributors = sorted(self.updates)
        missing = sorted(set(self.devices) - set(self.updates))
        if missing:
            log.warning(
                "round %d: left out %s (no update before the deadline)", self.round, missing
            )
        samples = sum(w for _, w in self.updates.values())
        payload: dict[str, Any] = {
            "round": self.round,
            "samples": int(samples),
            "contributors": contributors,
            "missing": missing,
        }
        if self.updates:
            payload["weights"] = fedavg(list(self.updates.values()))
        ctx.send(PUBLISHER, "partial", payload)
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(samples),
            contributors=len(contributors),
            missing=missing,
            round_time_s=ctx.now() - self.round_started,
        )


class PublisherRole(Role):
    """Publishes the task, aggregates the MECs' partials, evaluates, and ends the run."""

    kind = "publisher"

    def start(self, ctx: NodeContext) -> None:
        """Build the initial global model and wait for every node's hello."""
        self.learner = Learner(ctx.config.learning, ctx.config.seed)
        self.weights = self.learner.weights()
        self.expected = {n.id for n in ctx.topology.daemons()} - {ctx.node_id}
        self.mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
        self.ready: set[str] = set()
        self.round = 0
        self.round_started = 0.0
        self.partials: dict[str, dict[str, Any]] = {}
        self.run_started = ctx.now()
        ctx.set_timer("startup", ctx.config.startup_timeout_s)
        log.info("waiting for %d nodes", len(self.expected))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `hello` from any node and `partial` from MECs."""
        if msg.type == "hello" and msg.sender in self.expected:
            self._on_hello(ctx, msg.sender)
        elif msg.type == "partial" and msg.sender in self.mecs:
            self._on_partial(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_hello(self, ctx: NodeContext, sender: str) -> None:
        if self.round == 0 and sender not in self.ready:
            self.ready.add(sender)
            if self.ready == self.expected:
                ctx.cancel_timer("startup")
                ctx.metrics.write("started", startup_s=ctx.now() - self.run_started)
                self._begin_round(ctx)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Start-up timeout and round deadline."""
        if name == "startup" and self.round == 0:
            missing = sorted(self.expected - self.ready)
            log.warning("start-up timeout: %d nodes never said hello: %s", len(missing), missing)
            if not any(m in self.ready for m in self.mecs):
                log.error("no MEC is up; ending the run")
                self._finish(ctx)
                return
            self._begin_round(ctx)
        elif name == "deadline":
            self._aggregate(ctx)

    def _begin_round(self, ctx: NodeContext) -> None:
        self.round += 1
        self.round_started = ctx.now()
        self.partials = {}
        deadline = ctx.config.learning.round_deadline_s
        ctx.multicast(
            self.mecs,
            "global",
            {"round": self.round, "weights": self.weights, "deadline_s": deadline},
        )
        ctx.set_timer("deadline", deadline)

    def _on_partial(self, ctx: NodeContext, msg: Message) -> None:
        p = msg.payload
        if p.get("round") != self.round or msg.sender in self.partials:
            ctx.drop("stale_round", f"partial round {p.get('round')!r} from {msg.sender}")
            return
        samples = p.get("samples")
        if not isinstance(samples, int) or samples < 0:
            ctx.drop("bad_payload", f"partial from {msg.sender} without a sample count")
            return
        if samples > 0:
            try:
                p = {**p, "weights": check_update(self.weights, p.get("weights"))}
            except ValueError as exc:
                ctx.drop("bad_model", str(exc))
                return
        self.partials[msg.sender] = p
        if len(self.partials) == len(self.mecs):
            self._aggregate(ctx)

    def _aggregate(self, ctx: NodeContext) -> None:
        ctx.cancel_timer("deadline")
        usable = [
            (p["weights"], float(p["samples"])) for p in self.partials.values() if p["samples"]
        ]
        contributors = sorted(c for p in self.partials.values() for c in p.get("contributors", []))
        missing_mecs = sorted(set(self.mecs) - set(self.partials))
        if usable:
            self.weights = fedavg(usable)
        else:
            log.warning("round %d: no update arrived; the global model is unchanged", self.round)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        round_time = ctx.now() - self.round_started
        ctx.metrics.write(
            "round",
            round=self.round,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            samples=int(sum(w for _, w in usable)),
            contributors=len(contributors),
            missing=missing_mecs
            + sorted(m for p in self.partials.values() for m in p.get("missing", [])),
            round_time_s=round_time,
            elapsed_s=ctx.now() - self.run_started,
        )
        log.info(
            "round %d: accuracy %.4f loss %.4f (%d devices, %.2fs)",
            self.round,
            result.accuracy,
            result.loss,
            len(contributors),
            round_time,
        )
        if self.round >= ctx.config.learning.rounds:
            self._finish(ctx)
        else:
            self._begin_round(ctx)

    def _finish(self, ctx: NodeContext) -> None:
        ctx.multicast(sorted(self.expected), "stop", {})
        ctx.metrics.write("finished", rounds=self.round, elapsed_s=ctx.now() - self.run_started)
        ctx.stop()


ROLES: dict[NodeKind, Callable[[], Role]] = {
    NodeKind.DEVICE: DeviceRole,
    NodeKind.MEC: MecRole,
    NodeKind.PUBLISHER: PublisherRole,
}
