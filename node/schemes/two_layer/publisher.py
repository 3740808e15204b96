"""The two-layer publisher: vanilla's (task, rounds, evaluation, records, stop), with the
round's model decided by the MECs' votes on the GMUC instead of combined from partials."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.contracts import gmuc
from node.core.encoding import sha256
from node.core.tx import Transaction, TxError
from node.learning.weights import weights_from_bytes
from node.ledger.chains import ChainHandle
from node.ledger.replica import Replica
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.roles.learner import check_update
from node.roles.validator import PbftMessage, PbftValidator, Submit
from node.schemes.two_layer.messages import VoteMessage
from node.schemes.two_layer.scheme import GMUC_PREFIX
from node.schemes.vanilla.messages import Partial
from node.schemes.vanilla.publisher import PublisherRole
from topologies import NodeKind

log = logging.getLogger(__name__)


class GmucSubmitter:
    """The publisher's committer on the GMUC, whose PBFT committee it is part of: ``submit``
    to the other validators and to its own (one timestamp: the same candidate block)."""

    def __init__(self, ctx: NodeContext, validator: PbftValidator, chain_id: str) -> None:
        self.ctx = ctx
        self.validator = validator
        self.chain_id = chain_id

    def submit(self, txs: Sequence[Transaction]) -> None:
        """Order `txs` into a GMUC block."""
        submit = Submit(tuple(tx.to_bytes() for tx in txs), self.ctx.wall_ms())
        self.ctx.multicast(self.validator.peers, submit)
        self.validator.on_submit(self.ctx, submit)
        self.ctx.metrics.write("submitted", chain=self.chain_id, txs=len(txs))


class TwoLayerPublisherRole(PublisherRole):
    """Sends each round's global model to the task's MECs, gathers their signed votes, has
    the MECs order them (with the round record) on the GMUC, and takes the aggregate a
    majority of them voted as the next global model."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; this node's GMUC validator and committer; the vote tally."""
        super().start(ctx)
        ids = {nid: bytes.fromhex(key) for nid, key in ctx.config.roster.items()}
        self.validator = PbftValidator(
            ctx,
            self.chain.replica,
            committee_replicas(self.chain.config.finality, ids),
            proposer=self.chain.replica.key.public_key,
            forward_to=[],
        )
        self.chain.install(GmucSubmitter(ctx, self.validator, self.chain.chain_id))
        self.votes: dict[str, tuple[Transaction, bytes]] = {}
        self.records: dict[str, list[Transaction]] = {}  # per MEC: its vote, its reputation record
        # this task's nodes: its GMUC shard's MECs and their devices
        members = self.chain.config.genesis.members
        self.mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC) if n.id in members]
        self.devices = {d for d, (_, kind) in members.items() if kind == str(NodeKind.DEVICE)}
        self.expected = {*self.mecs, *self.devices}
        self.quorum = gmuc.vote_quorum(len(self.mecs))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """``tl.vote`` from a MEC; the rest as vanilla's publisher."""
        body = msg.payload
        if isinstance(body, VoteMessage) and msg.sender in self.mecs:
            self._on_vote(ctx, msg.sender, body)
        elif isinstance(body, PbftMessage) and msg.sender in self.validator.peers:
            self.validator.on_pbft(ctx, msg.sender, body)
        else:
            super().on_message(ctx, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """PBFT's timers, then vanilla's."""
        if not self.validator.on_timer(ctx, name):
            super().on_timer(ctx, name)

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        self.votes = {}
        self.records = {}
        super()._begin_round(ctx, model)

    def _on_vote(self, ctx: NodeContext, sender: str, vote: VoteMessage) -> None:
        if vote.round != self.round or sender in self.votes:
            ctx.drop("stale_round", f"vote round {vote.round!r} from {sender}")
            return
        try:
            tx = Transaction.from_bytes(vote.tx)
            tx.verify()
        except TxError as exc:
            ctx.drop("bad_tx", f"vote from {sender}: {exc}")
            return
        p = tx.payload
        if (
            tx.sender.hex() != ctx.config.roster.get(sender)
            or tx.type != "gmuc.vote"
            or p.get("round") != self.round
            or p.get("aggregate") != sha256(vote.model)
        ):
            ctx.drop("bad_tx", f"vote from {sender} is not its vote for this round's model")
            return
        txs = [tx]
        if vote.reputation:
            try:
                record = Transaction.from_bytes(vote.reputation)
                record.verify()
            except TxError as exc:
                ctx.drop("bad_tx", f"reputation record from {sender}: {exc}")
                return
            if (
                record.sender != tx.sender
                or record.type != "reputation.record"
                or record.payload.get("round") != self.round
            ):
                ctx.drop("bad_tx", f"reputation record from {sender} is not for this round")
                return
            txs.append(record)
        self.votes[sender] = (tx, vote.model)
        self.records[sender] = txs
        if len(self.votes) == len(self.mecs):
            self._aggregate(ctx)

    def _combine(self, ctx: NodeContext) -> tuple[list[str], dict[str, str]]:
        """The aggregate a quorum of the votes names (the gmuc contract decides the same on
        chain); none: the model stays. The votes go into the round's GMUC block."""
        self.update_txs = {mec: self.records[mec] for mec in sorted(self.votes)}
        self.partials = {mec: Partial(self.round, 0, (), (), ()) for mec in self.votes}
        tally = Counter(tx.payload["aggregate"] for tx, _ in self.votes.values())
        decided = next((h for h, n in tally.most_common() if n >= self.quorum), None)
        outvoted = sorted(
            m for m, (tx, _) in self.votes.items() if tx.payload["aggregate"] != decided
        )
        ctx.metrics.write(
            "votes",
            round=self.round,
            votes=len(self.votes),
            quorum=self.quorum,
            decided=decided.hex() if decided else None,
            outvoted=outvoted,
        )
        if decided is None:
            log.warning(
                "round %d: no aggregate has %d votes; the model stays", self.round, self.quorum
            )
            return [], {}
        if outvoted:
            log.warning("round %d: outvoted MECs %s", self.round, outvoted)
        tx, model = next(v for v in self.votes.values() if v[0].payload["aggregate"] == decided)
        try:
            self.weights = check_update(self.weights, weights_from_bytes(model))
        except ValueError as exc:
            log.warning("round %d: the decided aggregate is not the model: %s", self.round, exc)
            return [], {}
        return sorted(tx.payload["contributors"]), {}

    def _record_round(
        self,
        ctx: NodeContext,
        round_no: int,
        update_txs: dict[str, list[Transaction]],
        contributors: list[str],
        accuracy: float,
        model: bytes,
    ) -> None:
        """Vanilla's round record on the GMUC, after the round's votes, naming no
        contributors: their updates are recorded on the LMUCs (the decided vote lists them)."""
        super()._record_round(ctx, round_no, update_txs, [], accuracy, model)

    def _send_stop(self, ctx: NodeContext) -> None:
        """Vanilla's; only the MECs keep the GMUC, so only they report its final height."""
        self.absent |= self.devices
        super()._send_stop(ctx)


class TaskView:
    """The publisher's node as one task's publisher sees it: only that task's GMUC shard,
    timers in their own space, metrics records tagged with the chain, and ``stop`` reported
    to the sharded publisher (which stops the node when every task is done)."""

    def __init__(self, ctx: NodeContext, chain_id: str, on_stop: Callable[[str], None]) -> None:
        self._ctx = ctx
        self.chain_id = chain_id
        self.prefix = f"{chain_id}:"
        self._on_stop = on_stop
        plan = ctx.config.plan.model_copy(update={"chains": (chain_id,)})
        self.config = ctx.config.model_copy(update={"plan": plan})
        self.metrics = _Tagged(ctx.metrics, chain_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    @property
    def chains(self) -> Mapping[str, ChainHandle]:
        """This task's GMUC shard only."""
        return {self.chain_id: self._ctx.chains[self.chain_id]}

    @property
    def replica(self) -> Replica:
        """This task's GMUC shard's replica."""
        return self._ctx.chains[self.chain_id].replica

    def set_timer(self, name: str, delay_s: float) -> None:
        """The node's timer `prefix + name`."""
        self._ctx.set_timer(self.prefix + name, delay_s)

    def cancel_timer(self, name: str) -> None:
        """Cancel the node's timer `prefix + name`."""
        self._ctx.cancel_timer(self.prefix + name)

    def stop(self) -> None:
        """This task is over."""
        self._on_stop(self.chain_id)


class _Tagged:
    """A metrics writer whose records name the task's chain (``task_chain``)."""

    def __init__(self, metrics: MetricsWriter, chain_id: str) -> None:
        self._metrics = metrics
        self._chain_id = chain_id

    def write(self, event: str, **fields: Any) -> None:
        """The record, with ``task_chain``."""
        self._metrics.write(event, task_chain=self._chain_id, **fields)

    def close(self) -> None:
        """Close the node's writer."""
        self._metrics.close()


class ShardedPublisherRole(Role):
    """The publisher of every task of the run (isolation sharding): one `TwoLayerPublisherRole`
    per GMUC shard, each on its own `TaskView`; a node's messages go to its task's publisher.
    With one task, that publisher runs on the node itself."""

    kind = "publisher"

    def start(self, ctx: NodeContext) -> None:
        """A publisher per GMUC shard this node keeps."""
        shards = [c for c in ctx.config.plan.chains if c.startswith(GMUC_PREFIX)]
        self.parts: dict[str, tuple[TwoLayerPublisherRole, NodeContext]] = {}
        self.task_of: dict[str, str] = {}
        self.running: set[str] = set(shards)
        self.ctx = ctx
        for cid in shards:
            view = ctx if len(shards) == 1 else cast(NodeContext, TaskView(ctx, cid, self._done))
            self.parts[cid] = (TwoLayerPublisherRole(), view)
            for node in ctx.chains[cid].config.genesis.members:
                if node != ctx.node_id:
                    self.task_of[node] = cid
        for role, view in self.parts.values():
            role.start(view)

    def _done(self, chain_id: str) -> None:
        self.running.discard(chain_id)
        log.info("task of %s is over; %d still running", chain_id, len(self.running))
        if not self.running:
            self.ctx.stop()

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """To the publisher of the sender's task."""
        cid = self.task_of.get(msg.sender)
        if cid is None:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")
            return
        role, view = self.parts[cid]
        role.on_message(view, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """To the publisher whose timer it is."""
        if len(self.parts) == 1:
            role, view = next(iter(self.parts.values()))
            role.on_timer(view, name)
            return
        cid, _, inner = name.partition(":")
        if cid in self.parts:
            role, view = self.parts[cid]
            role.on_timer(view, inner)

    def finish(self, ctx: NodeContext) -> None:
        """Every task's publisher's finish."""
        for role, view in self.parts.values():
            role.finish(view)
