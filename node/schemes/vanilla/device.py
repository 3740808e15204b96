"""The vanilla device: trains on its partition when its MEC sends the global model.

Its round record carries, besides the training's numbers, when (wall-clock ms) it received
the round's global model (``global_received_ms``: when the model reached the role, which
for schemes that build it from a block, blockfl, is when the block's blobs were in) and
when it handed its update to the transport (``update_sent_ms``; absent when the update was
withheld): metrics.csv's round timing columns (`orchestrator.collect`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from node.codec import Message
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.roles.threats import DeviceThreats
from node.schemes.vanilla.common import (
    PUBLISHER,
    Greeter,
    replica_of,
    stop_after_last_block,
)
from node.schemes.vanilla.messages import DeviceUpdate, GlobalModel, Stop
from topologies import NodeKind

if TYPE_CHECKING:  # torch is imported by the learner
    from node.learning.train import TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Training:
    """One round's training: its global model's weights and when the model came (`started`:
    the loop's monotonic clock; `received_ms`: the wall clock, ms)."""

    round: int
    global_weights: Weights
    started: float
    received_ms: float = 0.0


class DeviceRole(Greeter):
    """Trains on its partition whenever its MEC sends a global model."""

    kind = "device"

    def start(self, ctx: NodeContext) -> None:
        """Load this device's partition, then say hello."""
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        self.learner = Learner(
            ctx.config.learning, ctx.config.seed, (devices.index(ctx.node_id), len(devices))
        )
        self.reference = self.learner.weights()
        self.threats = DeviceThreats(ctx.config, self.learner)
        self.round = 0
        self._emd: tuple[object, float] | None = None  # (labels, their EMD): one per data set
        self._training: _Training | None = None  # the round training off the loop
        self._next: _Training | None = None  # a newer round's, to train after it
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` from this device's MEC and `stop` from the publisher."""
        body = msg.payload
        if isinstance(body, Stop) and msg.sender == PUBLISHER:
            stop_after_last_block(ctx, body)
        elif isinstance(body, GlobalModel) and msg.sender == ctx.me.parent:
            self._train(ctx, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def send_update(self, ctx: NodeContext, update: DeviceUpdate) -> None:
        """Where this device's update goes: to its MEC (a scheme that spreads updates
        otherwise overrides this)."""
        ctx.send(str(ctx.me.parent), update)

    def withhold_reason(self, ctx: NodeContext, round_no: int, sent: Weights) -> str | None:
        """Why this device keeps round `round_no`'s update (`sent`: the weights it would
        send) to itself, or None to send it (always, here; SFL's self-evaluation says)."""
        return None

    def update_transaction(
        self, ctx: NodeContext, round_no: int, blob: bytes, size: int, samples: int
    ) -> Transaction:
        """The signed transaction that travels with this device's update (`blob`: the hash
        of its weights); a scheme with another contract overrides this."""
        payload = {
            "task_id": ctx.config.task_id,
            "round": round_no,
            "blob": blob,
            "size": size,
            "samples": samples,
        }
        return replica_of(ctx).transaction("task.record_update", payload)

    def _label_emd(self, y: np.ndarray) -> float:
        """The EMD of `y`'s labels, computed once per label array (an honest device trains
        on the same one every round)."""
        if self._emd is None or self._emd[0] is not y:
            self._emd = (y, self.threats.label_emd(y))
        return self._emd[1]

    def _train(self, ctx: NodeContext, msg: GlobalModel) -> None:
        """Train on a newer round's global model, off the loop (`ctx.run_background`): the
        node goes on storing blocks and relaying while it trains. A newer round that comes
        while it trains is trained next (the one in training is then stale: its result is
        dropped, not sent)."""
        started, received_ms = ctx.now(), ctx.wall_ms()
        round_no, model = msg.round, msg.model
        if round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            global_weights = check_update(self.reference, weights_from_bytes(model))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round = round_no
        # the global model, which the block recording the last round names: in place before
        # that block comes (it comes while this device trains), so that no blob.get is
        # needed for it; a light replica keeps no global models
        replica = replica_of(ctx)
        if not replica.light:
            replica.blobs.put_behind(sha256(model), model)
        job = _Training(round_no, global_weights, started, received_ms)
        if self._training is not None:
            self._next = job  # after the one in training (which is now stale)
            return
        self._start_training(ctx, job)

    def _start_training(self, ctx: NodeContext, job: _Training) -> None:
        self._training = job
        x, y, behaviour = self.threats.training_data(job.round)
        learner = self.learner

        def train() -> TrainResult:  # on the worker: only the learner, which nothing else
            learner.load(job.global_weights)  # touches while it trains
            return learner.train(job.round, x, y)

        def done(result: TrainResult | None, error: BaseException | None) -> None:
            self._training = None
            if error is not None:
                log.error("round %d: training failed: %s", job.round, error)
                ctx.drop("training_failed", f"round {job.round}: {error}")
            elif job.round != self.round:
                ctx.drop("stale_training", f"round {job.round}, now round {self.round}")
            elif result is not None:
                self._send_trained(ctx, job, result, behaviour, y)
            following, self._next = self._next, None
            if following is not None:
                self._start_training(ctx, following)

        ctx.run_background(train, done)

    def _send_trained(
        self, ctx: NodeContext, job: _Training, result: TrainResult, behaviour: str, y: np.ndarray
    ) -> None:
        """Record and send the update trained in round `job.round`."""
        round_no, global_weights = job.round, job.global_weights
        sent = self.threats.outgoing(round_no, self.learner.weights(), global_weights)
        withheld = self.withhold_reason(ctx, round_no, sent)
        sent_ms: float | None = None
        if withheld is not None:
            log.info("round %d: update withheld: %s", round_no, withheld)
        else:
            replica = replica_of(ctx)
            blob = weights_to_bytes(sent)
            key = sha256(blob)
            tx = self.update_transaction(ctx, round_no, key, len(blob), result.samples)
            # in place before the transaction naming it leaves (its fsync comes later)
            replica.blobs.put_behind(key, blob)
            sent_ms = ctx.wall_ms()  # handed to the transport now (signed and queued)
            self.send_update(
                ctx, DeviceUpdate(round_no, blob, tx.to_bytes(), result.loss, result.accuracy)
            )
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="local-train",
            samples=result.samples,
            behaviour=behaviour,
            emd=self._label_emd(y),
            train_time_s=result.seconds,
            round_time_s=ctx.now() - job.started,
            global_received_ms=job.received_ms,
            **({} if withheld is None else {"withheld": withheld}),
            **({} if sent_ms is None else {"update_sent_ms": sent_ms}),
        )
