"""The two-layer publisher: vanilla's (task, rounds, evaluation, records, stop), with the
round's model decided by the MECs' votes on the GMUC instead of combined from partials."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.contracts import gmuc, gmuc_request
from node.core.block import Block
from node.core.encoding import sha256
from node.core.tx import Transaction, TxError
from node.learning.weights import Weights, weights_from_bytes
from node.ledger.chains import ChainHandle
from node.ledger.replica import Replica
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.roles.learner import check_update
from node.roles.validator import PbftMessage, PbftValidator, Submit
from node.schemes.two_layer.common import combine_shards, params_of
from node.schemes.two_layer.incentives import PayReport, PublisherIncentives
from node.schemes.two_layer.messages import Responses, VoteMessage
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
    majority of them voted as the next global model (with cooperative sharding: its shard's
    share of it, see `Cooperative`)."""

    cooperative: Cooperative | None = None
    shared: Weights | None = None  # the round's combined model while the round is closed
    reported = 0  # the last round reported to `cooperative`

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start; this node's GMUC validator and committer; the vote tally."""
        self.ctx = ctx
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
        self.incentives = PublisherIncentives(ctx.config.roster, self.mecs, self.devices)
        # Steps 1-2: the task request goes on the GMUC with the devices' responses that the
        # MECs forward; round 1 starts once that block is committed
        self.responses: list[Transaction] = []
        self.joins_done: set[str] = set()  # MECs that heard every device of theirs
        self.want_publish = False
        self.request_tx: bytes | None = None  # hash of the gmuc.request tx, until committed
        self.start_held = False
        self.chain.subscribe(self._on_gmuc_block)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """``tl.vote`` from a MEC; the rest as vanilla's publisher."""
        body = msg.payload
        if isinstance(body, VoteMessage) and msg.sender in self.mecs:
            self._on_vote(ctx, msg.sender, body)
        elif isinstance(body, PayReport) and msg.sender in self.mecs:
            why = self.incentives.on_pay(msg.sender, body)  # into the round's GMUC block
            if why is not None:
                ctx.drop("bad_tx", why)
        elif isinstance(body, Responses) and msg.sender in self.mecs:
            self._on_responses(ctx, msg.sender, body)
        elif isinstance(body, PbftMessage) and msg.sender in self.validator.peers:
            self.validator.on_pbft(ctx, msg.sender, body)
        else:
            super().on_message(ctx, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """PBFT's timers, then vanilla's (at the start-up timeout the request goes out with
        the responses that came)."""
        if name == "startup" and self.round == 0:
            self.joins_done |= set(self.mecs)
        if not self.validator.on_timer(ctx, name):
            super().on_timer(ctx, name)

    # -- the task request (Step 2) -----------------------------------------------------------
    def _on_responses(self, ctx: NodeContext, sender: str, msg: Responses) -> None:
        """A MEC's forwarded responses: checked to be its signed ``gmuc.respond``
        transactions (the contract checks each device's signature); before the request is
        out they wait for it, later they go in a block of their own."""
        key = ctx.config.roster.get(sender)
        txs = []
        for data in msg.txs:
            try:
                tx = Transaction.from_bytes(data)
                tx.verify()
            except TxError as exc:
                ctx.drop("bad_tx", f"response from {sender}: {exc}")
                continue
            if tx.sender.hex() != key or tx.type != "gmuc.respond":
                ctx.drop("bad_tx", f"{tx.type} from {sender} is not its gmuc.respond")
                continue
            txs.append(tx)
        if msg.done:
            self.joins_done.add(sender)
        if self.request_tx is None and self.round == 0:
            self.responses += txs
            self._maybe_publish(ctx)
        elif txs:
            self._commit(ctx, txs)

    def _publish_task(self, ctx: NodeContext) -> None:
        """Vanilla's ``task.publish``, with ``gmuc.request`` and the responses, once every MEC
        heard its devices (or at the start-up timeout)."""
        self.want_publish = True
        self._maybe_publish(ctx)

    def _maybe_publish(self, ctx: NodeContext) -> None:
        if not self.want_publish or self.request_tx is not None:
            return
        if not self.joins_done >= set(self.mecs):
            return
        cfg, params = ctx.config, params_of(ctx)
        pool = self.chain.config.genesis.balances.get(ctx.node_id, 0)
        publish = {
            "task_id": cfg.task_id,
            "reward_pool": pool,
            "rounds": cfg.learning.training.rounds,
            "model": cfg.learning.model,
            "dataset": cfg.learning.dataset.name,
        }
        request = {
            "task_id": cfg.task_id,
            "min_samples": params.min_samples,
            "min_cpu_mhz": params.min_cpu_mhz,
            "min_energy_j": params.min_energy_j,
        }
        txs = [
            self.chain.transaction("task.publish", publish),
            self.chain.transaction("gmuc.request", request),
        ]
        self.request_tx = txs[1].hash
        # each MEC's responses in the order it signed them (its nonces)
        txs += sorted(self.responses, key=lambda tx: (tx.sender, tx.nonce))
        self.responses = []
        txs.append(self._offer(ctx))  # the first contract items (incentives)
        ctx.metrics.write("task_request", responses=len(txs) - 2, **request)
        self._commit(ctx, txs)

    def _on_gmuc_block(self, block: Block) -> None:
        if self.start_held and any(tx.hash == self.request_tx for tx in block.txs):
            self.start_held = False
            self._begin_round(self.ctx)

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        if self.round == 0 and not self._request_committed():
            self.start_held = True  # round 1 once the request is on the GMUC
            return
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

    def _aggregate(self, ctx: NodeContext) -> None:
        """Vanilla's; with cooperative sharding the shard's decided aggregate goes to the
        coordinator first, which closes the round (`close_round`) once every shard's is in."""
        coop = self.cooperative
        if coop is None or self.shared is not None:
            super()._aggregate(ctx)
            return
        if self.reported == self.round:
            return
        ctx.cancel_timer("deadline")
        self.reported = self.round
        self.decided = self._combine(ctx)
        state = self.chain.replica.chain.state
        samples = 0
        for d in self.decided[0]:
            response = gmuc_request.get_response(state, ctx.config.task_id, d)
            samples += int(response["samples"]) if response is not None else 0
        coop.report(self.chain.chain_id, self.round, self.weights, samples)

    def close_round(self, ctx: NodeContext, shared: Weights) -> None:
        """Cooperative sharding: the round's model is `shared` (every shard's); record it,
        evaluate it and send it for the next round as vanilla's publisher does."""
        self.weights = self.shared = shared
        try:
            super()._aggregate(ctx)
        finally:
            self.shared = None

    def _combine(self, ctx: NodeContext) -> tuple[list[str], dict[str, str]]:
        """The aggregate a quorum of the votes names (the gmuc contract decides the same on
        chain); none: the model stays. The votes go into the round's GMUC block."""
        if self.shared is not None:
            return self.decided  # cooperative: decided when the shard reported
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

    def _request_committed(self) -> bool:
        state = self.chain.replica.chain.state
        return gmuc_request.get_request(state, self.ctx.config.task_id) is not None

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
        txs = [tx for mec in sorted(update_txs) for tx in update_txs[mec]]
        # incentives: the MECs' item signatures and payments after every vote and record,
        # then the next round's contract items
        txs += [*self.incentives.take(round_no), self._offer(ctx)]
        super()._record_round(ctx, round_no, {"": txs}, [], accuracy, model)

    def _offer(self, ctx: NodeContext) -> Transaction:
        """``incentive.offer`` from the reputations on this GMUC (`incentives`)."""
        deadline_ms = round(ctx.config.learning.training.round_deadline_s * 1000)
        return self.incentives.offer(self.chain, ctx.config.task_id, ctx.config.seed, deadline_ms)

    def _pay_rewards(self, ctx: NodeContext) -> None:
        """Not vanilla's payout by samples: the MECs' pending pay reports (the rounds were
        paid as they went, `incentives`), then ``task.close`` refunds the rest."""
        txs = self.incentives.take()
        txs.append(self.chain.transaction("task.close", {"task_id": ctx.config.task_id}))
        self._commit(ctx, txs)

    def _send_stop(self, ctx: NodeContext) -> None:
        """Vanilla's; only the MECs keep the GMUC, so only they report its final height."""
        self.absent |= self.devices
        super()._send_stop(ctx)


class Cooperative:
    """Cooperative sharding: the shards are sub-tasks of one task. Each round every shard's
    publisher reports its GMUC shard's decided aggregate and its workers' samples (their
    responses on the GMUC); once all are in, the one global model is their average weighted
    by samples (`combine_shards`: for FedAvg, the model one FedAvg over all the shards'
    updates gives), and every shard records it as its round's model and trains it next."""

    def __init__(self, parts: Mapping[str, tuple[TwoLayerPublisherRole, NodeContext]]) -> None:
        self.parts = parts
        self.reports: dict[int, dict[str, tuple[Weights, int]]] = {}

    def report(self, chain_id: str, round_no: int, weights: Weights, samples: int) -> None:
        """Shard `chain_id`'s result of `round_no`; the last one closes the round."""
        got = self.reports.setdefault(round_no, {})
        got[chain_id] = (weights, samples)
        if len(got) < len(self.parts):
            return
        del self.reports[round_no]
        shared = combine_shards([got[c] for c in sorted(got)])
        log.info(
            "round %d: shards combined (samples %s)",
            round_no,
            {c: got[c][1] for c in sorted(got)},
        )
        for cid in sorted(self.parts):
            role, view = self.parts[cid]
            role.close_round(view, shared)


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
        if params_of(ctx).cooperative and len(self.parts) > 1:
            coop = Cooperative(self.parts)
            for role, _ in self.parts.values():
                role.cooperative = coop
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
