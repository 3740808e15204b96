"""FLchain's MEC: stores and records its devices' updates, shares them with its channel,
computes the channel's global model itself and holds it (see the package docstring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
from node.schemes.vanilla.common import PUBLISHER, VALIDATION_SAMPLES, devices_of, replica_of
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
    """A complete, checked share: the updates (decoded), the record and device transactions."""

    updates: tuple[Update, ...]
    record: bytes
    txs: tuple[bytes, ...]
    missing: tuple[str, ...]


@dataclass
class Pending:
    """A share whose record is checked and whose updates are still arriving."""

    share: ChannelShare
    named: dict[str, tuple[bytes, int]]  # device -> (blob hash, samples), from the record
    got: dict[str, Update] = field(default_factory=dict)


class FlchainMecRole(MecRole):
    """Vanilla's MEC (the global model to its devices, their updates checked and kept, PBFT
    validator of the chain) whose round result goes to its channel, not to the publisher."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; find this MEC's channel."""
        groups = channel_mecs(ctx.topology, params_of(ctx).channels)
        self.channel = next(c for c, g in enumerate(groups) if ctx.node_id in g)
        self.channel_mecs = groups[self.channel]
        self.devices_of = {m: set(devices_of(ctx, m)) for m in self.channel_mecs}
        self.shares: dict[str, Share] = {}
        self.pending: dict[str, Pending] = {}
        self.loose: dict[str, dict[str, bytes]] = {}  # updates that came before their record
        # the next round's messages from a MEC that got its global model first (a peer is
        # at most one round ahead; at most one record and one update per device each)
        self.early: dict[str, list[ChannelShare | SharedUpdate]] = {}
        self.round_deadline = 0.0
        self.computed = True
        self.validator_learner: Learner | None = None
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Shares from the MECs of this channel; everything else as vanilla's MEC."""
        body = msg.payload
        sender = msg.sender
        if isinstance(body, ChannelShare | SharedUpdate) and sender in self.channel_mecs:
            if sender == ctx.node_id:
                ctx.drop("unexpected", "own share")
            elif body.round == self.round + 1:
                early = self.early.setdefault(sender, [])
                if len(early) <= len(self.devices_of[sender]):
                    early.append(body)
                else:
                    ctx.drop("bad_share", f"{sender}: too many messages for round {body.round}")
            else:
                self._on_shared(ctx, sender, body)
        else:
            super().on_message(ctx, msg)

    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        before = self.round
        super()._on_global(ctx, msg)
        if self.round == before:  # refused
            return
        self.round_deadline = msg.deadline_s
        self.shares, self.pending, self.loose, self.computed = {}, {}, {}, False
        early, self.early = self.early, {}
        for sender in sorted(early):
            for body in early[sender]:
                if body.round == self.round:
                    self._on_shared(ctx, sender, body)

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
        stored = [
            Update(edge_output(ctx.config, self.round, dict(u.weights)), u.samples, None, u.sender)
            for u in updates
        ]
        blobs = [weights_to_bytes(u.weights) for u in stored]
        replica = replica_of(ctx)
        for blob in blobs:
            replica.blobs.put_behind(sha256(blob), blob)
        record = replica.transaction(
            "flchain.record_updates",
            {
                "task_id": ctx.config.task_id,
                "channel": self.channel,
                "round": self.round,
                "updates": [
                    [u.sender, sha256(b), int(u.samples)]
                    for u, b in zip(stored, blobs, strict=True)
                ],
            },
        )
        txs = tuple(self.txs[d] for d in sorted(self.txs))
        share = ChannelShare(self.round, record.to_bytes(), txs, tuple(missing))
        others = [m for m in self.channel_mecs if m != ctx.node_id]
        # the synchronous transfer to the channel: the record, then the updates one by one
        ctx.multicast(others, share)
        for u, blob in zip(stored, blobs, strict=True):
            ctx.multicast(others, SharedUpdate(self.round, u.sender, blob))
        self.shares[ctx.node_id] = Share(tuple(stored), share.record, txs, share.missing)
        started = self.round_started
        ctx.set_timer(
            "sync", max(0.0, started + SYNC_DEADLINE_FRACTION * self.round_deadline - ctx.now())
        )
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(sum(u.samples for u in stored)),
            contributors=len(stored),
            missing=missing,
            forwarded_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - started,
        )
        self._maybe_compute(ctx)

    def _on_shared(self, ctx: NodeContext, sender: str, body: ChannelShare | SharedUpdate) -> None:
        """A record or an update of `sender`'s share of this round."""
        if body.round != self.round or self.computed or sender in self.shares:
            ctx.drop("stale_round", f"share round {body.round!r} from {sender}")
            return
        try:
            if isinstance(body, ChannelShare):
                if sender in self.pending:
                    raise ValueError("a second record this round")
                self.pending[sender] = self._check_record(ctx, sender, body)
                for node, blob in sorted(self.loose.pop(sender, {}).items()):
                    self._add_update(sender, node, blob)
            elif sender in self.pending:
                self._add_update(sender, body.node, body.blob)
            else:  # before its record: kept (one per device of that MEC)
                if body.node not in self.devices_of[sender]:
                    raise ValueError(f"update of {body.node!r}, not a device of {sender}")
                self.loose.setdefault(sender, {})[body.node] = body.blob
                return
        except ValueError as exc:
            ctx.drop("bad_share", f"{sender}: {exc}")
            return
        pending = self.pending[sender]
        if len(pending.got) == len(pending.named):
            updates = tuple(pending.got[d] for d in sorted(pending.got))
            share = pending.share
            self.shares[sender] = Share(updates, share.record, share.txs, share.missing)
            del self.pending[sender]
            self._maybe_compute(ctx)

    def _check_record(self, ctx: NodeContext, sender: str, share: ChannelShare) -> Pending:
        """The share's record if it is `sender`'s signed ``flchain.record_updates`` for this
        channel and round, about `sender`'s own devices, each of which signed an update
        transaction for this round (carried in the share, so that the round block can name
        it a contributor). What FLchain does not check: that an update is what the device
        signed (the MEC is trusted with its devices)."""
        try:
            record = Transaction.from_bytes(share.record)
            record.verify()
            txs = [Transaction.from_bytes(raw) for raw in share.txs]
            for tx in txs:
                tx.verify()
        except TxError as exc:
            raise ValueError(f"transaction: {exc}") from None
        roster = ctx.config.roster
        signed = {  # devices with a signed update transaction for this round
            node
            for node in self.devices_of[sender]
            for tx in txs
            if tx.sender.hex() == roster.get(node)
            and tx.type == "task.record_update"
            and tx.payload.get("round") == self.round
        }
        p = record.payload
        if record.sender.hex() != ctx.config.roster.get(sender):
            raise ValueError("record signed by another key than the sender's")
        if record.type != "flchain.record_updates" or (p.get("round"), p.get("channel")) != (
            self.round,
            self.channel,
        ):
            raise ValueError("not an update record for this channel and round")
        named: dict[str, tuple[bytes, int]] = {}
        for entry in p.get("updates", []):
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ValueError("malformed update entry")
            node, key, samples = entry
            if node not in self.devices_of[sender] or node in named:
                raise ValueError(f"update of {node!r}, not a device of {sender}")
            if not isinstance(key, bytes) or not isinstance(samples, int) or samples <= 0:
                raise ValueError(f"malformed update entry of {node!r}")
            if node not in signed:
                raise ValueError(f"no signed update transaction of {node!r} for this round")
            named[node] = (key, samples)
        return Pending(share, named)

    def _add_update(self, sender: str, node: str, blob: bytes) -> None:
        """One update of `sender`'s pending share; ValueError unless its record names it with
        this blob's hash and it has the model's shape."""
        pending = self.pending[sender]
        if node not in pending.named or node in pending.got:
            raise ValueError(f"update of {node!r} is not expected")
        key, samples = pending.named[node]
        if sha256(blob) != key:
            raise ValueError(f"update of {node!r} does not match the record's blob hash")
        assert self.reference is not None  # set with the round's global model
        weights = check_update(self.reference, weights_from_bytes(blob))
        pending.got[node] = Update(weights, samples, None, node)

    def _maybe_compute(self, ctx: NodeContext) -> None:
        """Compute once this MEC has forwarded and holds every channel MEC's share."""
        if self.forwarded and not self.computed and len(self.shares) == len(self.channel_mecs):
            self._compute(ctx, "all_shares")

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
        rejected: dict[str, str] = {}
        if updates:
            if self.strategy.needs.accuracy:
                updates = [self._with_accuracy(ctx, u) for u in updates]
            try:
                combined = self.strategy.combine(updates)
                weights = combined.weights
                contributors = combined.selection.kept_senders
                rejected = combined.selection.reasons
            except ValueError as exc:  # e.g. Krum with too few updates
                log.warning("round %d: the aggregator refused the updates: %s", self.round, exc)
                rejected = {u.sender: "aggregator_refused" for u in updates}
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
            rejected,
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
