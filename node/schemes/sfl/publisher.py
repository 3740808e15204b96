"""The SFL publisher: task publisher and central aggregator (the paper's Bob and aggregator;
one node here, our choice). It drives the task contract round by round (see the package
docstring); with a single writer it is also the only evaluator."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from node.codec import Message
from node.contracts import sfl as contract
from node.core.encoding import sha256
from node.core.finality import Committee
from node.core.tx import Transaction, TxError
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext
from node.schemes.sfl.common import params_of
from node.schemes.sfl.evaluation import LOCAL, MODEL, Evaluator, aggregate_blob, round_inputs
from node.schemes.sfl.messages import EvaluateRequest, EvaluatorVote, Finalize, TaskDone
from node.schemes.sfl.testdata import TestCommitment, commit, group_for_round, make_groups
from node.schemes.vanilla.common import replica_of
from node.schemes.vanilla.publisher import PublisherRole
from topologies import NodeKind

log = logging.getLogger(__name__)

FINALIZE_WAIT_S = 10.0  # how long devices get to call finalize_contract() (our choice)
VOTE_TYPES = ("sfl.evaluate_local_model", "sfl.evaluate_model")

# the publisher's stage in a round (the contract's phase is the truth; this says what the
# publisher is waiting for)
COLLECTING, SUBMITTED, LOCAL_VOTES, AGGREGATED, MODEL_VOTES = (
    "collecting",
    "submitted",
    "local_votes",
    "aggregated",
    "model_votes",
)


class SflPublisherRole(PublisherRole):
    """Publishes the task (init), closes each round's submissions, discloses its test group,
    gets the updates evaluated, aggregates the qualified ones, and ends the task."""

    kind = "publisher"

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start, then the committed test groups and the evaluator set."""
        super().start(ctx)
        self.params = params_of(ctx)
        if self.params.pretrain_samples > 0:
            self.weights = self._pretrained(ctx)
        replica = replica_of(ctx)
        groups = make_groups(
            self.learner.test_x,
            self.learner.test_y,
            self.params.test_groups,
            self.params.group_size,
        )
        for blob in groups:
            replica.blobs.put(blob)
        self.commitment: TestCommitment = commit(groups, ctx.config.seed)
        finality = replica.chain.config.finality
        roster = ctx.config.roster
        by_key = {bytes.fromhex(key): nid for nid, key in roster.items()}
        if isinstance(finality, Committee):
            self.evaluators = [by_key[k] for k in finality.members]
            faulty = (len(self.evaluators) - 1) // 3
            self.quorum = len(self.evaluators) - faulty  # our choice: n - f (>= 2f + 1)
            self.evaluator: Evaluator | None = None
        else:
            self.evaluators, self.quorum = [ctx.node_id], 1
            mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
            self.evaluator = Evaluator(ctx, replica, self.learner, self.params, mecs)
        self.evaluator_keys = {bytes.fromhex(roster[e]): e for e in self.evaluators}
        self.stage = COLLECTING
        self.votes_seen: set[tuple[str, str, int]] = set()
        self.finalize_txs: dict[str, Transaction] = {}
        self.finalizing = False
        self.chain.subscribe(lambda _block: ctx.set_timer("advance", 0.0))

    def _pretrained(self, ctx: NodeContext) -> Weights:
        """The initial global model pre-trained on a seeded sample of `pretrain_samples`
        training samples (the paper's public data set; our stand-in), `pretrain_epochs`."""
        from node.learning.datasets import load_dataset
        from node.learning.train import train_local

        x, y = self.learner.train_x, self.learner.train_y
        if len(y) == 0:  # prepared data gives the publisher only the test set
            ds = self.learner.cfg.dataset
            full = load_dataset(ds.name, ds.root, seed=ctx.config.seed)
            x, y = full.train_x, full.train_y
        n = min(self.params.pretrain_samples, len(y))
        rng = np.random.default_rng([ctx.config.seed, 0x9E7])
        idx = np.sort(rng.choice(len(y), size=n, replace=False))
        t = ctx.config.learning.training
        result = train_local(
            self.learner.model,
            x[idx],
            y[idx],
            epochs=self.params.pretrain_epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            seed=ctx.config.seed,
            momentum=t.momentum,
        )
        log.info("pre-trained the initial model on %d samples: accuracy %.4f", n, result.accuracy)
        return self.learner.weights()

    # -- messages and timers ----------------------------------------------------------------
    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Evaluator votes (PBFT MECs) and devices' finalize calls; the rest is vanilla's."""
        body = msg.payload
        if isinstance(body, EvaluatorVote) and msg.sender in self.evaluators:
            self._on_vote(ctx, msg.sender, body.tx)
        elif isinstance(body, Finalize) and msg.sender in ctx.config.roster:
            self._on_finalize(ctx, msg.sender, body.tx)
        else:
            super().on_message(ctx, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """``advance`` (a block was appended), ``evaluation`` (no quorum in time),
        ``finalize`` (the devices' time to finalize is over); the rest is vanilla's."""
        if name == "advance":
            self._advance(ctx)
        elif name == "evaluation":
            log.error(
                "round %d: no quorum of evaluators (%d of %s) within %.0f s (stage %s); "
                "ending the run",
                self.round,
                self.quorum,
                self.evaluators,
                self.params.evaluation_timeout_s,
                self.stage,
            )
            self._finish(ctx)
        elif name == "finalize":
            self._post_evaluation(ctx)
        else:
            super().on_timer(ctx, name)

    # -- task and rounds -----------------------------------------------------------------
    def _publish_task(self, ctx: NodeContext) -> None:
        """``sfl.init``: the task, the initial model's hash and the committed test set."""
        replica = replica_of(ctx)
        model = weights_to_bytes(self.weights)
        replica.blobs.put(model)
        c = self.commitment
        payload: dict[str, Any] = {
            "task_id": ctx.config.task_id,
            "model": sha256(model),
            "criterion": "accuracy",
            "threshold": float(self.params.threshold),
            "reward": replica.chain.config.genesis.balances.get(ctx.node_id, 0),
            "rounds": ctx.config.learning.training.rounds,
            "groups": list(c.groups),
            "group_size": c.group_size,
            "seed_commit": c.seed_commit,
            "evaluators": list(self.evaluators),
            "quorum": self.quorum,
        }
        self._commit(ctx, [replica.transaction("sfl.init", payload)])

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        """Send the global model the chain names (`get_global_model()`) for the next round."""
        replica = replica_of(ctx)
        current = contract.get_global_model(replica.chain.state)
        if current is not None:
            held = replica.blobs.get(current["blob"])
            if held is not None:
                model = held
                self.weights = weights_from_bytes(held)
        self.stage = COLLECTING
        super()._begin_round(ctx, model)

    def _aggregate(self, ctx: NodeContext) -> None:
        """The submission window is over (every MEC answered, or the deadline): put the
        round's verified submissions on chain, then disclose the round's test group
        (which closes the window), or not (``disclose: false``)."""
        ctx.cancel_timer("deadline")
        if self.stage != COLLECTING:
            return
        replica = replica_of(ctx)
        missing_mecs = sorted(set(self.mecs) - set(self.partials))
        missing_devices = sorted(m for p in self.partials.values() for m in p.missing)
        self.absent = {*missing_mecs, *missing_devices}  # not waited for at the end
        held = {u.sender: u for mec in self.individual.values() for u in mec}
        txs = []
        for mec in sorted(self.update_txs):
            for tx in self.update_txs[mec]:
                device = self._member(tx.sender)
                update = held.get(device or "")
                if update is None or tx.type != "sfl.submit_model_update":
                    continue
                blob = weights_to_bytes(update.weights)
                replica.blobs.put_behind(sha256(blob), blob)
                txs.append(tx)
        submissions = len(txs)
        if self.params.disclose:
            g = group_for_round(self.commitment, self.round)
            payload = {
                "round": self.round,
                "group": g,
                "seed": self.commitment.seed,
                "group_blob": self.commitment.groups[g],
            }
            txs.append(replica.transaction("sfl.disclosure_test_data", payload))
        self.stage = SUBMITTED
        log.info(
            "round %d: %d submissions on chain next (missing: %s)",
            self.round,
            submissions,
            sorted(self.absent) or "none",
        )
        if txs:
            self._commit(ctx, txs)
        else:
            ctx.set_timer("advance", 0.0)

    def _member(self, key: bytes) -> str | None:
        """The genesis member with public key `key`."""
        if self.member_of_key is None:
            members = self.chain.replica.chain.config.genesis.members
            self.member_of_key = {k: nid for nid, (k, _) in members.items()}
        return self.member_of_key.get(key)

    def _advance(self, ctx: NodeContext) -> None:
        """Move the round on as far as the chain's state allows (called after every block)."""
        state = replica_of(ctx).chain.state
        task = contract.get_FL_task(state)
        if task is None or self.finalizing:
            return
        r = self.round
        on_chain = self.last_tx is None or self.chain.replica.chain.store.tx_location(self.last_tx)
        if self.stage == SUBMITTED and on_chain:
            self._request(ctx, LOCAL)
        elif self.stage == LOCAL_VOTES and task["round"] == r and task["phase"] == "aggregate":
            self._aggregate_qualified(ctx)
        elif self.stage == AGGREGATED and on_chain and task["phase"] == "check":
            self._request(ctx, MODEL)
        elif self.stage == MODEL_VOTES and (task["round"] > r or task["phase"] == "done"):
            ctx.cancel_timer("evaluation")
            self._round_done(ctx, state)

    def _request(self, ctx: NodeContext, phase: str) -> None:
        """Ask the evaluators for `phase` of this round (or evaluate, as the single writer)."""
        self.stage = LOCAL_VOTES if phase == LOCAL else MODEL_VOTES
        ctx.set_timer("evaluation", self.params.evaluation_timeout_s)
        if self.evaluator is not None:
            self.evaluator.evaluate(ctx, self.round, phase, lambda tx: self._commit(ctx, [tx]))
        else:
            height = replica_of(ctx).height
            ctx.multicast(self.evaluators, EvaluateRequest(self.round, phase, height))

    def _on_vote(self, ctx: NodeContext, sender: str, raw: bytes) -> None:
        """An evaluator's signed evaluation: checked, then submitted (one block each)."""
        try:
            tx = Transaction.from_bytes(raw)
            tx.verify()
        except (TxError, TypeError, ValueError) as exc:
            ctx.drop("bad_tx", f"vote from {sender}: {exc}")
            return
        round_no = tx.payload.get("round")
        key = (sender, tx.type, round_no if isinstance(round_no, int) else -1)
        if self.evaluator_keys.get(tx.sender) != sender or tx.type not in VOTE_TYPES:
            ctx.drop("unexpected", f"vote {tx.type} from {sender}")
        elif key in self.votes_seen or round_no != self.round:
            ctx.drop("stale_round", f"vote {tx.type} round {round_no!r} from {sender}")
        else:
            self.votes_seen.add(key)
            self._commit(ctx, [tx])

    def _aggregate_qualified(self, ctx: NodeContext) -> None:
        """``sfl.aggregate_model_update``: the FedAvg of the qualified updates (the same
        function the evaluators recompute it with)."""
        replica = replica_of(ctx)
        inputs = round_inputs(replica.chain.state, self.round)
        chosen = set(inputs.qualified)
        selected = [(d, replica.blobs.get(b), n) for d, b, n in inputs.updates if d in chosen]
        current = replica.blobs.get(inputs.global_blob) or weights_to_bytes(self.weights)
        encoded = aggregate_blob(self.weights, selected, current)
        key = sha256(encoded)
        replica.blobs.put_behind(key, encoded)
        payload = {
            "round": self.round,
            "selected": sorted(chosen),
            "global_blob": key,
            "size": len(encoded),
        }
        self.stage = AGGREGATED
        self._commit(ctx, [replica.transaction("sfl.aggregate_model_update", payload)])

    def _round_done(self, ctx: NodeContext, state: Any) -> None:
        """Round r is decided on chain: record it, then start round r+1 or end the task."""
        r = self.round
        record = contract.round_record(state, r) or {}
        current = contract.get_global_model(state)
        replica = replica_of(ctx)
        model = None if current is None else replica.blobs.get(current["blob"])
        if model is not None:
            self.weights = weights_from_bytes(model)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        submitted = [d for d, _ in contract.round_updates(state, r)]
        qualified = list(record.get("qualified") or [])
        rejected = sorted(set(submitted) - set(qualified))
        ctx.metrics.write(
            "round",
            round=r,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            contributors=len(qualified),
            rejected=rejected,
            rejected_reasons={d: "below_threshold" for d in rejected},
            qualified=len(qualified),
            eval_data=record.get("data"),
            contract_accuracy=record.get("accuracy"),
            accepted=record.get("accepted"),
            round_time_s=ctx.now() - self.round_started,
            elapsed_s=ctx.now() - self.run_started,
        )
        log.info(
            "round %d: accuracy %.4f (contract %s on %s data), %d of %d updates qualified",
            r,
            result.accuracy,
            record.get("accuracy"),
            record.get("data"),
            len(qualified),
            len(submitted),
        )
        if r >= ctx.config.learning.training.rounds:
            self._finish(ctx)
        else:
            self._begin_round(ctx)

    # -- the end: finalize_contract() by the devices, post_evaluation() ------------------
    def _finish(self, ctx: NodeContext) -> None:
        """Tell the devices the task is over; they call finalize_contract()."""
        if self.finalizing:
            return
        self.finalizing = True
        ctx.cancel_timer("evaluation")
        task = contract.get_FL_task(replica_of(ctx).chain.state)
        if task is None or task["phase"] != "done":
            self._stop(ctx)
            return
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        ctx.multicast(devices, TaskDone(self.round))
        ctx.set_timer("finalize", FINALIZE_WAIT_S)

    def _on_finalize(self, ctx: NodeContext, sender: str, raw: bytes) -> None:
        try:
            tx = Transaction.from_bytes(raw)
            tx.verify()
        except (TxError, TypeError, ValueError) as exc:
            ctx.drop("bad_tx", f"finalize from {sender}: {exc}")
            return
        if (
            not self.finalizing
            or tx.type != "sfl.finalize_contract"
            or tx.sender.hex() != ctx.config.roster.get(sender)
            or sender in self.finalize_txs
        ):
            ctx.drop("unexpected", f"finalize from {sender}")
            return
        self.finalize_txs[sender] = tx
        devices = {n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)}
        if devices <= set(self.finalize_txs):
            ctx.cancel_timer("finalize")
            self._post_evaluation(ctx)

    def _post_evaluation(self, ctx: NodeContext) -> None:
        """The devices' finalize calls (an unqualified one fails on chain: it is paid
        nothing), then ``sfl.post_evaluation`` (the task's results; the rest refunded)."""
        replica = replica_of(ctx)
        txs = [self.finalize_txs[d] for d in sorted(self.finalize_txs)]
        txs.append(replica.transaction("sfl.post_evaluation", {}))
        self._commit(ctx, txs)
        self._stop(ctx)

    def _stop(self, ctx: NodeContext) -> None:
        from node.schemes.vanilla.common import FINAL_COMMIT_S

        self.final_deadline = ctx.now() + FINAL_COMMIT_S
        self._stop_once_committed(ctx)

    def _send_stop(self, ctx: NodeContext) -> None:
        """Record what each device was paid (the chain's state), then vanilla's stop."""
        state = replica_of(ctx).chain.state
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        paid = {d: contract.paid_to(state, d) for d in devices}
        ctx.metrics.write("sfl_rewards", paid=paid, task=contract.get_FL_task(state))
        super()._send_stop(ctx)
