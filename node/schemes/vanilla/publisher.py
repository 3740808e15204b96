"""The vanilla publisher: publishes the task, aggregates, evaluates, records, ends the run."""

from __future__ import annotations

import dataclasses
import logging

from node.codec import Message
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import weights_to_bytes
from node.ledger.chains import Committer
from node.roles.base import NodeContext, Role
from node.roles.committers import committer_for
from node.roles.learner import Learner, check_update
from node.schemes.rewards import proportional
from node.schemes.vanilla.common import (
    FINAL_COMMIT_S,
    FINAL_LINGER_S,
    VALIDATION_SAMPLES,
    replica_of,
)
from node.schemes.vanilla.messages import (
    GlobalModel,
    Hello,
    IndividualUpdate,
    Partial,
    Stop,
    join_parts,
)
from topologies import NodeKind

log = logging.getLogger(__name__)

LINGER_POLL_S = 0.05


class PublisherRole(Role):
    """Publishes the task, aggregates the MECs' partials, evaluates, and ends the run."""

    kind = "publisher"

    def start(self, ctx: NodeContext) -> None:
        """Build the initial global model and wait for every node's hello."""
        self.learner = Learner(ctx.config.learning, ctx.config.seed)
        self.weights = self.learner.weights()
        agg = ctx.config.aggregator
        self.strategy = make_strategy(agg.name, agg.params)
        self.individual: dict[str, list[Update]] = {}
        self.expected = {n.id for n in ctx.topology.daemons()} - {ctx.node_id}
        self.mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
        self.ready: set[str] = set()
        self.round = 0
        self.round_started = 0.0
        self.partials: dict[str, Partial] = {}
        self.parts: dict[str, dict[int, Partial]] = {}  # per MEC: its partial's parts so far
        self.update_txs: dict[str, list[Transaction]] = {}
        # device -> why its update was dropped this round (it counts as rejected)
        self.dropped_updates: dict[str, str] = {}
        self.samples_by_device: dict[str, int] = {}
        self.member_of_key: dict[bytes, str] | None = None  # genesis member by public key
        self.last_tx: bytes | None = None
        self.final_deadline = 0.0
        self.final_height = 0
        self.lingering: list[str] = []
        self.absent: set[str] = set()  # nodes that missed the last round (presumed down)
        self.run_started = ctx.now()
        self.chain = ctx.chains[ctx.config.plan.chains[0]]  # the task chain
        self.chain.install(self.make_committer(ctx))
        ctx.set_timer("startup", ctx.config.startup_timeout_s)
        log.info("waiting for %d nodes", len(self.expected))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `hello` from any node and `partial` from MECs."""
        body = msg.payload
        if isinstance(body, Hello) and msg.sender in self.expected:
            self._on_hello(ctx, msg.sender)
        elif isinstance(body, Partial) and msg.sender in self.mecs:
            self._on_partial(ctx, msg.sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_hello(self, ctx: NodeContext, sender: str) -> None:
        if self.round == 0 and sender not in self.ready:
            self.ready.add(sender)
            if self.ready == self.expected:
                ctx.cancel_timer("startup")
                ctx.metrics.write("started", startup_s=ctx.now() - self.run_started)
                self._publish_task(ctx)
                self._begin_round(ctx)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Start-up timeout and round deadline."""
        if name == "startup" and self.round == 0:
            missing = sorted(self.expected - self.ready)
            log.warning("start-up timeout: %d nodes never said hello: %s", len(missing), missing)
            if not any(m in self.ready for m in self.mecs):
                log.error("no MEC is up; ending the run")
                self._finish(ctx)
                return
            self._publish_task(ctx)
            self._begin_round(ctx)
        elif name == "deadline":
            self._aggregate(ctx)
        elif name == "linger":
            self._check_linger(ctx)
        elif name == "final":
            self._stop_once_committed(ctx)

    def make_committer(self, ctx: NodeContext) -> Committer:
        """How the task chain's blocks get written: the chain's finality rule decides (the
        single writer or a PBFT committee); a scheme with its own way overrides this."""
        return committer_for(ctx, self.chain, self.block_peers)

    def block_peers(self) -> list[str]:
        """Who gets each block the publisher writes as the single writer (every other node;
        a scheme that spreads blocks otherwise overrides this)."""
        return sorted(self.expected)

    def _commit(self, ctx: NodeContext, txs: list[Transaction]) -> None:
        """Get `txs` on the task chain, by the committer its finality rule calls for (as the
        single writer: build, append and send the block; with a committee: submit to it)."""
        if txs:
            self.last_tx = txs[-1].hash
        self.chain.submit(txs)

    def _publish_task(self, ctx: NodeContext) -> None:
        replica = replica_of(ctx)
        cfg = ctx.config
        pool = replica.chain.config.genesis.balances.get(ctx.node_id, 0)
        payload = {
            "task_id": cfg.task_id,
            "reward_pool": pool,
            "rounds": cfg.learning.training.rounds,
            "model": cfg.learning.model,
            "dataset": cfg.learning.dataset.name,
        }
        self._commit(ctx, [replica.transaction("task.publish", payload)])

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        """Send the global model (`model`: self.weights already encoded) for the next round."""
        self.round += 1
        self.round_started = ctx.now()
        self.partials = {}
        self.parts = {}
        self.update_txs = {}
        self.individual = {}
        self.dropped_updates = {}
        deadline = ctx.config.learning.training.round_deadline_s
        if model is None:
            model = weights_to_bytes(self.weights)
        ctx.multicast(self.mecs, GlobalModel(self.round, model, deadline))
        ctx.set_timer("deadline", deadline)

    def _on_partial(self, ctx: NodeContext, sender: str, p: Partial) -> None:
        if p.round != self.round or sender in self.partials:
            ctx.drop("stale_round", f"partial round {p.round!r} from {sender}")
            return
        if p.parts > 1:
            joined = self._join_part(ctx, sender, p)
            if joined is None:
                return
            p = joined
        try:
            txs = [Transaction.from_bytes(raw) for raw in p.txs]
            for tx in txs:
                tx.verify()
            if p.samples > 0 and p.updates is not None:
                self.individual[sender] = self._check_individual(ctx, p.updates, txs)
            elif p.samples > 0:
                p = dataclasses.replace(p, weights=check_update(self.weights, p.weights))
        except (ValueError, TypeError, KeyError) as exc:
            ctx.drop("bad_model", f"partial from {sender}: {exc}")
            self._drop_partial_updates(ctx, sender, p.contributors)
            return
        self.update_txs[sender] = txs
        self.partials[sender] = p
        if len(self.partials) == len(self.mecs):
            self._aggregate(ctx)

    def _join_part(self, ctx: NodeContext, sender: str, p: Partial) -> Partial | None:
        """Keep part `p.part` of `sender`'s partial; the whole partial once every part is
        here (None before, or when the parts are refused: at most one part per device of
        that MEC, each once, all of one split)."""
        devices = sum(1 for n in ctx.topology.of_kind(NodeKind.DEVICE) if n.parent == sender)
        held = self.parts.setdefault(sender, {})
        if p.parts > max(devices, 1) or p.part >= p.parts or p.part in held:
            ctx.drop("bad_partial", f"part {p.part} of {p.parts} from {sender}")
            return None
        held[p.part] = p
        if len(held) < p.parts:
            return None
        del self.parts[sender]
        try:
            return join_parts([held[i] for i in range(p.parts)])
        except (KeyError, ValueError) as exc:
            ctx.drop("bad_partial", f"partial from {sender}: {exc}")
            return None

    def _check_individual(
        self, ctx: NodeContext, updates: tuple[IndividualUpdate, ...], txs: list[Transaction]
    ) -> list[Update]:
        """Device updates a MEC forwarded one by one; each must match its device's signed
        transaction (blob hash), so a MEC that tampers with an update is caught here."""
        by_key = {tx.sender.hex(): tx for tx in txs}
        out = []
        for item in updates:
            node, samples = item.node, item.samples
            weights = check_update(self.weights, item.weights)
            tx = by_key.get(ctx.config.roster.get(str(node), ""))
            if tx is None or tx.payload.get("blob") != sha256(weights_to_bytes(weights)):
                ctx.drop("tampered_update", f"update of {node} does not match its transaction")
                self.dropped_updates[str(node)] = "tampered"
                continue
            if not isinstance(samples, int) or samples <= 0:
                raise ValueError(f"update of {node} without a sample count")
            out.append(Update(weights, samples, None, str(node)))
        return out

    def _drop_partial_updates(self, ctx: NodeContext, mec: str, listed: tuple[str, ...]) -> None:
        """Count the updates of a refused partial (the devices it lists that are that
        MEC's) as rejected this round."""
        own = {n.id for n in ctx.topology.of_kind(NodeKind.DEVICE) if n.parent == mec}
        for node in listed:
            if node in own:
                self.dropped_updates.setdefault(node, "invalid_partial")

    def _combine(self, ctx: NodeContext) -> tuple[list[str], dict[str, str]]:
        """Aggregate this round's updates into self.weights with the strategy; (contributors,
        rejected device -> reason). The MECs sent every device's update where the strategy
        needs them one by one, else one partial each (sender: the MEC, in arrival order)."""
        updates: list[Update] = []
        devices: dict[str, tuple[str, ...]] = {}  # sender of an update -> the devices in it
        if self.strategy.needs.individual:
            updates = [u for mec in sorted(self.individual) for u in self.individual[mec]]
            devices = {u.sender: (u.sender,) for u in updates}
        else:
            for mec, p in self.partials.items():
                if p.samples and p.weights is not None:
                    updates.append(Update(p.weights, p.samples, None, mec))
                    devices[mec] = p.contributors
        if not updates:
            return [], {}
        if self.strategy.needs.accuracy:
            updates = [self._with_accuracy(u) for u in updates]
        try:
            combined = self.strategy.combine(updates)
        except ValueError as exc:  # e.g. Krum with too few updates this round
            log.warning("round %d: the aggregator refused the updates: %s", self.round, exc)
            return [], {d: "aggregator_refused" for ds in devices.values() for d in ds}
        if combined.weights is None:
            log.warning("round %d: the aggregator kept no update", self.round)
        else:
            self.weights = combined.weights
        kept, rejected = combined.selection.kept, combined.selection.rejected
        reasons = {d: r.reason for r in rejected for d in devices[r.update.sender]}
        return sorted(d for u in kept for d in devices[u.sender]), reasons

    def _with_accuracy(self, update: Update) -> Update:
        """The update with its accuracy on the publisher's validation samples (the first
        VALIDATION_SAMPLES test samples: our choice, the papers do not say which data)."""
        test_x, test_y = self.learner.test_x, self.learner.test_y
        n = min(VALIDATION_SAMPLES, len(test_y))
        self.learner.load(update.weights)
        acc = self.learner.evaluate_on(test_x[:n], test_y[:n]).accuracy
        return Update(update.weights, update.samples, acc, update.sender)

    def _aggregate(self, ctx: NodeContext) -> None:
        """Combine round r's updates; send round r+1's global model first, then evaluate
        round r's model and record it on chain while the devices train (the round record
        still says round r)."""
        ctx.cancel_timer("deadline")
        contributors, reasons = self._combine(ctx)
        reasons.update(self.dropped_updates)
        rejected = sorted(reasons)
        missing_mecs = sorted(set(self.mecs) - set(self.partials))
        missing_devices = sorted(m for p in self.partials.values() for m in p.missing)
        self.absent = {*missing_mecs, *missing_devices}
        round_no, started, update_txs = self.round, self.round_started, self.update_txs
        if not contributors:
            log.warning("round %d: no usable update; the global model is unchanged", round_no)
        model = weights_to_bytes(self.weights)  # encoded once: the next global and the blob
        last = round_no >= ctx.config.learning.training.rounds
        if not last:
            self._begin_round(ctx, model)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        self._record_round(ctx, round_no, update_txs, contributors, result.accuracy, model)
        round_time = ctx.now() - started
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            contributors=len(contributors),
            rejected=rejected,
            rejected_reasons=dict(sorted(reasons.items())),
            missing=missing_mecs + missing_devices,
            round_time_s=round_time,
            elapsed_s=ctx.now() - self.run_started,
        )
        log.info(
            "round %d: accuracy %.4f loss %.4f (%d devices, %.2fs)",
            round_no,
            result.accuracy,
            result.loss,
            len(contributors),
            round_time,
        )
        if last:
            self._finish(ctx)

    def _record_round(
        self,
        ctx: NodeContext,
        round_no: int,
        update_txs: dict[str, list[Transaction]],
        contributors: list[str],
        accuracy: float,
        model: bytes,
    ) -> None:
        """A block with round `round_no`'s update transactions and the record of its global
        model (`model`: its encoding, hashed here once)."""
        replica = replica_of(ctx)
        txs = [tx for mec in sorted(update_txs) for tx in update_txs[mec]]
        if self.member_of_key is None:  # built once (a search per transaction was O(members))
            members = replica.chain.config.genesis.members
            self.member_of_key = {key: nid for nid, (key, _) in members.items()}
        for tx in txs:
            sender = self.member_of_key.get(tx.sender)
            if sender is not None and sender in contributors:
                samples = int(tx.payload.get("samples", 0))
                self.samples_by_device[sender] = self.samples_by_device.get(sender, 0) + samples
        # recorded even without contributors (the model is then the previous round's): the
        # task contract closes the round, so that the next round's updates are recorded
        key = sha256(model)
        replica.blobs.put_behind(key, model)
        payload = {
            "task_id": ctx.config.task_id,
            "round": round_no,
            "blob": key,
            "size": len(model),
            "accuracy": float(accuracy),
            "contributors": contributors,
        }
        txs.append(replica.transaction("task.record_global", payload))
        self._commit(ctx, txs)

    def _pay_rewards(self, ctx: NodeContext) -> None:
        """Share the pool by contributed samples (our choice; `rewards.by_samples` is the same
        rule on the chain's records), then close the task."""
        replica = replica_of(ctx)
        task_id = ctx.config.task_id
        pool = replica.chain.config.genesis.balances.get(ctx.node_id, 0)
        txs = [
            replica.transaction("task.reward", {"task_id": task_id, "to": p.to, "amount": p.amount})
            for p in proportional(pool, self.samples_by_device)
        ]
        txs.append(replica.transaction("task.close", {"task_id": task_id}))
        self._commit(ctx, txs)

    def _finish(self, ctx: NodeContext) -> None:
        if self.round > 0:
            self._pay_rewards(ctx)
        self.final_deadline = ctx.now() + FINAL_COMMIT_S
        self._stop_once_committed(ctx)

    def _stop_once_committed(self, ctx: NodeContext) -> None:
        """Send ``stop`` once the last submitted transaction is on chain (at once for the
        single writer; a committee commits it later), or at the deadline."""
        store = self.chain.replica.chain.store
        if self.last_tx is None or store.tx_location(self.last_tx) is not None:
            self._send_stop(ctx)
        elif ctx.now() > self.final_deadline:
            log.warning("the last block was not committed in time")
            self._send_stop(ctx)
        else:
            ctx.set_timer("final", 0.2)

    def _send_stop(self, ctx: NodeContext) -> None:
        """Send ``stop`` with the final height, then linger serving ledger sync until every
        node still in the run reports that height (or FINAL_LINGER_S passes): a node whose
        MEC died has missed blocks and catches up from here (or from any other peer)."""
        height = replica_of(ctx).height
        ctx.multicast(sorted(self.expected), Stop(height))
        ctx.metrics.write("finished", rounds=self.round, elapsed_s=ctx.now() - self.run_started)
        alive = self.ready if self.round == 0 else self.expected
        self.lingering = sorted(alive - self.absent)
        self.final_height = height
        self.final_deadline = ctx.now() + FINAL_LINGER_S
        self._check_linger(ctx)

    def _check_linger(self, ctx: NodeContext) -> None:
        heights = replica_of(ctx).sync.peer_heights
        behind = [n for n in self.lingering if heights.get(n, -1) < self.final_height]
        if not behind:
            ctx.stop()
        elif ctx.now() > self.final_deadline:
            log.warning(
                "stopping; %d nodes did not report the final height %d: %s",
                len(behind),
                self.final_height,
                behind,
            )
            ctx.stop()
        else:
            ctx.set_timer("linger", LINGER_POLL_S)
