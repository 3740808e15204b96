"""The SFL device: trains (D-SGD), clips and noises its update (local DP, when the scenario's
``privacy:`` says), optionally evaluates it against the announced threshold, submits it to
the contract (``sfl.submit_model_update``), and calls ``finalize_contract()`` at the end."""

from __future__ import annotations

import logging

from node.codec import Message
from node.core.tx import Transaction
from node.learning.weights import Weights
from node.roles.base import NodeContext
from node.schemes.sfl.common import params_of
from node.schemes.sfl.messages import Finalize, TaskDone
from node.schemes.vanilla.common import PUBLISHER, replica_of
from node.schemes.vanilla.device import DeviceRole

log = logging.getLogger(__name__)


class SflDeviceRole(DeviceRole):
    """Vanilla's device with the SFL contract's transactions and self-evaluation."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start, and this run's threshold (the one `sfl.init` records)."""
        self.params = params_of(ctx)
        self.finalized = False
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """``sfl.done`` from the publisher: call finalize_contract(); the rest is vanilla's."""
        if isinstance(msg.payload, TaskDone) and msg.sender == PUBLISHER:
            if not self.finalized:
                self.finalized = True
                tx = replica_of(ctx).transaction("sfl.finalize_contract", {})
                ctx.send(PUBLISHER, Finalize(tx.to_bytes()))
            return
        super().on_message(ctx, msg)

    def update_transaction(
        self, ctx: NodeContext, round_no: int, blob: bytes, size: int, samples: int
    ) -> Transaction:
        """``sfl.submit_model_update``: the noised update's hash, its samples, the payee
        (this device: our choice, the paper's payee address is the participant's)."""
        payload = {
            "round": round_no,
            "blob": blob,
            "size": size,
            "samples": samples,
            "payee": ctx.node_id,
        }
        return replica_of(ctx).transaction("sfl.submit_model_update", payload)

    def withhold_reason(self, ctx: NodeContext, round_no: int, sent: Weights) -> str | None:
        """With ``self_evaluate``: the update's accuracy on this device's own training data
        (it holds no test data: our choice) below the threshold keeps it from being
        submitted (the paper's gas saving, section IV-B)."""
        if not self.params.self_evaluate:
            return None
        self.learner.load(sent)
        accuracy = self.learner.evaluate_on(self.learner.train_x, self.learner.train_y).accuracy
        if accuracy >= self.params.threshold:
            return None
        return f"self-evaluation {accuracy:.4f} < threshold {self.params.threshold}"
