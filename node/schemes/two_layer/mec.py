"""The two-layer MEC: proposer of its LMUC, cross-verifier and voter on the task's GMUC."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.contracts import gmuc, reputation
from node.core.block import Block
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.gossip import Deliver, GossipService
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.roles.threats import edge_fault, edge_output
from node.roles.validator import PbftMessage, PbftValidator, Submit
from node.schemes.gossip_fedavg.roles import (
    UpdateCheck,
    block_check,
    blocks_topic,
    group_members,
    updates_topic,
)
from node.schemes.gossip_fedavg.scheme import gossip_peers
from node.schemes.two_layer.common import (
    DEVICE_DEADLINE_FRACTION,
    VOTE_DEADLINE_FRACTION,
    TimerSpace,
    gmuc_of,
    lmuc_of,
    params_of,
)
from node.schemes.two_layer.crosschain import (
    LmucUpdate,
    canonical_updates,
    needed_blobs,
    round_updates,
)
from node.schemes.two_layer.messages import LmucBlob, LmucRelay, TaskPacket, VoteMessage
from node.schemes.two_layer.scheme import lmuc_id
from node.schemes.two_layer.tasks import seal_task
from node.schemes.vanilla.common import (
    FINAL_SYNC_S,
    PUBLISHER,
    VALIDATION_SAMPLES,
    Greeter,
    devices_of,
    parse_update_tx,
)
from node.schemes.vanilla.messages import GlobalModel, Stop

log = logging.getLogger(__name__)

LMUC_TIMERS = "lmuc:"
QUALITY_MARGIN = 0.25  # accuracy below the round's median that makes an update a bad one


class TwoLayerMecRole(Greeter):
    """Sends the global model to its selected devices, orders their gossiped updates into an
    LMUC block with its full devices (PBFT, as proposer), relays the certified block to the
    task's other MECs, aggregates every LMUC block of the round and votes on the GMUC."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Both chains' validators, the D2D gossip of its group, then hello."""
        self.ctx = ctx
        params = params_of(ctx)
        cfg = ctx.config
        self.gmuc = ctx.chains[gmuc_of(ctx)]
        self.lmuc = ctx.chains[lmuc_of(ctx)]
        self.devices = devices_of(ctx, ctx.node_id)
        self.selected = list(self.devices)  # until the GMUC holds reputations
        self.threshold = params.reputation_threshold
        self.top_k = params.top_k or None
        self.learner = Learner(cfg.learning, cfg.seed)  # judges updates (reputation events)
        n = min(VALIDATION_SAMPLES, len(self.learner.test_y))
        self.validation = (self.learner.test_x[:n], self.learner.test_y[:n])
        agg = cfg.aggregator
        self.strategy = make_strategy(agg.name, agg.params)
        if self.strategy.needs.accuracy:
            raise RuntimeError(
                f"aggregator {agg.name!r} needs accuracies, which two-layer MECs do not measure"
            )
        ids = {nid: bytes.fromhex(key) for nid, key in cfg.roster.items()}
        members = self.gmuc.config.genesis.members
        self.task_mecs = [m for m, (_, kind) in members.items() if kind == gmuc.MEC]
        self.gmuc_validator = PbftValidator(
            ctx,
            self.gmuc.replica,
            committee_replicas(self.gmuc.config.finality, ids),
            proposer=ids[PUBLISHER],
            forward_to=[],
        )
        self.ltimers = TimerSpace(ctx, LMUC_TIMERS)
        self.lmuc_validator = PbftValidator(
            self.ltimers.view(),
            self.lmuc.replica,
            committee_replicas(self.lmuc.config.finality, ids),
            proposer=self.lmuc.replica.key.public_key,
            forward_to=[],
        )
        self.lmuc_devices = {  # per LMUC of the task: device key -> id
            m: {
                key: nid
                for nid, (key, kind) in cfg.chains[lmuc_id(m)].genesis.members.items()
                if kind == "device"
            }
            for m in self.task_mecs
        }
        self.round = 0
        self.round_started = 0.0
        self.reference: Weights | None = None
        self.global_weights: Weights = {}
        self._new_round()
        self.gossip = GossipService(
            ctx,
            gossip_peers(ctx.topology, ctx.node_id),
            params.gossip_config(cfg.seed),
            params.heartbeat_s,
        )
        self.check = UpdateCheck(group_members(ctx, ctx.node_id), cfg.max_message_bytes)
        self.gossip.subscribe(updates_topic(ctx.node_id), self.check, self._on_gossiped_update)
        self.blocks = blocks_topic(ctx.node_id)
        self.gossip.subscribe(self.blocks, block_check(self.lmuc.config.finality), None)
        self.gossip.start()
        self.lmuc.subscribe(self._on_lmuc_block)
        ctx.emit(self.gmuc.replica.sync.announce([PUBLISHER]))
        self._hello(ctx)

    def _new_round(self) -> None:
        self.updates: dict[str, tuple[Transaction, bytes]] = {}
        self.submitted = False
        self.pending: set[bytes] = set()  # hashes of this round's update txs sent to the LMUC
        self.relays: dict[str, list[LmucUpdate]] = {}  # accepted LMUC blocks' updates
        self.incoming: dict[str, LmucRelay] = {}  # relayed blocks waiting for their blobs
        self.blobs_in: dict[str, dict[bytes, bytes]] = {}  # per relaying MEC: hash -> blob
        self.voted = False
        self.accuracy: dict[str, float] = {}  # validation accuracy of each update judged

    # -- dispatch --------------------------------------------------------------------------
    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Gossip; ``global``/``stop``/``submit`` from the publisher; ``tl.lmuc`` from the
        task's MECs; ``pbft`` of either chain (told apart by the sender)."""
        if self.gossip.on_message(ctx, msg):
            return
        body, sender = msg.payload, msg.sender
        if sender == PUBLISHER and isinstance(body, Stop):
            self._on_stop(ctx, body)
        elif sender == PUBLISHER and isinstance(body, GlobalModel):
            self._on_global(ctx, body)
        elif sender == PUBLISHER and isinstance(body, Submit):
            self.gmuc_validator.on_submit(ctx, body)
        elif isinstance(body, LmucRelay) and sender in self.task_mecs:
            self._on_relay(ctx, sender, body)
        elif isinstance(body, LmucBlob) and sender in self.task_mecs:
            self._on_blob(ctx, sender, body)
        elif isinstance(body, PbftMessage) and sender in self.gmuc_validator.peers:
            self.gmuc_validator.on_pbft(ctx, sender, body)
        elif isinstance(body, PbftMessage) and sender in self.lmuc_validator.peers:
            self.lmuc_validator.on_pbft(self.ltimers.view(), sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Gossip heartbeat, both validators' timers, the round's two deadlines, hello."""
        if self.gossip.on_timer(ctx, name):
            return
        if self.ltimers.owns(name):
            self.lmuc_validator.on_timer(self.ltimers.view(), self.ltimers.inner(name))
        elif self.gmuc_validator.on_timer(ctx, name):
            return
        elif name == "deadline" and not self.submitted:
            self._submit_updates(ctx, "deadline")
        elif name == "cross" and not self.voted:
            self._vote(ctx, "deadline")
        else:
            super().on_timer(ctx, name)

    def finish(self, ctx: NodeContext) -> None:
        """Write the gossip counters."""
        self.gossip.finish(ctx)

    # -- round -----------------------------------------------------------------------------
    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        round_no, model = msg.round, msg.model
        if round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        try:
            weights = weights_from_bytes(model)
            if self.reference is None:
                self.reference = weights
            self.global_weights = check_update(self.reference, weights)
        except ValueError as exc:
            ctx.drop("bad_model", str(exc))
            return
        self.greeted = True
        previous = self.round
        self.round, self.round_started = round_no, ctx.now()
        contributors = sorted(u.device for u in self.relays.get(ctx.node_id, []))
        self._new_round()
        key = sha256(model)
        self.lmuc.replica.blobs.put_behind(key, model)
        self._lmuc_open_round(ctx, previous, key, len(model), contributors)
        self._select(ctx)
        device_deadline = DEVICE_DEADLINE_FRACTION * msg.deadline_s
        roster, own_key = ctx.config.roster, self.lmuc.replica.key
        for device in self.selected:  # one sealed task each (cellular)
            task = seal_task(
                own_key,
                bytes.fromhex(roster[device]),
                ctx.config.task_id,
                round_no,
                device_deadline,
                model,
            )
            ctx.send(device, TaskPacket(round_no, task, model))
        ctx.set_timer("deadline", device_deadline)
        ctx.set_timer("cross", VOTE_DEADLINE_FRACTION * msg.deadline_s)

    def _select(self, ctx: NodeContext) -> None:
        """This round's workers: the devices whose reputation on the GMUC (the contract's
        record, as of the blocks this MEC holds) reaches the threshold, best first, at most
        top_k (`reputation.select_workers`)."""
        state = self.gmuc.replica.chain.state
        reps = reputation.reputations(state, self.devices)
        chosen = set(reputation.select_workers(reps, self.threshold, self.top_k))
        self.selected = [d for d in self.devices if d in chosen]
        ctx.metrics.write(
            "selection",
            round=self.round,
            selected=self.selected,
            reputations={d: round(v, 6) for d, v in sorted(reps.items())},
        )

    def _judge(self, updates: list[Update]) -> dict[str, bool]:
        """Each update's quality verdict (the reputation events): positive unless its accuracy
        on the validation samples is more than QUALITY_MARGIN below the round's median and
        below half of it (our choice, lenient so that an honest device's spread — early
        rounds, skewed data — is no bad event; the paper says "update-quality checks"; a
        label flipper's update falls far below)."""
        accuracy: dict[str, float] = {}
        self.accuracy = accuracy
        for u in updates:
            self.learner.load(u.weights)
            accuracy[u.sender] = self.learner.evaluate_on(*self.validation).accuracy
        if not accuracy:
            return {}
        self.accuracy = accuracy
        median = float(np.median(list(accuracy.values())))
        floor = median - max(QUALITY_MARGIN, median / 2)
        return {d: a >= floor for d, a in accuracy.items()}

    def _lmuc_open_round(
        self, ctx: NodeContext, previous: int, blob: bytes, size: int, contributors: list[str]
    ) -> None:
        """Before round 1: open the task on the LMUC; before round r > 1: close round r-1 on
        it with the decided global model (its accuracy is the publisher's business, on the
        GMUC: 0.0 here), so that the task contract records round r's updates."""
        cfg = ctx.config
        if previous == 0:
            payload: dict[str, Any] = {
                "task_id": cfg.task_id,
                "reward_pool": 0,
                "rounds": cfg.learning.training.rounds,
                "model": cfg.learning.model,
                "dataset": cfg.learning.dataset.name,
            }
            tx = self.lmuc.transaction("task.publish", payload)
        else:
            payload = {
                "task_id": cfg.task_id,
                "round": previous,
                "blob": blob,
                "size": size,
                "accuracy": 0.0,
                "contributors": contributors,
            }
            tx = self.lmuc.transaction("task.record_global", payload)
        self._lmuc_submit(ctx, [tx])

    def _lmuc_submit(self, ctx: NodeContext, txs: list[Transaction]) -> None:
        """Order `txs` into an LMUC block: ``submit`` to the full devices and to this MEC's
        own validator (the PBFT primary of view 0)."""
        submit = Submit(tuple(tx.to_bytes() for tx in txs), ctx.wall_ms())
        ctx.multicast(self.lmuc_validator.peers, submit)
        self.lmuc_validator.on_submit(self.ltimers.view(), submit)

    def _on_gossiped_update(self, item: Deliver) -> None:
        ctx = self.ctx
        device, update = self.check.parse(item.data)  # valid: the hook accepted it
        if device not in self.selected:
            ctx.drop("unexpected", f"update from unselected {device}")
            return
        if update.round != self.round or self.submitted or device in self.updates:
            ctx.drop("stale_round", f"update round {update.round!r} from {device}")
            return
        if self.reference is None:
            ctx.drop("stale_round", "update before any global model")
            return
        try:
            tx, blob = parse_update_tx(ctx, device, update, self.round)
            check_update(self.reference, weights_from_bytes(blob))
        except ValueError as exc:
            ctx.drop("bad_model", f"{device}: {exc}")
            return
        self.lmuc.replica.blobs.put_behind(tx.payload["blob"], blob)
        self.updates[device] = (tx, blob)
        if len(self.updates) == len(self.selected):
            self._submit_updates(ctx, "all_answered")

    def _submit_updates(self, ctx: NodeContext, why: str) -> None:
        """The round's updates to the LMUC (PBFT); none: an empty relay at once."""
        ctx.cancel_timer("deadline")
        self.submitted = True
        missing = sorted(set(self.selected) - set(self.updates))
        if missing:
            log.warning("round %d: no update from %s before the deadline", self.round, missing)
        txs = [self.updates[d][0] for d in sorted(self.updates)]
        ctx.metrics.write(
            "lmuc_submit",
            round=self.round,
            updates=len(txs),
            missing=missing,
            submitted_on=why,
            elapsed_s=ctx.now() - self.round_started,
        )
        if not txs:
            self._relay(ctx, LmucRelay(self.round, b""), [])
            return
        self.pending = {tx.hash for tx in txs}
        self._lmuc_submit(ctx, txs)

    def _on_lmuc_block(self, block: Block) -> None:
        """Every LMUC block goes into the group's gossip; the one holding this round's
        updates goes, certified, to the task's MECs (this one included)."""
        ctx = self.ctx
        self.gossip.publish(self.blocks, block.to_bytes())
        ours = [tx for tx in block.txs if tx.hash in self.pending]
        if not ours:
            return
        self.pending = set()
        blobs = tuple(self.updates[d][1] for d in sorted(self.updates))
        ctx.metrics.write(
            "lmuc_block",
            round=self.round,
            height=block.height,
            txs=len(block.txs),
            signatures=len(block.certificate),
            elapsed_s=ctx.now() - self.round_started,
        )
        self._relay(ctx, LmucRelay(self.round, block.to_bytes()), blobs)

    def _relay(self, ctx: NodeContext, relay: LmucRelay, blobs: Sequence[bytes]) -> None:
        """The block, then its blobs one per message, to the task's other MECs; taken here
        at once."""
        others = [m for m in self.task_mecs if m != ctx.node_id]
        ctx.multicast(others, relay)
        for blob in blobs:
            ctx.multicast(others, LmucBlob(relay.round, blob))
        self.incoming[ctx.node_id] = relay
        self.blobs_in[ctx.node_id] = {sha256(b): b for b in blobs}
        self._take(ctx, ctx.node_id)

    def _fresh(self, sender: str, round_no: int) -> bool:
        return round_no == self.round and not self.voted and sender not in self.relays

    def _on_relay(self, ctx: NodeContext, sender: str, relay: LmucRelay) -> None:
        if not self._fresh(sender, relay.round) or sender in self.incoming:
            ctx.drop("stale_round", f"LMUC block round {relay.round!r} from {sender}")
            return
        self.incoming[sender] = relay
        self._take(ctx, sender)

    def _on_blob(self, ctx: NodeContext, sender: str, msg: LmucBlob) -> None:
        if not self._fresh(sender, msg.round):
            ctx.drop("stale_round", f"LMUC blob round {msg.round!r} from {sender}")
            return
        held = self.blobs_in.setdefault(sender, {})
        if len(held) >= len(self.lmuc_devices[sender]):  # at most one per device of that LMUC
            ctx.drop("unexpected", f"more LMUC blobs than devices from {sender}")
            return
        held[sha256(msg.blob)] = msg.blob
        self._take(ctx, sender)

    def _take(self, ctx: NodeContext, sender: str) -> None:
        """`sender`'s relayed block, once it and every blob it names are here, checked as a
        light client of that MEC's LMUC (`crosschain.round_updates`)."""
        relay = self.incoming.get(sender)
        if relay is None:
            return
        items: list[LmucUpdate] = []
        held = self.blobs_in.get(sender, {})
        if relay.block:
            try:
                if not needed_blobs(relay.block, ctx.config.task_id, self.round) <= set(held):
                    return  # more blobs to come (or the vote deadline passes without them)
                _, items = round_updates(
                    relay.block,
                    list(held.values()),
                    ctx.config.chains[lmuc_id(sender)].finality,
                    self.lmuc_devices[sender],
                    ctx.config.task_id,
                    self.round,
                )
            except ValueError as exc:
                ctx.drop("bad_lmuc_block", f"from {sender}: {exc}")
                del self.incoming[sender]
                return
        self.relays[sender] = items
        if len(self.relays) == len(self.task_mecs):
            self._vote(ctx, "all_relayed")

    def _vote(self, ctx: NodeContext, why: str) -> None:
        """Aggregate every relayed LMUC block's updates (canonical order) and send the signed
        ``gmuc.vote`` with the aggregate to the publisher."""
        ctx.cancel_timer("cross")
        self.voted = True
        assert self.reference is not None
        by_chain = {lmuc_id(m): items for m, items in self.relays.items()}
        updates, bad = canonical_updates(by_chain, self.reference)
        verdicts = self._judge(updates)
        own = {u.device for u in self.relays.get(ctx.node_id, [])}
        events = [[d, verdicts[d]] for d in sorted(own) if d in verdicts]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        weights: Weights = self.global_weights
        contributors: list[str] = []
        if updates:
            try:
                combined = self.strategy.combine(updates)
            except ValueError as exc:
                log.warning("round %d: the aggregator refused the updates: %s", self.round, exc)
            else:
                if combined.weights is not None:
                    weights = dict(combined.weights)
                contributors = sorted(u.sender for u in combined.selection.kept)
        weights = edge_output(ctx.config, self.round, dict(weights))
        model = weights_to_bytes(weights)
        key = sha256(model)
        self.gmuc.replica.blobs.put_behind(key, model)
        payload = {
            "task_id": ctx.config.task_id,
            "round": self.round,
            "aggregate": key,
            "contributors": contributors,
        }
        tx = self.gmuc.transaction("gmuc.vote", payload)
        record = b""
        if events:
            rep = {"task_id": ctx.config.task_id, "round": self.round, "events": events}
            record = self.gmuc.transaction("reputation.record", rep).to_bytes()
        ctx.send(PUBLISHER, VoteMessage(self.round, tx.to_bytes(), model, record))
        ctx.metrics.write(
            "round",
            round=self.round,
            lmuc_blocks=sum(1 for m in self.relays if self.relays[m] or m == ctx.node_id),
            relays=sorted(self.relays),
            contributors=len(contributors),
            undecodable=bad,
            aggregate=key.hex(),
            negative=sorted(d for d, ok in verdicts.items() if not ok),
            update_accuracy={d: round(a, 4) for d, a in sorted(self.accuracy.items())},
            voted_on=why,
            behaviour=fault,
            round_time_s=ctx.now() - self.round_started,
        )

    def _on_stop(self, ctx: NodeContext, stop: Stop) -> None:
        """Tell the devices the LMUC's final height; stop once the GMUC holds `stop.height`."""
        ctx.multicast(self.devices, Stop(self.lmuc.height))
        ctx.stop_when_synced(
            stop.height, FINAL_SYNC_S, report_to=[PUBLISHER], chain_id=self.gmuc.chain_id
        )
        if stop.height > self.gmuc.height:
            peers = [m for m in self.task_mecs if m != ctx.node_id]
            ctx.emit(self.gmuc.replica.sync.seek(stop.height, [PUBLISHER, *peers], ctx.now()))
