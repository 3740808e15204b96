"""FLchain's publisher: vanilla's round clock, evaluation and round records, with the global
model taken from the channels' MECs instead of aggregated here."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.core.encoding import sha256
from node.core.finality import Committee
from node.core.tx import Transaction, TxError
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import Weights, weights_from_bytes
from node.roles.base import NodeContext
from node.roles.learner import check_update
from node.roles.validator import PbftValidator
from node.schemes.flchain.mec import params_of
from node.schemes.flchain.messages import ChannelModel
from node.schemes.flchain.scheme import channel_mecs
from node.schemes.vanilla.messages import Partial, PbftMessage, Submit
from node.schemes.vanilla.publisher import PublisherRole

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A MEC's checked channel result."""

    result: ChannelModel
    weights: Weights | None
    key: bytes | None  # the model's hash
    txs: tuple[Transaction, ...]
    records: tuple[Transaction, ...]


class FlchainPublisherRole(PublisherRole):
    """Vanilla's publisher (hello, rounds, deadline, evaluation, round block, rewards, stop);
    the round's model is the channels' global models, each as most of its MECs hold it."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; learn the channels; with 3 MECs, be the chain's 4th PBFT replica
        (see `scheme.FlchainScheme.plan`)."""
        self.channels = channel_mecs(ctx.topology, params_of(ctx).channels)
        self.received: dict[str, Received] = {}
        self.validator: PbftValidator | None = None
        super().start(ctx)
        replica = self.chain.replica
        finality = replica.chain.config.finality
        if isinstance(finality, Committee) and replica.key.public_key in finality.members:
            ids = {nid: bytes.fromhex(key) for nid, key in ctx.config.roster.items()}
            replicas = committee_replicas(finality, ids)
            self.validator = PbftValidator(
                ctx, replica, replicas, proposer=replica.key.public_key, forward_to=[]
            )
            others = [nid for nid, _ in replicas if nid != ctx.node_id]
            self.chain.install(_MemberSubmitter(ctx, self.validator, others))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """A MEC's channel model (and PBFT as a replica); the rest as vanilla's publisher (a
        vanilla ``partial`` is not part of FLchain)."""
        body = msg.payload
        if isinstance(body, ChannelModel) and msg.sender in self.mecs:
            self._on_model(ctx, msg.sender, body)
        elif self.validator is not None and isinstance(body, PbftMessage):
            self.validator.on_pbft(ctx, msg.sender, body)
        elif isinstance(body, Partial):
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")
        else:
            super().on_message(ctx, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """PBFT's timers, then vanilla's."""
        if self.validator is None or not self.validator.on_timer(ctx, name):
            super().on_timer(ctx, name)

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        self.received = {}
        super()._begin_round(ctx, model)

    def _on_model(self, ctx: NodeContext, sender: str, m: ChannelModel) -> None:
        if m.round != self.round or sender in self.received:
            ctx.drop("stale_round", f"model round {m.round!r} from {sender}")
            return
        try:
            channel = self.channels[m.channel]
            if sender not in channel:
                raise ValueError(f"channel {m.channel} is not the sender's")
            txs = tuple(Transaction.from_bytes(t) for t in m.txs)
            records = tuple(Transaction.from_bytes(t) for t in m.records)
            for tx in (*txs, *records):
                tx.verify()
            weights = (
                None if m.model is None else check_update(self.weights, weights_from_bytes(m.model))
            )
        except (ValueError, TypeError, KeyError, IndexError, TxError) as exc:
            ctx.drop("bad_model", f"channel model from {sender}: {exc}")
            return
        key = None if m.model is None else sha256(m.model)
        self.received[sender] = Received(m, weights, key, txs, records)
        # vanilla's bookkeeping of who answered and who was missing
        self.partials[sender] = Partial(m.round, m.samples, m.contributors, m.missing, ())
        if len(self.received) == len(self.mecs):
            self._aggregate(ctx)

    def _combine(self, ctx: NodeContext) -> tuple[list[str], dict[str, str]]:
        """Each channel's model as most of its answering MECs hold it (ties: the one held by
        the first MEC in id order); the round's model is that model with one channel, else
        the channels' models averaged by their sample totals (our choice). Also gathers the
        round's transactions for vanilla's round block (`self.update_txs`)."""
        chosen: list[Received] = []
        for c, members in enumerate(self.channels):
            got = [self.received[m] for m in sorted(members) if m in self.received]
            held = [r for r in got if r.key is not None]
            if not held:
                continue
            votes = Counter(r.key for r in held)
            best = max(
                votes, key=lambda k: (votes[k], -min(i for i, r in enumerate(held) if r.key == k))
            )
            winner = next(r for r in held if r.key == best)
            outvoted = sorted(
                m
                for m in members
                if m in self.received and self.received[m].key not in (best, None)
            )
            if outvoted:
                log.warning(
                    "round %d: channel %d: %s hold another model (outvoted)",
                    self.round,
                    c,
                    outvoted,
                )
                ctx.metrics.write("outvoted", round=self.round, channel=c, mecs=outvoted)
            chosen.append(winner)
        self.update_txs = self._round_txs(chosen)
        if not chosen:  # no MEC holds a model: every channel's aggregator refused (or none)
            return [], {
                d: why for r in self.received.values() for d, why in r.result.rejected.items()
            }
        if len(chosen) == 1:
            assert chosen[0].weights is not None
            self.weights = chosen[0].weights
        else:
            fedavg = make_strategy("fedavg")
            parts = [
                Update(r.weights, r.result.samples, None, str(r.result.channel))
                for r in chosen
                if r.weights is not None
            ]
            combined = fedavg.combine(parts).weights
            if combined is not None:
                self.weights = combined
        # a contributor needs its signed update on chain (else task.record_global reverts)
        by_key = {key: nid for nid, key in ctx.config.roster.items()}
        signed = {
            by_key.get(t.sender.hex())
            for t in self.update_txs["1-devices"]
            if t.type == "task.record_update" and t.payload.get("round") == self.round
        }
        contributors = {d for r in chosen for d in r.result.contributors}
        unsigned = sorted(contributors - signed)
        if unsigned:
            log.warning(
                "round %d: contributors without an update on chain: %s", self.round, unsigned
            )
        reasons = {d: why for r in chosen for d, why in r.result.rejected.items()}
        reasons.update({d: "unsigned_update" for d in unsigned})
        return sorted(contributors & signed), reasons

    def _round_txs(self, chosen: list[Received]) -> dict[str, list[Transaction]]:
        """The round block's transactions, without duplicates: the devices' update records,
        then the MECs' update records, then their global-model records (those holding a
        channel's chosen model first, so the state trie's entry is the chosen one; a MEC
        whose model differs is reverted there). Keys sort in that order (vanilla's
        `_record_round` takes them in key order and appends ``task.record_global``)."""
        winners = {r.key for r in chosen}
        got = [self.received[m] for m in sorted(self.received)]
        devices = list({t.hash: t for r in got for t in r.txs}.values())
        records = list({t.hash: t for r in got for t in r.records}.values())
        updates = [t for t in records if t.type == "flchain.record_updates"]
        held = [t for t in records if t.type == "flchain.record_global"]
        held.sort(key=lambda t: t.payload.get("blob") not in winners)
        return {"1-devices": devices, "2-mec-updates": updates, "3-mec-globals": held}


class _MemberSubmitter:
    """The committer of a publisher that is itself a PBFT replica: the submission goes to
    the other members and to its own validator (vanilla's `CommitteeSubmitter` sends to
    every member, itself included)."""

    def __init__(self, ctx: NodeContext, validator: PbftValidator, others: list[str]) -> None:
        self.ctx = ctx
        self.validator = validator
        self.others = others

    def submit(self, txs: Sequence[Transaction]) -> None:
        """``submit{txs, timestamp_ms}`` to the other members, and to this node's validator."""
        submit = Submit(tuple(tx.to_bytes() for tx in txs), self.ctx.wall_ms())
        self.ctx.multicast(self.others, submit)
        self.validator.on_submit(self.ctx, submit)
