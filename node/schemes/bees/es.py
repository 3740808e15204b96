"""The BEES edge server (ES, a MEC node): forwards the global model to its UEs, takes their
updates or trains on their offloaded data, posts a transaction per update, shares them with
the other ES, and runs the proof-of-learning round (`election.Election`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from node.codec import Message
from node.contracts import bees as contract
from node.core.encoding import sha256
from node.core.tx import Transaction, TxError
from node.learning.aggregators import Update
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.roles.threats import active_behaviour, edge_fault, edge_output
from node.schemes.bees.audit import Auditor
from node.schemes.bees.common import (
    COLLECT_FRACTION,
    PUBLISHER,
    SHARE_FRACTION,
    UE_FRACTION,
    ctx_profiles,
    params_of,
)
from node.schemes.bees.election import Election, Pending, RoundInputs
from node.schemes.bees.messages import (
    MAX_OFFLOAD_SAMPLES,
    EsShare,
    LocalUpdate,
    OffloadedData,
    ProposedBlock,
    RoundStart,
    TransferAck,
)
from node.schemes.bees.model import compute_energy_j
from node.schemes.vanilla.common import (
    VALIDATION_SAMPLES,
    Greeter,
    devices_of,
    replica_of,
    stop_after_last_block,
)
from node.schemes.vanilla.messages import GlobalModel, Stop
from topologies import NodeKind

if TYPE_CHECKING:
    from node.learning.train import TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UeUpdate:
    """One UE's update of the round, as this ES holds it."""

    blob: bytes
    samples: int
    offloaded: bool


class EsRole(Greeter):
    """An edge server of the BEES chain."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Learner (validation data, offloaded training), auditor, PoL core; then hello."""
        params = params_of(ctx)
        self.params = params
        self.ues = devices_of(ctx, ctx.node_id)
        self.es_ids = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
        profiles = ctx_profiles(ctx)
        self.profile = profiles.es[ctx.node_id]
        self.model_params = profiles.model
        self.battery_j = self.profile.battery_j
        self.learner = Learner(ctx.config.learning, ctx.config.seed)
        self.reference = self.learner.weights()
        self.trainer = Learner(ctx.config.learning, ctx.config.seed)  # used off the loop only
        n = min(VALIDATION_SAMPLES, len(self.learner.test_y))
        vx, vy = self.learner.test_x[:n], self.learner.test_y[:n]

        def evaluate(weights: Weights) -> float:
            self.learner.load(weights)
            return float(self.learner.evaluate_on(vx, vy).accuracy)

        self.auditor = Auditor(self.reference, evaluate, params.accuracy_tolerance)
        self.chain = ctx.chains[ctx.config.plan.chains[0]]
        keys = {m: bytes.fromhex(ctx.config.roster[m]) for m in self.es_ids}
        self.election = Election(
            ctx,
            self.chain,
            keys,
            self.auditor,
            params.top_m,
            max(1, int(params.pol_timeout_s * 1000)),
        )
        self.chain.subscribe(lambda block: self._on_appended(ctx))
        self.round = 0
        self.round_started = 0.0
        self.deadline_s = 0.0
        self.global_weights: Weights = {}
        self.configure: Transaction | None = None
        self.initial_model: bytes | None = None
        self.waiting_start: RoundStart | None = None  # until the previous block is here
        self._reset_round()
        super().start(ctx)

    def _reset_round(self) -> None:
        self.updates: dict[str, UeUpdate] = {}
        self.training: set[str] = set()
        self.received_bytes = 0  # from the UEs this round: updates and offloaded data
        self.offload_bytes = 0  # offloaded data only
        self.offloaded = 0
        self.collected = False
        self.shares: dict[str, Pending] = {}
        self.early: dict[str, EsShare] = {}
        self.pol_started = False

    # ---- messages ----------------------------------------------------------------------

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Round starts and ``stop`` from the publisher, UE transfers, ES shares and blocks."""
        body, sender = msg.payload, msg.sender
        if sender == PUBLISHER and isinstance(body, Stop):
            stop_after_last_block(ctx, body)
        elif sender == PUBLISHER and isinstance(body, RoundStart):
            self._on_round(ctx, body)
        elif sender in self.ues and isinstance(body, LocalUpdate | OffloadedData):
            self._on_transfer(ctx, sender, body)
        elif sender in self.es_ids and sender != ctx.node_id and isinstance(body, EsShare):
            self._on_share(ctx, sender, body)
        elif sender in self.es_ids and isinstance(body, ProposedBlock):
            self.election.on_block(sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Collection and share deadlines, PoL turns, hello."""
        if name == "collect" and not self.collected:
            self._collect(ctx, "deadline")
        elif name == "shares" and self.collected and not self.pol_started:
            self._start_pol(ctx, "share_deadline")
        elif name == "pol":
            self.election.tick()
        else:
            super().on_timer(ctx, name)

    # ---- round start -------------------------------------------------------------------

    def _on_round(self, ctx: NodeContext, msg: RoundStart) -> None:
        if msg.round <= self.round:
            ctx.drop("stale_round", f"round {msg.round}")
            return
        if msg.round == 1:
            if msg.model is None or msg.configure is None:
                ctx.drop("bad_round", "round 1 without the initial model or bees.configure")
                return
            try:
                self.configure = Transaction.from_bytes(msg.configure)
                self.configure.verify()
            except TxError as exc:
                ctx.drop("bad_round", f"bees.configure: {exc}")
                return
            self.initial_model = msg.model
            self._begin(ctx, msg, msg.model)
            return
        if self.chain.height < msg.round - 1:  # the previous round's block is not here yet
            self.waiting_start = msg
            replica = replica_of(ctx)
            ctx.emit(replica.sync.seek(msg.round - 1, [PUBLISHER, *self.es_ids], ctx.now()))
            return
        self._begin_from_chain(ctx, msg)

    def _on_appended(self, ctx: NodeContext) -> None:
        start = self.waiting_start
        if start is not None and self.chain.height >= start.round - 1:
            self.waiting_start = None
            self._begin_from_chain(ctx, start)

    def _begin_from_chain(self, ctx: NodeContext, msg: RoundStart) -> None:
        """Round r's global model: the one round r-1's block names (or, if that round had no
        update, the one before)."""
        state = self.chain.replica.chain.state
        entry = next(
            (g for r in range(msg.round - 1, 0, -1) if (g := contract.global_of(state, r))),
            None,
        )
        if entry is None:  # no round had an update yet: the initial model
            self._begin(ctx, msg, self.initial_model or weights_to_bytes(self.reference))
            return
        key = bytes.fromhex(entry["blob"])
        replica = replica_of(ctx)
        peers = [str(entry["es"]), *(m for m in self.es_ids if m != ctx.node_id), PUBLISHER]
        peers = [p for p in dict.fromkeys(peers) if p != ctx.node_id]

        def got(_key: bytes, data: bytes | None) -> None:
            if data is None:
                log.error("round %d: the global model is unavailable", msg.round)
                return
            if msg.round > self.round:
                self._begin(ctx, msg, data)

        ctx.emit(replica.sync.fetch_blob(key, peers or [PUBLISHER], ctx.now(), on_done=got))

    def _begin(self, ctx: NodeContext, msg: RoundStart, model: bytes) -> None:
        try:
            self.global_weights = check_update(self.reference, weights_from_bytes(model))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round, self.round_started, self.deadline_s = msg.round, ctx.now(), msg.deadline_s
        early = self.early
        self._reset_round()
        ctx.multicast(self.ues, GlobalModel(msg.round, model, UE_FRACTION * msg.deadline_s))
        ctx.set_timer("collect", COLLECT_FRACTION * msg.deadline_s)
        for sender, share in sorted(early.items()):
            self._on_share(ctx, sender, share)
        if not self.ues:
            self._collect(ctx, "no_ues")

    # ---- UEs ---------------------------------------------------------------------------

    def _on_transfer(self, ctx: NodeContext, ue: str, body: LocalUpdate | OffloadedData) -> None:
        if body.round != self.round or self.collected or ue in self.updates or ue in self.training:
            ctx.drop("stale_round", f"transfer round {body.round!r} from {ue}")
            return
        transfer_s = max(0.0, (ctx.wall_ms() - body.sent_ms) / 1000)
        if isinstance(body, LocalUpdate):
            nbytes = len(body.blob)
            try:
                check_update(self.reference, weights_from_bytes(body.blob))
            except ValueError as exc:
                ctx.drop("bad_model", f"{ue}: {exc}")
                return
            self.updates[ue] = UeUpdate(body.blob, body.samples, False)
        else:
            x, y = body.x, body.y
            nbytes = x.nbytes + y.nbytes + len(body.pad)
            shape = (len(y), *self.learner.input_shape)
            if (
                y.ndim != 1
                or not 0 < len(y) <= MAX_OFFLOAD_SAMPLES
                or x.shape != shape
                or x.dtype != np.float32
                or y.dtype != np.int64
                or not np.isfinite(x).all()
                or (y < 0).any()
                or (y >= self.learner.num_classes).any()
            ):
                ctx.drop("bad_offload", f"{ue}: samples of the wrong shape, type or labels")
                return
            self._train_offloaded(ctx, ue, x, y)
        self.received_bytes += nbytes
        if isinstance(body, OffloadedData):
            self.offload_bytes += nbytes
        ctx.send(ue, TransferAck(body.round, nbytes, transfer_s))
        ctx.metrics.write(
            "transfer",
            round=self.round,
            ue=ue,
            bytes=nbytes,
            transfer_s=transfer_s,
            offloaded=isinstance(body, OffloadedData),
        )
        self._maybe_collect(ctx)

    def _train_offloaded(self, ctx: NodeContext, ue: str, x: np.ndarray, y: np.ndarray) -> None:
        """Train a copy of the global model on a UE's offloaded samples (off the loop)."""
        self.training.add(ue)
        round_no, weights, trainer = self.round, self.global_weights, self.trainer

        def train() -> tuple[TrainResult, bytes]:
            trainer.load(weights)
            result = trainer.train(round_no, x, y)
            return result, weights_to_bytes(trainer.weights())

        def done(out: tuple[TrainResult, bytes] | None, error: BaseException | None) -> None:
            self.training.discard(ue)
            if error is not None or out is None:
                ctx.drop("training_failed", f"{ue}'s offloaded data: {error}")
            elif round_no == self.round and not self.collected:
                result, blob = out
                self.updates[ue] = UeUpdate(blob, result.samples, True)
                self.offloaded += 1
                m = self.model_params
                self.battery_j -= compute_energy_j(
                    m.kappa,
                    m.local_iterations,
                    self.profile.cycles_per_sample,
                    result.samples,
                    self.profile.cpu_hz,
                )
            self._maybe_collect(ctx)

        ctx.run_background(train, done)

    def _maybe_collect(self, ctx: NodeContext) -> None:
        if not self.collected and not self.training and len(self.updates) == len(self.ues):
            self._collect(ctx, "all_answered")

    def _collect(self, ctx: NodeContext, why: str) -> None:
        """Evaluate the UEs' updates, sign this ES's transactions, share them with the other
        ES and, once every share is here, start the PoL round."""
        ctx.cancel_timer("collect")
        self.collected = True
        fault = self._apply_fault(ctx)
        blobs = {sha256(u.blob): u.blob for u in self.updates.values()}
        store = replica_of(ctx).blobs
        for key, blob in blobs.items():  # served to an ES that lacks them (``blob.get``)
            store.put_behind(key, blob)
        self.shares[ctx.node_id] = Pending(self._sign_own(ctx), blobs)
        share = self.shares[ctx.node_id]
        others = [m for m in self.es_ids if m != ctx.node_id]
        blob_list = tuple(blobs[t.payload["blob"]] for t in share.txs if t.type == "bees.update")
        ctx.multicast(
            others, EsShare(self.round, tuple(t.to_bytes() for t in share.txs), blob_list)
        )
        missing = sorted(set(self.ues) - set(self.updates))
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=sum(u.samples for u in self.updates.values()),
            contributors=len(self.updates),
            missing=missing,
            offloaded=self.offloaded,
            offload_bytes=self.offload_bytes,
            transfer_bytes=self.received_bytes,
            battery_j=self.battery_j,
            forwarded_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - self.round_started,
        )
        remaining = self.round_started + SHARE_FRACTION * self.deadline_s - ctx.now()
        ctx.set_timer("shares", max(0.0, remaining))
        self._maybe_start_pol(ctx)

    def _apply_fault(self, ctx: NodeContext) -> str:
        """A scheduled MEC behaviour (`node.roles.threats`: ``tamper`` alters some UEs'
        updates, ``malfunction`` garbles them) applied to the updates before this ES
        evaluates, signs and shares them (so its claims match what it posts: the others'
        re-evaluation finds nothing wrong, and a spoiled update's low accuracy keeps it out
        of the top-M). Returns the behaviour's name ("" when honest)."""
        if active_behaviour(ctx.config, self.round) is None:
            return ""
        ues = sorted(self.updates)
        updates = [
            Update(weights_from_bytes(self.updates[ue].blob), self.updates[ue].samples, None, ue)
            for ue in ues
        ]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        self.updates = {
            u.sender: UeUpdate(
                weights_to_bytes(edge_output(ctx.config, self.round, dict(u.weights))),
                int(u.samples),
                self.updates[u.sender].offloaded,
            )
            for u in updates
        }
        return fault

    def _sign_own(self, ctx: NodeContext) -> list[Transaction]:
        """This ES's ``bees.report`` (for the next round's election: n_k, c_k = its CPU
        cycles/s, B_k = its residual battery) and a ``bees.update`` per UE update, with the
        accuracy this ES measured (a signature per call: the winner signs them again)."""
        replica = replica_of(ctx)
        report = {
            "round": self.round + 1,
            "samples": int(sum(u.samples for u in self.updates.values())),
            "capacity": float(self.profile.cpu_hz),
            "battery": float(max(self.battery_j, 1e-9)),
        }
        txs = [replica.transaction("bees.report", report)]
        for ue in sorted(self.updates):
            u = self.updates[ue]
            payload = {
                "round": self.round,
                "ue": ue,
                "blob": sha256(u.blob),
                "accuracy": self.claimed_accuracy(ue, u.blob),
                "samples": int(u.samples),
            }
            txs.append(replica.transaction("bees.update", payload))
        return txs

    def claimed_accuracy(self, ue: str, blob: bytes) -> float:
        """The accuracy this ES posts for `ue`'s update: its own evaluation (a dishonest ES
        overrides this; the others catch it)."""
        return self.auditor.accuracy(blob)

    # ---- ES shares and PoL -------------------------------------------------------------

    def _on_share(self, ctx: NodeContext, sender: str, share: EsShare) -> None:
        if share.round == self.round + 1:  # this ES has not begun that round yet
            self.early[sender] = share
            return
        if share.round != self.round or sender in self.shares:
            ctx.drop("stale_round", f"share round {share.round} from {sender}")
            return
        key = bytes.fromhex(ctx.config.roster[sender])
        try:
            txs = [Transaction.from_bytes(raw) for raw in share.txs]
            for tx in txs:
                tx.verify()
                if tx.sender != key or tx.type not in ("bees.report", "bees.update"):
                    raise ValueError("a transaction not by the sender or not a report/update")
            updates = [t for t in txs if t.type == "bees.update"]
            if len(updates) != len(share.blobs):
                raise ValueError("not one blob per update")
            blobs = {sha256(b): b for b in share.blobs}
            if {t.payload.get("blob") for t in updates} != set(blobs):
                raise ValueError("blobs do not match the updates' hashes")
        except (TxError, ValueError) as exc:
            ctx.drop("bad_share", f"{sender}: {exc}")
            return
        self.shares[sender] = Pending(txs, blobs)
        self.election.add_blobs(blobs)
        self._maybe_start_pol(ctx)

    def _maybe_start_pol(self, ctx: NodeContext) -> None:
        if self.collected and not self.pol_started and len(self.shares) == len(self.es_ids):
            self._start_pol(ctx, "all_shares")

    def _start_pol(self, ctx: NodeContext, why: str) -> None:
        ctx.cancel_timer("shares")
        self.pol_started = True
        absent = sorted(set(self.es_ids) - set(self.shares))
        if absent:
            log.warning("round %d: no share from %s", self.round, absent)
        inputs = RoundInputs(
            self.round,
            lambda: self._sign_own(ctx),
            self.configure if self.round == 1 else None,
        )
        self.election.begin(inputs, self.shares)
