"""The `vanilla` scheme: hierarchical FedAvg, devices → their MEC → the publisher.

How it works
------------
Start-up: every node sends ``hello`` to the publisher (again each second until its first
``global``); the publisher starts round 1 when all have answered, or at the start-up
timeout with those that did.

Round r: the publisher sends ``global{round, weights, deadline_s}`` to every MEC; each MEC
forwards it to its devices with 80% of the deadline left (our choice: it leaves the rest
for the MEC→publisher leg). A device loads the weights, trains on its partition and sends
``update{round, weights, samples, loss, accuracy}`` to its MEC. The MEC averages what it
got (FedAvg weighted by samples) and sends ``partial{round, weights, samples,
contributors, missing}`` when all its devices answered or its deadline passed. The
publisher combines the partials (FedAvg over partials weighted by their sample totals
equals FedAvg over all devices), evaluates on the test set, records the round and starts
the next. A device that crashed or is too slow is left out of that round and logged.
After the last round the publisher sends ``stop`` to every node.

The ledger (single writer): a device puts its trained weights in its blob store and signs
a ``task.record_update{task_id, round, blob hash, size, samples}`` transaction that travels
with the update; the MEC checks the signature, that the blob hashes to what the
transaction says, keeps the blob, and forwards the transactions with its partial. After
aggregating, the publisher (the only validator here; PBFT comes later) builds a block with
the round's update transactions and its own ``task.record_global`` (the global model's blob
hash, accuracy, contributors), appends it and sends it to every node, which verifies it
completely before appending it to its own ledger. Block 1 publishes the task (escrowing
the reward pool); the last block pays each device a share of the pool proportional to the
samples it contributed (our choice; the vanilla baseline has no incentive rule) and closes
the task. ``stop`` carries the final height so that nodes wait (briefly) for the last block.

Each role checks who sent what (``global`` only from the publisher or one's own MEC,
``update`` only from one's own devices, for the current round, once) and that received
weights have the model's exact names, shapes and dtypes; anything else is dropped with
a counted reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from node.codec import Message
from node.learning.aggregate import fedavg
from node.learning.aggregators import (
    NoAcceptedUpdatesError,
    Update,
    accepted,
    make_aggregator,
    select_top_k,
)
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.ledger.encoding import sha256
from node.ledger.replica import Replica
from node.ledger.tx import Transaction, TxError
from node.roles.base import NodeContext, Role
from node.roles.learner import Learner, check_update
from node.roles.threats import DeviceThreats, edge_fault, edge_output
from node.roles.validator import PbftValidator
from topologies import NodeKind

log = logging.getLogger(__name__)

PUBLISHER = "pub"
MEC_DEADLINE_FRACTION = 0.8
HELLO_INTERVAL_S = 1.0
FINAL_SYNC_S = 5.0
FINAL_COMMIT_S = 20.0
ACCURACY_AGGREGATORS = ("top_k_accuracy", "accuracy_threshold")
VALIDATION_SAMPLES = 1000


def _replica(ctx: NodeContext) -> Replica:
    if ctx.replica is None:
        raise RuntimeError("the vanilla scheme needs a ledger replica on every node")
    return ctx.replica


def _stop(ctx: NodeContext, msg: Message) -> None:
    """Stop once the ledger holds the publisher's final block (or after FINAL_SYNC_S)."""
    height = msg.payload.get("height")
    replica = _replica(ctx)
    if isinstance(height, int) and height > replica.height:
        ctx.emit(replica.sync.announce([PUBLISHER]))
        ctx.stop_when_synced(height, FINAL_SYNC_S)
    else:
        ctx.stop()


def _parse_update_tx(ctx: NodeContext, msg: Message, round_no: int) -> tuple[Transaction, bytes]:
    """The device's signed update transaction and its blob; ValueError if they do not match."""
    blob, raw = msg.payload.get("blob"), msg.payload.get("tx")
    if not isinstance(blob, bytes) or not isinstance(raw, bytes):
        raise ValueError("update without blob or transaction")
    try:
        tx = Transaction.from_bytes(raw)
        tx.verify()
    except TxError as exc:
        raise ValueError(f"transaction: {exc}") from None
    if tx.sender.hex() != ctx.config.roster.get(msg.sender):
        raise ValueError("transaction signed by another key than the sender's")
    p = tx.payload
    if tx.type != "task.record_update" or p.get("round") != round_no:
        raise ValueError("not an update transaction for this round")
    if p.get("blob") != sha256(blob) or p.get("size") != len(blob):
        raise ValueError("blob does not match the transaction's hash and size")
    if not isinstance(p.get("samples"), int) or p["samples"] <= 0:
        raise ValueError("transaction without a sample count")
    return tx, blob


def _devices_of(ctx: NodeContext, mec_id: str) -> list[str]:
    return [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE) if n.parent == mec_id]


class _Greeter(Role):
    """Says hello to the publisher until the first global model arrives."""

    greeted = False

    def start(self, ctx: NodeContext) -> None:
        """Announce this node (and its ledger height, so that a restarted node catches up)."""
        ctx.emit(_replica(ctx).sync.announce([PUBLISHER]))
        self._hello(ctx)

    def _hello(self, ctx: NodeContext) -> None:
        if not self.greeted:
            ctx.send(PUBLISHER, "hello", {"kind": str(ctx.me.kind)})
            ctx.set_timer("hello", HELLO_INTERVAL_S)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Repeat the hello."""
        if name == "hello":
            self._hello(ctx)


class DeviceRole(_Greeter):
    """Trains on its partition whenever its MEC sends a global model."""

    kind = "device"

    def start(self, ctx: NodeContext) -> None:
        """Load this device's partition, then say hello."""
        devices = [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE)]
        self.learner = Learner(
            ctx.config.learning, ctx.config.seed, (devices.index(ctx.node_id), len(devices))
        )
        self.reference = self.learner.weights()
        self.threats = DeviceThreats(ctx.config, self.learner)
        self.round = 0
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` from this device's MEC and `stop` from the publisher."""
        if msg.type == "stop" and msg.sender == PUBLISHER:
            _stop(ctx, msg)
        elif msg.type == "global" and msg.sender == ctx.me.parent:
            self._train(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _train(self, ctx: NodeContext, msg: Message) -> None:
        started = ctx.now()
        round_no = msg.payload.get("round")
        if not isinstance(round_no, int) or round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            global_weights = check_update(self.reference, msg.payload.get("weights"))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.learner.load(global_weights)
        self.greeted = True
        self.round = round_no
        x, y, behaviour = self.threats.training_data(round_no)
        result = self.learner.train(round_no, x, y)
        sent = self.threats.outgoing(round_no, self.learner.weights(), global_weights)
        replica = _replica(ctx)
        blob = weights_to_bytes(sent)
        tx = replica.transaction(
            "task.record_update",
            {
                "task_id": ctx.config.task_id,
                "round": round_no,
                "blob": replica.blobs.put(blob),
                "size": len(blob),
                "samples": result.samples,
            },
        )
        ctx.send(
            str(ctx.me.parent),
            "update",
            {
                "round": round_no,
                "blob": blob,
                "tx": tx.to_bytes(),
                "loss": result.loss,
                "accuracy": result.accuracy,
            },
        )
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="local-train",
            samples=result.samples,
            behaviour=behaviour,
            emd=self.threats.label_emd(y),
            train_time_s=result.seconds,
            round_time_s=ctx.now() - started,
        )


class MecRole(_Greeter):
    """Forwards the global model to its devices and their average to the publisher."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Find this MEC's devices, then say hello."""
        self.devices = _devices_of(ctx, ctx.node_id)
        self.round = 0
        self.round_started = 0.0
        self.reference: Weights | None = None
        self.global_weights: Weights = {}
        self.individual = ctx.config.aggregator["name"] != "fedavg"
        self.updates: dict[str, tuple[Weights, float]] = {}
        self.txs: dict[str, bytes] = {}
        self.forwarded = True
        self.validator: PbftValidator | None = None
        if ctx.config.consensus == "pbft":
            roster = ctx.config.roster
            mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
            self.validator = PbftValidator(
                ctx,
                _replica(ctx),
                [(m, bytes.fromhex(roster[m])) for m in mecs],
                proposer=bytes.fromhex(roster[PUBLISHER]),
                forward_to=[*self.devices, PUBLISHER],
            )
        super().start(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `global` and `stop` from the publisher and `update` from own devices."""
        if msg.sender == PUBLISHER and msg.type == "stop":
            _stop(ctx, msg)
        elif msg.sender == PUBLISHER and msg.type == "global":
            self._on_global(ctx, msg)
        elif msg.type == "update" and msg.sender in self.devices:
            self._on_update(ctx, msg)
        elif self.validator is not None and msg.type == "pbft":
            self.validator.on_pbft(ctx, msg)
        elif self.validator is not None and msg.type == "submit" and msg.sender == PUBLISHER:
            self.validator.on_submit(ctx, msg)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def _on_global(self, ctx: NodeContext, msg: Message) -> None:
        round_no, deadline = msg.payload.get("round"), msg.payload.get("deadline_s")
        weights = msg.payload.get("weights")
        if not (isinstance(round_no, int) and round_no > self.round):
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        if not isinstance(deadline, int | float) or deadline <= 0 or not isinstance(weights, dict):
            ctx.drop("bad_payload", "global without deadline or weights")
            return
        if self.reference is None:
            self.reference = {k: v for k, v in weights.items() if isinstance(v, np.ndarray)}
        try:
            self.global_weights = check_update(self.reference, weights)
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        self.round, self.round_started = round_no, ctx.now()
        self.updates, self.txs, self.forwarded = {}, {}, False
        my_deadline = MEC_DEADLINE_FRACTION * float(deadline)
        ctx.multicast(
            self.devices,
            "global",
            {"round": round_no, "weights": weights, "deadline_s": my_deadline},
        )
        ctx.set_timer("deadline", my_deadline)

    def _on_update(self, ctx: NodeContext, msg: Message) -> None:
        p = msg.payload
        if p.get("round") != self.round or self.forwarded or msg.sender in self.updates:
            ctx.drop("stale_round", f"update round {p.get('round')!r} from {msg.sender}")
            return
        if self.reference is None:
            ctx.drop("stale_round", "update before any global model")
            return
        try:
            tx, blob = _parse_update_tx(ctx, msg, self.round)
        except ValueError as exc:
            ctx.drop("bad_tx", f"{msg.sender}: {exc}")
            return
        try:
            weights = check_update(self.reference, weights_from_bytes(blob))
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        _replica(ctx).blobs.put(blob)
        self.updates[msg.sender] = (weights, float(tx.payload["samples"]))
        self.txs[msg.sender] = tx.to_bytes()
        if len(self.updates) == len(self.devices):
            self._forward(ctx)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The round deadline: forward what arrived (and PBFT's timers)."""
        if self.validator is not None and self.validator.on_timer(ctx, name):
            return
        if name == "deadline" and not self.forwarded:
            self._forward(ctx)
        super().on_timer(ctx, name)

    def _forward(self, ctx: NodeContext) -> None:
        ctx.cancel_timer("deadline")
        self.forwarded = True
        missing = sorted(set(self.devices) - set(self.updates))
        if missing:
            log.warning(
                "round %d: left out %s (no update before the deadline)", self.round, missing
            )
        updates = [Update(w, n, None, d) for d, (w, n) in sorted(self.updates.items())]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        contributors = [u.sender for u in updates]
        samples = sum(u.samples for u in updates)
        payload: dict[str, Any] = {
            "round": self.round,
            "samples": int(samples),
            "contributors": contributors,
            "missing": missing,
            "txs": [self.txs[c] for c in sorted(self.txs)],
        }
        if updates and self.individual:
            payload["updates"] = [
                {
                    "node": u.sender,
                    "weights": edge_output(ctx.config, self.round, dict(u.weights)),
                    "samples": int(u.samples),
                }
                for u in updates
            ]
        elif updates:
            average = fedavg([(u.weights, u.samples) for u in updates])
            payload["weights"] = edge_output(ctx.config, self.round, average)
        ctx.send(PUBLISHER, "partial", payload)
        ctx.metrics.write(
            "round",
            round=self.round,
            samples=int(samples),
            contributors=len(contributors),
            missing=missing,
            behaviour=fault,
            round_time_s=ctx.now() - self.round_started,
        )


class PublisherRole(Role):
    """Publishes the task, aggregates the MECs' partials, evaluates, and ends the run."""

    kind = "publisher"

    def start(self, ctx: NodeContext) -> None:
        """Build the initial global model and wait for every node's hello."""
        self.learner = Learner(ctx.config.learning, ctx.config.seed)
        self.weights = self.learner.weights()
        agg = ctx.config.aggregator
        self.aggregator_name = str(agg["name"])
        self.aggregate_fn = make_aggregator(self.aggregator_name, agg.get("params", {}))
        self.individual: dict[str, list[Update]] = {}
        self.expected = {n.id for n in ctx.topology.daemons()} - {ctx.node_id}
        self.mecs = [n.id for n in ctx.topology.of_kind(NodeKind.MEC)]
        self.ready: set[str] = set()
        self.round = 0
        self.round_started = 0.0
        self.partials: dict[str, dict[str, Any]] = {}
        self.update_txs: dict[str, list[Transaction]] = {}
        self.samples_by_device: dict[str, int] = {}
        self.last_tx: bytes | None = None
        self.final_deadline = 0.0
        self.run_started = ctx.now()
        ctx.set_timer("startup", ctx.config.startup_timeout_s)
        log.info("waiting for %d nodes", len(self.expected))

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Handle `hello` from any node and `partial` from MECs."""
        if msg.type == "hello" and msg.sender in self.expected:
            self._on_hello(ctx, msg.sender)
        elif msg.type == "partial" and msg.sender in self.mecs:
            self._on_partial(ctx, msg)
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
        elif name == "final":
            store = _replica(ctx).chain.store
            if self.last_tx is None or store.tx_location(self.last_tx) is not None:
                self._send_stop(ctx)
            elif ctx.now() > self.final_deadline:
                log.warning("the validators did not commit the last block in time")
                self._send_stop(ctx)
            else:
                ctx.set_timer("final", 0.2)

    def _commit(self, ctx: NodeContext, txs: list[Transaction]) -> None:
        """Record `txs` on chain: as the single writer, build, append and send the block;
        with PBFT, submit them to the MEC validators, which order them into a block."""
        replica = _replica(ctx)
        if txs:
            self.last_tx = txs[-1].hash
        if ctx.config.consensus == "pbft":
            payload = {"txs": [tx.to_bytes() for tx in txs], "timestamp_ms": ctx.wall_ms()}
            ctx.multicast(self.mecs, "submit", payload)
            ctx.metrics.write("submitted", txs=len(txs))
            return
        block = replica.chain.build(txs, replica.key, ctx.wall_ms())
        for receipt in replica.chain.append(block):
            if not receipt.ok:
                log.warning("tx %s reverted: %s", receipt.tx_hash.hex()[:16], receipt.error)
        others = sorted(self.expected)
        ctx.multicast(others, "chain.block", {"block": block.to_bytes(), "height": block.height})
        ctx.metrics.write("block", height=block.height, txs=len(block.txs), hash=block.hash.hex())

    def _publish_task(self, ctx: NodeContext) -> None:
        replica = _replica(ctx)
        cfg = ctx.config
        pool = replica.chain.config.genesis.balances.get(ctx.node_id, 0)
        payload = {
            "task_id": cfg.task_id,
            "reward_pool": pool,
            "rounds": cfg.learning.rounds,
            "model": cfg.learning.model,
            "dataset": cfg.learning.dataset,
        }
        self._commit(ctx, [replica.transaction("task.publish", payload)])

    def _begin_round(self, ctx: NodeContext) -> None:
        self.round += 1
        self.round_started = ctx.now()
        self.partials = {}
        self.update_txs = {}
        self.individual = {}
        deadline = ctx.config.learning.round_deadline_s
        ctx.multicast(
            self.mecs,
            "global",
            {"round": self.round, "weights": self.weights, "deadline_s": deadline},
        )
        ctx.set_timer("deadline", deadline)

    def _on_partial(self, ctx: NodeContext, msg: Message) -> None:
        p = msg.payload
        if p.get("round") != self.round or msg.sender in self.partials:
            ctx.drop("stale_round", f"partial round {p.get('round')!r} from {msg.sender}")
            return
        samples = p.get("samples")
        if not isinstance(samples, int) or samples < 0:
            ctx.drop("bad_payload", f"partial from {msg.sender} without a sample count")
            return
        try:
            txs = [Transaction.from_bytes(raw) for raw in p.get("txs", [])]
            for tx in txs:
                tx.verify()
            if samples > 0 and "updates" in p:
                self.individual[msg.sender] = self._check_individual(ctx, p["updates"], txs)
            elif samples > 0:
                p = {**p, "weights": check_update(self.weights, p.get("weights"))}
        except (ValueError, TypeError, KeyError) as exc:
            ctx.drop("bad_model", f"partial from {msg.sender}: {exc}")
            return
        self.update_txs[msg.sender] = txs
        self.partials[msg.sender] = p
        if len(self.partials) == len(self.mecs):
            self._aggregate(ctx)

    def _check_individual(
        self, ctx: NodeContext, updates: object, txs: list[Transaction]
    ) -> list[Update]:
        """Device updates a MEC forwarded one by one; each must match its device's signed
        transaction (blob hash), so a MEC that tampers with an update is caught here."""
        if not isinstance(updates, list):
            raise ValueError("updates must be a list")
        by_key = {tx.sender.hex(): tx for tx in txs}
        out = []
        for item in updates:
            node, samples = item["node"], item["samples"]
            weights = check_update(self.weights, item["weights"])
            tx = by_key.get(ctx.config.roster.get(str(node), ""))
            if tx is None or tx.payload.get("blob") != sha256(weights_to_bytes(weights)):
                ctx.drop("tampered_update", f"update of {node} does not match its transaction")
                continue
            if not isinstance(samples, int) or samples <= 0:
                raise ValueError(f"update of {node} without a sample count")
            out.append(Update(weights, samples, None, str(node)))
        return out

    def _combine(self, ctx: NodeContext) -> tuple[list[str], list[str]]:
        """Aggregate this round's updates into self.weights; (contributors, rejected)."""
        if self.aggregator_name == "fedavg":
            usable = [
                (p["weights"], float(p["samples"])) for p in self.partials.values() if p["samples"]
            ]
            if usable:
                self.weights = fedavg(usable)
            contributors = sorted(
                c for p in self.partials.values() if p["samples"] for c in p["contributors"]
            )
            return contributors, []
        updates = [u for mec in sorted(self.individual) for u in self.individual[mec]]
        if not updates:
            return [], []
        if self.aggregator_name in ACCURACY_AGGREGATORS:
            updates = [self._with_accuracy(u) for u in updates]
        params = ctx.config.aggregator.get("params", {})
        if self.aggregator_name == "accuracy_threshold":
            kept = accepted(updates, params["threshold"])
        elif self.aggregator_name == "top_k_accuracy":
            kept = select_top_k(updates, params["k"])
        else:
            kept = updates
        try:
            self.weights = self.aggregate_fn(updates)
        except NoAcceptedUpdatesError:
            log.warning("round %d: no update passed the threshold", self.round)
        kept_ids = sorted(u.sender for u in kept)
        return kept_ids, sorted({u.sender for u in updates} - set(kept_ids))

    def _with_accuracy(self, update: Update) -> Update:
        """The update with its accuracy on the publisher's validation samples (the first
        VALIDATION_SAMPLES test samples: our choice, the papers do not say which data)."""
        ds = self.learner.dataset
        n = min(VALIDATION_SAMPLES, len(ds.test_y))
        self.learner.load(update.weights)
        acc = self.learner.evaluate_on(ds.test_x[:n], ds.test_y[:n]).accuracy
        return Update(update.weights, update.samples, acc, update.sender)

    def _aggregate(self, ctx: NodeContext) -> None:
        ctx.cancel_timer("deadline")
        contributors, rejected = self._combine(ctx)
        missing_mecs = sorted(set(self.mecs) - set(self.partials))
        if not contributors:
            log.warning("round %d: no usable update; the global model is unchanged", self.round)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        self._record_round(ctx, contributors, result.accuracy)
        round_time = ctx.now() - self.round_started
        ctx.metrics.write(
            "round",
            round=self.round,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            contributors=len(contributors),
            rejected=rejected,
            missing=missing_mecs
            + sorted(m for p in self.partials.values() for m in p.get("missing", [])),
            round_time_s=round_time,
            elapsed_s=ctx.now() - self.run_started,
        )
        log.info(
            "round %d: accuracy %.4f loss %.4f (%d devices, %.2fs)",
            self.round,
            result.accuracy,
            result.loss,
            len(contributors),
            round_time,
        )
        if self.round >= ctx.config.learning.rounds:
            self._finish(ctx)
        else:
            self._begin_round(ctx)

    def _record_round(self, ctx: NodeContext, contributors: list[str], accuracy: float) -> None:
        """A block with this round's update transactions and the global model's record."""
        replica = _replica(ctx)
        txs = [tx for mec in sorted(self.update_txs) for tx in self.update_txs[mec]]
        for tx in txs:
            node = replica.chain.config.genesis.members
            sender = next((nid for nid, (key, _) in node.items() if key == tx.sender), None)
            if sender is not None and sender in contributors:
                samples = int(tx.payload.get("samples", 0))
                self.samples_by_device[sender] = self.samples_by_device.get(sender, 0) + samples
        if contributors:
            blob = weights_to_bytes(self.weights)
            payload = {
                "task_id": ctx.config.task_id,
                "round": self.round,
                "blob": replica.blobs.put(blob),
                "size": len(blob),
                "accuracy": float(accuracy),
                "contributors": contributors,
            }
            txs.append(replica.transaction("task.record_global", payload))
        self._commit(ctx, txs)

    def _pay_rewards(self, ctx: NodeContext) -> None:
        """Share the pool by contributed samples (our choice), then close the task."""
        replica = _replica(ctx)
        task_id = ctx.config.task_id
        pool = replica.chain.config.genesis.balances.get(ctx.node_id, 0)
        total = sum(self.samples_by_device.values())
        txs = []
        for device, samples in sorted(self.samples_by_device.items()):
            amount = pool * samples // total if total else 0
            if amount > 0:
                txs.append(
                    replica.transaction(
                        "task.reward", {"task_id": task_id, "to": device, "amount": amount}
                    )
                )
        txs.append(replica.transaction("task.close", {"task_id": task_id}))
        self._commit(ctx, txs)

    def _finish(self, ctx: NodeContext) -> None:
        if self.round > 0:
            self._pay_rewards(ctx)
        if ctx.config.consensus == "pbft":
            self.final_deadline = ctx.now() + FINAL_COMMIT_S
            ctx.set_timer("final", 0.2)
            return
        self._send_stop(ctx)

    def _send_stop(self, ctx: NodeContext) -> None:
        height = _replica(ctx).height
        ctx.multicast(sorted(self.expected), "stop", {"height": height})
        ctx.metrics.write("finished", rounds=self.round, elapsed_s=ctx.now() - self.run_started)
        ctx.stop()


ROLES: dict[NodeKind, Callable[[], Role]] = {
    NodeKind.DEVICE: DeviceRole,
    NodeKind.MEC: MecRole,
    NodeKind.PUBLISHER: PublisherRole,
}
