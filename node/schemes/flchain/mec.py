"""FLchain's MEC: stores and records its devices' updates, shares them with its channel,
computes the channel's global model itself and holds it (see the package docstring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from node.codec import Message
from node.core.encoding import sha256
from node.core.tx import Transaction, TxError
from node.learning.aggregators import Update
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.roles.threats import edge_fault, edge_output
from node.schemes.flchain.messages import ChannelModel, ChannelShare, SharedUpdate
from node.schemes.flchain.scheme import FlchainParams, FlchainScheme, channel_mecs
from node.schemes.vanilla.common import PUBLISHER, VALIDATION_SAMPLES, replica_of
from node.schemes.vanilla.mec import MecRole
from node.schemes.vanilla.messages import GlobalModel

log = logging.getLogger(__name__)

# a MEC waits for its channel's shares until this fraction of the round deadline (our
# choice: after vanilla's 80% for its devices, before the publisher's 100%)
SYNC_DEADLINE_FRACTION = 0.9


def params_of(ctx: NodeContext) -> FlchainParams:
    """This run's scheme parameters."""
    return cast(FlchainParams, FlchainScheme.parse_params(ctx.config.scheme_params))


@dataclass(frozen=True)
class Share:
    """A checked share: the updates (decoded), the record and device transactions."""

    updates: tuple[Update, ...]
    record: bytes
    txs: tuple[bytes, ...]
    missing: tuple[str, ...]


class FlchainMecRole(MecRole):
    """Vanilla's MEC (the global model to its devices, their updates checked and kept, PBFT
    validator of the chain) whose round result goes to its channel, not to the publisher."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; find this MEC's channel."""
        groups = channel_mecs(ctx.topology, params_of(ctx).channels)
        self.channel = next(c for c, g in enumerate(groups) if ctx.node_id in g)
        self.channel_mecs = groups[self.channel]
        self.shares: dict[str, Share] = {}
        # round -> MEC -> share, for the next round only (a peer is at most one round ahead)
        self.early: dict[int, dict[str, ChannelShare]] = {}
        self.round_deadline = 0.0
        self.computed = True
        self.validator_learner: Learner | None = None
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """A share from a MEC of this channel; everything else as vanilla's MEC."""
        body = msg.payload
        if isinstance(body, ChannelShare) and msg.sender in self.channel_mecs:
            if msg.sender == ctx.node_id:
                ctx.drop("unexpected", "own share")
            elif body.round == self.round + 1:  # it got the global model before this MEC did
                self.early.setdefault(body.round, {})[msg.sender] = body
            else:
                self._on_share(ctx, msg.sender, body)
        else:
            super().on_message(ctx, msg)

    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        before = self.round
        super()._on_global(ctx, msg)
        if self.round == before:  # refused
            return
        self.round_deadline = msg.deadline_s
        self.shares, self.computed = {}, False
        for sender, share in sorted(self.early.pop(self.round, {}).items()):
            self._on_share(ctx, sender, share)
        self.early = {r: s for r, s in self.early.items() if r > self.round}

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The channel sync deadline: compute with the shares that arrived."""
        if name == "sync":
            if not self.computed:
                self._compute(ctx, "sync_deadline")
            return
        super().on_timer(ctx, name)

    def _forward(self, ctx: NodeContext, why: str) -> None:
        """Store and record this MEC's devices' updates (after any scheduled fault) and share
        them with the channel's other MECs; `why`: "all_answered" or "deadline"."""
        ctx.cancel_timer("deadline")
        self.forwarded = True
        missing = sorted(set(self.devices) - set(self.updates))
        if missing:
            log.warning(
                "round %d: left out %s (no update before the deadline)", self.round, missing
            )
        updates = [Update(w, n, None, d) for d, (w, n) in sorted(self.updates.items())]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        shared = []
        for u in updates:
            blob = weights_to_bytes(edge_output(ctx.config, self.round, dict(u.weights)))
            shared.append(SharedUpdate(u.sender, blob, int(u.samples)))
        replica = replica_of(ctx)
        for s in shared:
            replica.blobs.put_behind(sha256(s.blob), s.blob)
        record = replica.transaction(
            "flchain.record_updates",
            {
                "task_id": ctx.config.task_id,
                "channel": self.channel,
                "round": self.round,
                "updates": [[s.node, sha256(s.blob), s.samples] for s in shared],
            },
        )
        share = ChannelShare(
            self.round,
            tuple(shared),
            record.to_bytes(),
            tuple(self.txs[d] for d in sorted(self.txs)),
            tuple(missing),
        )
        others = [m for m in self.channel_mecs if m != ctx.node_id]
        ctx.multicast(others, share)  # the synchronous transfer to the channel
        self._on_share(ctx, ctx.node_id, share)
        started = self.round_started
        ctx.set_timer(
            "sync", max(0.0, started + SYNC_DEADLINE_FRACTION * self.round_deadline - ctx.now())
        )
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(sum(s.samples for s in shared)),
            contributors=len(shared),
            missing=missing,
            forwarded_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - started,
        )

    def _on_share(self, ctx: NodeContext, sender: str, share: ChannelShare) -> None:
        if share.round != self.round or self.computed or sender in self.shares:
            ctx.drop("stale_round", f"share round {share.round!r} from {sender}")
            return
        try:
            self.shares[sender] = self._check_share(ctx, sender, share)
        except ValueError as exc:
            ctx.drop("bad_share", f"{sender}: {exc}")
            return
        if len(self.shares) == len(self.channel_mecs) and self.forwarded:
            self._compute(ctx, "all_shares")

    def _check_share(self, ctx: NodeContext, sender: str, share: ChannelShare) -> Share:
        """The share if its record is `sender`'s signed ``flchain.record_updates`` for this
        channel and round naming exactly the carried blobs, its device transactions are
        validly signed, and every update has the model's shape. What FLchain does not check:
        that a blob is what the device signed (the MEC is trusted with its devices)."""
        try:
            record = Transaction.from_bytes(share.record)
            record.verify()
            txs = [Transaction.from_bytes(t) for t in share.txs]
            for tx in txs:
                tx.verify()
        except TxError as exc:
            raise ValueError(f"transaction: {exc}") from None
        p = record.payload
        if record.sender.hex() != ctx.config.roster.get(sender):
            raise ValueError("record signed by another key than the sender's")
        if record.type != "flchain.record_updates" or (p.get("round"), p.get("channel")) != (
            self.round,
            self.channel,
        ):
            raise ValueError("not an update record for this channel and round")
        named = [[s.node, sha256(s.blob), s.samples] for s in share.updates]
        if p.get("updates") != named:
            raise ValueError("updates do not match the record's blob hashes")
        assert self.reference is not None  # set with the round's global model
        updates = tuple(
            Update(
                check_update(self.reference, weights_from_bytes(s.blob)), s.samples, None, s.node
            )
            for s in share.updates
        )
        return Share(updates, share.record, share.txs, share.missing)

    def _compute(self, ctx: NodeContext, why: str) -> None:
        """Compute the channel's global model from every share that arrived (updates in
        device order, so that every MEC with the same shares gets the same bytes), hold it
        (blob store), record it and send it to the publisher."""
        ctx.cancel_timer("sync")
        self.computed = True
        updates = sorted(
            (u for s in self.shares.values() for u in s.updates), key=lambda u: u.sender
        )
        weights: Weights | None = None
        contributors: list[str] = []
        if updates:
            if self.strategy.needs.accuracy:
                updates = [self._with_accuracy(ctx, u) for u in updates]
            try:
                combined = self.strategy.combine(updates)
                weights = combined.weights
                contributors = sorted(u.sender for u in combined.selection.kept)
            except ValueError as exc:  # e.g. Krum with too few updates
                log.warning("round %d: the aggregator refused the updates: %s", self.round, exc)
        replica = replica_of(ctx)
        records = [self.shares[m].record for m in sorted(self.shares)]
        model: bytes | None = None
        if weights is not None:
            # a malfunctioning MEC's own aggregate is off too (the other MECs outvote it)
            model = weights_to_bytes(edge_output(ctx.config, self.round, dict(weights)))
            key = sha256(model)
            replica.blobs.put_behind(key, model)
            held = replica.transaction(
                "flchain.record_global",
                {
                    "task_id": ctx.config.task_id,
                    "channel": self.channel,
                    "round": self.round,
                    "blob": key,
                    "size": len(model),
                },
            )
            records.append(held.to_bytes())
        kept = set(contributors)
        samples = sum(int(u.samples) for u in updates if u.sender in kept)
        missing = sorted({m for s in self.shares.values() for m in s.missing})
        absent = sorted(set(self.channel_mecs) - set(self.shares))
        if absent:
            log.warning("round %d: no share from %s by the sync deadline", self.round, absent)
        result = ChannelModel(
            self.round,
            self.channel,
            samples,
            tuple(contributors),
            tuple(missing),
            tuple(sorted(self.shares)),
            tuple(dict.fromkeys(t for m in sorted(self.shares) for t in self.shares[m].txs)),
            tuple(records),
            model,
        )
        ctx.send(PUBLISHER, result)
        ctx.metrics.write(
            "channel",
            round=self.round,
            channel=self.channel,
            computed_on=why,
            shares=len(self.shares),
            absent=absent,
            contributors=len(contributors),
            model=None if model is None else sha256(model).hex(),
            sync_time_s=ctx.now() - self.round_started,
        )

    def _with_accuracy(self, ctx: NodeContext, update: Update) -> Update:
        """The update with its accuracy on the first VALIDATION_SAMPLES test samples (as
        vanilla's publisher measures it; every MEC gets the same figure)."""
        if self.validator_learner is None:
            self.validator_learner = Learner(ctx.config.learning, ctx.config.seed)
        learner = self.validator_learner
        n = min(VALIDATION_SAMPLES, len(learner.test_y))
        learner.load(update.weights)
        acc = learner.evaluate_on(learner.test_x[:n], learner.test_y[:n]).accuracy
        return Update(update.weights, update.samples, acc, update.sender)
