"""The vanilla device: trains on its partition when its MEC sends the global model."""

from __future__ import annotations

import logging

import numpy as np

from node.codec import Message
from node.core.encoding import sha256
from node.learning.weights import weights_from_bytes, weights_to_bytes
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

log = logging.getLogger(__name__)


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

    def _label_emd(self, y: np.ndarray) -> float:
        """The EMD of `y`'s labels, computed once per label array (an honest device trains
        on the same one every round)."""
        if self._emd is None or self._emd[0] is not y:
            self._emd = (y, self.threats.label_emd(y))
        return self._emd[1]

    def _train(self, ctx: NodeContext, msg: GlobalModel) -> None:
        started = ctx.now()
        round_no, model = msg.round, msg.model
        if round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            global_weights = check_update(self.reference, weights_from_bytes(model))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.learner.load(global_weights)
        self.greeted = True
        self.round = round_no
        x, y, behaviour = self.threats.training_data(round_no)
        result = self.learner.train(round_no, x, y)
        sent = self.threats.outgoing(round_no, self.learner.weights(), global_weights)
        replica = replica_of(ctx)
        blob = weights_to_bytes(sent)
        key = sha256(blob)
        tx = replica.transaction(
            "task.record_update",
            {
                "task_id": ctx.config.task_id,
                "round": round_no,
                "blob": key,
                "size": len(blob),
                "samples": result.samples,
            },
        )
        # in place before the transaction naming it leaves (its fsync comes later)
        replica.blobs.put_behind(key, blob)
        self.send_update(
            ctx, DeviceUpdate(round_no, blob, tx.to_bytes(), result.loss, result.accuracy)
        )
        # after the update: the global model, which the next block's task.record_global
        # names (so that no blob.get is needed for it); a light replica keeps no global models
        if not replica.light:
            replica.blobs.put_behind(sha256(model), model)
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
            round_time_s=ctx.now() - started,
        )
