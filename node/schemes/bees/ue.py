"""The BEES user equipment (UE): per round, decides to train locally, offload its data to its
edge server, or sit out (`model.decide`), does it, and accounts its energy (eqs. 7-9)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from node.codec import Message
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext, Role
from node.roles.learner import Learner, check_update
from node.roles.threats import DeviceThreats
from node.schemes.bees.common import PUBLISHER, always_local, ctx_profiles, params_of
from node.schemes.bees.messages import MAX_PAD_BYTES, LocalUpdate, OffloadedData, TransferAck
from node.schemes.bees.model import LOCAL, Decision, decide, decide_bei, transfer_energy_j
from node.schemes.vanilla.common import HELLO_INTERVAL_S
from node.schemes.vanilla.messages import GlobalModel, Hello, Stop
from topologies import NodeKind

if TYPE_CHECKING:
    from node.learning.train import TrainResult

log = logging.getLogger(__name__)

DECISIONS = {0: "local", 1: "offload", None: "sit_out"}
FRAME_MARGIN_BYTES = 64 * 1024  # the envelope and the other fields of a bees.offload


@dataclass(frozen=True)
class Sent:
    """A round's transfer awaiting its ES's receipt; `received_ms` when the round's global
    model came and `sent_ms` when the transfer was handed to the transport (wall-clock ms;
    None: nothing was sent)."""

    round: int
    decision: Decision
    started: float
    nbytes: int
    train_time_s: float | None
    received_ms: float | None = None
    sent_ms: float | None = None


class UeRole(Role):
    """A UE: trains or offloads each round as its latency/energy model decides."""

    kind = "device"

    def start(self, ctx: NodeContext) -> None:
        """Load this UE's partition and profile, then say hello until the first model."""
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        self.learner = Learner(
            ctx.config.learning, ctx.config.seed, (devices.index(ctx.node_id), len(devices))
        )
        self.reference = self.learner.weights()
        profiles = ctx_profiles(ctx)
        self.model = profiles.model
        self.profile = profiles.ue[ctx.node_id]
        self.es_profile = profiles.es[str(ctx.me.parent)]
        self.offload_scale = params_of(ctx).offload_scale
        self.decide = decide_bei if always_local(ctx) else decide
        self.battery_j = self.profile.battery_j
        self.round = 0
        self.greeted = False
        self.sent: dict[int, Sent] = {}
        self.global_weights: Weights = self.reference
        self.threats = DeviceThreats(ctx.config, self.learner)
        self.behaviour = ""
        self.received_ms: float | None = None  # when the latest global model came (wall ms)
        self._hello(ctx)

    def _hello(self, ctx: NodeContext) -> None:
        if not self.greeted:
            ctx.send(PUBLISHER, Hello(str(ctx.me.kind)))
            ctx.set_timer("hello", HELLO_INTERVAL_S)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Repeat the hello."""
        if name == "hello":
            self._hello(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """``global`` and ``bees.ack`` from this UE's ES, ``stop`` from the publisher."""
        body = msg.payload
        if isinstance(body, Stop) and msg.sender == PUBLISHER:
            ctx.stop()  # a UE keeps no chain: nothing to catch up
        elif isinstance(body, GlobalModel) and msg.sender == ctx.me.parent:
            self._on_global(ctx, body)
        elif isinstance(body, TransferAck) and msg.sender == ctx.me.parent:
            self._on_ack(ctx, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        started, received_ms = ctx.now(), ctx.wall_ms()
        if msg.round <= self.round:
            ctx.drop("stale_round", f"global round {msg.round!r}")
            return
        try:
            weights = check_update(self.reference, weights_from_bytes(msg.model))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round = round_no = msg.round
        self.global_weights, self.received_ms = weights, received_ms
        x, y, self.behaviour = self.threats.training_data(round_no)  # honest: its own data
        samples = len(y)
        decision = self.decide(self.profile, self.es_profile, samples, self.model, self.battery_j)
        log.info("round %d: %s (%s)", round_no, DECISIONS[decision.d], decision.reason)
        if decision.d is None:
            self._record(ctx, Sent(round_no, decision, started, 0, None, self.received_ms), 0.0)
        elif decision.d == LOCAL:
            self._train(ctx, round_no, (x, y), decision, started)
        else:
            self._offload(ctx, round_no, (x, y), decision, started)

    def _train(
        self,
        ctx: NodeContext,
        round_no: int,
        data: tuple[np.ndarray, np.ndarray],
        decision: Decision,
        started: float,
    ) -> None:
        """Train on `data` off the loop and send the weights (a malicious UE's attack on its
        update applies here, `DeviceThreats.outgoing`)."""
        learner, weights, received_ms = self.learner, self.global_weights, self.received_ms

        def train() -> TrainResult:
            learner.load(weights)
            return learner.train(round_no, *data)

        def done(result: TrainResult | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                ctx.drop("training_failed", f"round {round_no}: {error}")
            elif round_no != self.round:
                ctx.drop("stale_training", f"round {round_no}, now round {self.round}")
            else:
                sent = self.threats.outgoing(round_no, learner.weights(), weights)
                blob = weights_to_bytes(sent)
                sent_ms = ctx.wall_ms()
                ctx.send(str(ctx.me.parent), LocalUpdate(round_no, blob, result.samples, sent_ms))
                self.sent[round_no] = Sent(
                    round_no, decision, started, len(blob), result.seconds, received_ms, sent_ms
                )

        ctx.run_background(train, done)

    def _offload(
        self,
        ctx: NodeContext,
        round_no: int,
        data: tuple[np.ndarray, np.ndarray],
        decision: Decision,
        started: float,
    ) -> None:
        """Send the real training samples (a malicious UE's attacked data, e.g. flipped
        labels), padded up to offload_scale x the model's offload size (our choice: the
        samples are never cut, the ES must train on all of them)."""
        x = np.ascontiguousarray(data[0], dtype=np.float32)
        y = np.ascontiguousarray(data[1], dtype=np.int64)
        room = ctx.config.max_message_bytes - x.nbytes - y.nbytes - FRAME_MARGIN_BYTES
        if room < 0:  # the samples alone do not fit in one message: train here instead
            log.error(
                "round %d: %d samples exceed the message limit; training locally", round_no, len(y)
            )
            self._train(ctx, round_no, data, decision, started)
            return
        target = int(self.offload_scale * self.model.offload_bytes)
        pad = bytes(min(MAX_PAD_BYTES, room, max(0, target - x.nbytes - y.nbytes)))
        sent_ms = ctx.wall_ms()
        ctx.send(str(ctx.me.parent), OffloadedData(round_no, x, y, pad, sent_ms))
        nbytes = x.nbytes + y.nbytes + len(pad)
        self.sent[round_no] = Sent(
            round_no, decision, started, nbytes, None, self.received_ms, sent_ms
        )

    def _on_ack(self, ctx: NodeContext, ack: TransferAck) -> None:
        sent = self.sent.pop(ack.round, None)
        if sent is None:
            ctx.drop("unexpected", f"bees.ack for round {ack.round}")
            return
        self._record(ctx, sent, ack.transfer_s)

    def _record(self, ctx: NodeContext, sent: Sent, transfer_s: float) -> None:
        """One metrics row per round: the decision, predicted and measured transfer time,
        E^C (eq. 7, the UE's profile: local training only), E^T (eq. 8 from the measured
        transfer time: our reading of the issue; the predicted one is beside it), E_total
        (eq. 9) and the battery after the drain; when the round's global model came and
        when the UE sent its contribution (``update_sent_ms``: its trained weights, or, when
        it offloads, its samples: our choice, the offload is its update for the round)."""
        d = sent.decision
        chosen = d.chosen
        compute_j = chosen.ue_compute_j if chosen is not None else 0.0
        transfer_j = (
            transfer_energy_j(self.model.ue_tx_power_dbm, transfer_s) if chosen is not None else 0.0
        )
        total = compute_j + transfer_j
        self.battery_j -= total
        ctx.metrics.write(
            "round",
            round=sent.round,
            decision=DECISIONS[d.d],
            samples=len(self.learner.train_y),
            predicted_transfer_s=chosen.transfer_s if chosen is not None else 0.0,
            transfer_s=transfer_s,
            transfer_bytes=sent.nbytes,
            energy_compute_j=compute_j,
            energy_transfer_j=transfer_j,
            energy_total_j=total,
            battery_j=self.battery_j,
            behaviour=self.behaviour,
            train_time_s=sent.train_time_s,
            round_time_s=ctx.now() - sent.started,
            global_received_ms=sent.received_ms,
            update_sent_ms=sent.sent_ms,
        )
