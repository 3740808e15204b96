"""The two-layer MEC: proposer of its LMUC, cross-verifier and voter on the task's GMUC."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from node import sigcache
from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.contracts import gmuc, gmuc_request, identity, reputation
from node.core.block import Block
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.gossip import Deliver, GossipService
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.ledger.sync import REQUEST_TIMEOUT_S
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.roles.threats import BlobWithholding, edge_fault, edge_output
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
    gmuc_of,
    lmuc_of,
    params_of,
)
from node.schemes.two_layer.crosschain import (
    LmucUpdate,
    block_updates,
    canonical_updates,
    checked_block,
)
from node.schemes.two_layer.incentives import DeviceTerms, MecIncentives
from node.schemes.two_layer.messages import (
    Joined,
    JoinRequest,
    LmucRelay,
    Responses,
    TaskPacket,
    VoteMessage,
)
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

LMUC_TIMERS = "lmuc:pbft:"  # the LMUC validator's timers (the GMUC's are "pbft:*")
FETCH_WAIT_SHARE = 0.5  # of the time left to the vote: how long a peer asked for a blob has
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
        # an aggregator that needs accuracies gets the ones `_judge` measures on the
        # validation samples (every MEC alike: the same updates, the same samples)
        self.strategy = make_strategy(agg.name, agg.params)
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
        self.lmuc_validator = PbftValidator(
            ctx,
            self.lmuc.replica,
            committee_replicas(self.lmuc.config.finality, ids),
            proposer=self.lmuc.replica.key.public_key,
            forward_to=[],
            timer_prefix=LMUC_TIMERS,
        )
        # per LMUC of the task: device key -> id (the run's roster: an LMUC's devices
        # register on it, and its runtime refuses an unregistered key's update, so a
        # certified block holds only registered devices' updates)
        self.lmuc_devices = {m: group_members(ctx, m) for m in self.task_mecs}
        self.incentives = MecIncentives(cfg.task_id, self.devices, self.lmuc_devices[ctx.node_id])
        # a scheduled withhold_blobs: the other MECs' blob.get for those blobs go unanswered
        self.withholding = BlobWithholding.of(cfg, self.devices)
        if self.withholding is not None:
            for handle in ctx.chains.values():
                handle.replica.sync.serve_filter = self.withholding.refusal
        # Steps 1-2: the devices' registrations (LMUC) and task responses (GMUC)
        self.heard: set[str] = set()  # devices whose join was accepted or refused
        self.accepted: set[str] = set()
        self.enrolling: dict[bytes, str] = {}  # identity.enroll tx hash -> device, uncommitted
        self.to_enroll: list[Transaction] = []  # held until every device is heard
        self.responses: list[bytes] = []  # gmuc.respond txs held until every device is heard
        self.joins_done = False
        self.held: GlobalModel | None = None  # round 1's model, until the request is here
        ctx.set_timer("joins", cfg.startup_timeout_s)
        self.round = 0
        self.round_started = 0.0
        self.vote_at = 0.0  # the round's vote deadline (ctx.now() clock)
        self.reference: Weights | None = None
        self.global_weights: Weights = {}
        self._new_round()
        self.gossip = GossipService(
            ctx,
            gossip_peers(ctx.topology, ctx.node_id),
            params.gossip_config(cfg.seed),
            params.heartbeat_s,
        )
        # what this MEC saw each device relay checks the device's relay claims
        self.incentives.witness = self.gossip.stats.relayed_from
        self.check = UpdateCheck(group_members(ctx, ctx.node_id), cfg.max_message_bytes)
        self.gossip.subscribe(updates_topic(ctx.node_id), self.check, self._on_gossiped_update)
        self.blocks = blocks_topic(ctx.node_id)
        self.gossip.subscribe(  # small, and the round waits for them: pulled at once
            self.blocks, block_check(self.lmuc.config.finality), None, want_delay_s=0.0
        )
        self.gossip.start()
        self.lmuc.subscribe(self._on_lmuc_block)
        self.gmuc.subscribe(self._on_gmuc_block)
        ctx.emit(self.gmuc.replica.sync.announce([PUBLISHER]))
        self._hello(ctx)

    def _new_round(self) -> None:
        self.updates: dict[str, tuple[Transaction, bytes]] = {}
        self.submitted = False
        self.pending: set[bytes] = set()  # hashes of this round's update txs sent to the LMUC
        self.relays: dict[str, list[LmucUpdate]] = {}  # accepted LMUC blocks' updates
        self.incoming: dict[str, Block] = {}  # checked relayed blocks waiting for their blobs
        self.blobs_in: dict[str, dict[bytes, bytes]] = {}  # per relaying MEC: hash -> blob
        self.awaited: dict[str, set[bytes]] = {}  # per relaying MEC: blobs being fetched
        self.withheld: dict[str, list[str]] = {}  # per relaying MEC: blobs no MEC gave
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
        elif isinstance(body, JoinRequest) and sender in self.devices:
            self._on_join(ctx, sender, body)
        elif isinstance(body, DeviceTerms) and sender in self.devices:
            why = self.incentives.on_terms(sender, body)  # its item signature, relayed bytes
            if why is not None:
                ctx.drop("bad_tx", why)
        elif isinstance(body, LmucRelay) and sender in self.task_mecs:
            self._on_relay(ctx, sender, body)
        elif isinstance(body, PbftMessage) and sender in self.gmuc_validator.peers:
            self.gmuc_validator.on_pbft(ctx, sender, body)
        elif isinstance(body, PbftMessage) and sender in self.lmuc_validator.peers:
            self.lmuc_validator.on_pbft(ctx, sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Gossip heartbeat, both validators' timers, the round's two deadlines, hello."""
        if self.gossip.on_timer(ctx, name):
            return
        if self.gmuc_validator.on_timer(ctx, name) or self.lmuc_validator.on_timer(ctx, name):
            return
        elif name == "deadline" and not self.submitted:
            self._submit_updates(ctx, "deadline")
        elif name == "cross" and not self.voted:
            self._vote(ctx, "deadline")
        elif name == "joins":
            self._joins_done(ctx, "timeout")
        else:
            super().on_timer(ctx, name)

    def finish(self, ctx: NodeContext) -> None:
        """Write the gossip counters."""
        self.gossip.finish(ctx)

    # -- registration and task response (Steps 1-2) ------------------------------------------
    def _on_join(self, ctx: NodeContext, device: str, join: JoinRequest) -> None:
        """A device's registration and response: checked here (the contracts check them
        again), the ``identity.enroll`` for the LMUC and the ``gmuc.respond`` for the
        publisher held until every device is heard (one LMUC block, one batch)."""
        if device in self.accepted:
            ctx.send(device, Joined())  # the acknowledgement was lost: again
            return
        key = bytes.fromhex(ctx.config.roster[device])
        lmuc = self.lmuc.config.genesis.chain_id
        resources = {"samples": join.samples, "cpu_mhz": join.cpu_mhz, "energy_j": join.energy_j}
        response = gmuc_request.response_message(
            self.gmuc.config.genesis.chain_id,
            ctx.config.task_id,
            device,
            resources,
            list(join.opinion),
        )
        registration = identity.registration_message(lmuc, device, identity.DEVICE)
        if not sigcache.verify(key, registration, join.registration):
            ctx.drop("bad_join", f"{device}: not its signature of its registration")
        elif not sigcache.verify(key, response, join.response):
            ctx.drop("bad_join", f"{device}: not its signature of its response")
        else:
            self.accepted.add(device)
            enroll = {
                "id": device,
                "key": key,
                "role": identity.DEVICE,
                "signature": join.registration,
            }
            self.to_enroll.append(self.lmuc.transaction("identity.enroll", enroll))
            payload = {
                "task_id": ctx.config.task_id,
                "device": device,
                **resources,
                "opinion": list(join.opinion),
                "signature": join.response,
            }
            if self.round == 0:
                self.responses.append(self.gmuc.transaction("gmuc.respond", payload).to_bytes())
            else:  # the call for workers is over (and a response signed now could carry a
                # nonce above a vote of ours not yet on the GMUC, which would leave it out)
                log.warning("%s joined in round %d: registered, not a worker", device, self.round)
            ctx.send(device, Joined())
        self.heard.add(device)
        if self.joins_done:  # a late one: on its own
            self._flush_joins(ctx)
        elif self.heard >= set(self.devices):
            self._joins_done(ctx, "all_heard")

    def _joins_done(self, ctx: NodeContext, why: str) -> None:
        if self.joins_done:
            return
        self.joins_done = True
        ctx.cancel_timer("joins")
        ctx.metrics.write(
            "joins",
            accepted=sorted(self.accepted),
            refused=sorted(self.heard - self.accepted),
            silent=sorted(set(self.devices) - self.heard),
            done_on=why,
        )
        self._flush_joins(ctx)

    def _flush_joins(self, ctx: NodeContext) -> None:
        """The held enrollments to the LMUC, the held responses to the publisher."""
        if self.to_enroll:
            self.enrolling |= {tx.hash: str(tx.payload["id"]) for tx in self.to_enroll}
            self._lmuc_submit(ctx, self.to_enroll)
            self.to_enroll = []
        ctx.send(PUBLISHER, Responses(tuple(self.responses), True))
        self.responses = []

    def _ready(self) -> bool:
        """Whether round 1 may start here: the task request is on this MEC's GMUC replica
        and every enrollment it submitted is on its LMUC."""
        state = self.gmuc.replica.chain.state
        request = gmuc_request.get_request(state, self.ctx.config.task_id)
        return request is not None and not self.enrolling

    def _release(self) -> None:
        if self.held is not None and self._ready():
            held, self.held = self.held, None
            self._on_global(self.ctx, held)

    def _on_gmuc_block(self, block: Block) -> None:
        self._release()

    # -- round -----------------------------------------------------------------------------
    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        round_no, model = msg.round, msg.model
        if round_no <= self.round:
            ctx.drop("stale_round", f"global round {round_no!r}")
            return
        if self.round == 0 and not self._ready():
            self.held = msg  # the request or an enrollment is not committed here yet
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
        self._cancel_fetches()
        self._new_round()
        key = sha256(model)
        self.lmuc.replica.blobs.put_behind(key, model)
        self._lmuc_open_round(ctx, previous, key, len(model), contributors)
        self._select(ctx)
        for device, offer in self.incentives.offers(
            self.gmuc.replica.chain.state, round_no
        ).items():
            ctx.send(device, offer)  # the contract items on the GMUC (incentives)
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
        self.vote_at = self.round_started + VOTE_DEADLINE_FRACTION * msg.deadline_s
        if not self.selected:  # no update can come: the empty relay now, not at the deadline
            self._submit_updates(ctx, "none_selected")

    def _select(self, ctx: NodeContext) -> None:
        """This round's workers: among the devices registered on the LMUC whose response
        on the GMUC meets the task's requirements (`gmuc_request.eligible`), those whose
        reputation on the GMUC (the contract's record, as of the blocks this MEC holds)
        reaches the threshold, best first, at most top_k (`reputation.select_workers`)."""
        state = self.gmuc.replica.chain.state
        lmuc_state = self.lmuc.replica.chain.state
        roster = ctx.config.roster
        registered = [
            d for d in self.devices if identity.key_of(lmuc_state, d) == bytes.fromhex(roster[d])
        ]
        candidates = gmuc_request.eligible(state, ctx.config.task_id, registered)
        reps = reputation.reputations(state, candidates)
        chosen = set(reputation.select_workers(reps, self.threshold, self.top_k))
        self.selected = [d for d in self.devices if d in chosen]
        ctx.metrics.write(
            "selection",
            round=self.round,
            selected=self.selected,
            registered=registered,
            eligible=candidates,
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
        self.lmuc_validator.on_submit(ctx, submit)

    def _on_gossiped_update(self, item: Deliver) -> None:
        ctx = self.ctx
        device, update = self.check.parse(item.data)  # valid: the hook accepted it
        self.incentives.on_gossip(len(item.data))
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
        if self.withholding is not None:
            self.withholding.note(tx.payload["blob"], device, self.round)
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
        self.incentives.on_block(block, len(block.to_bytes()))
        if self.enrolling and any(tx.hash in self.enrolling for tx in block.txs):
            for tx in block.txs:
                self.enrolling.pop(tx.hash, None)
            self._release()
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
        """The certified block (no blobs: the others fetch those they lack from this MEC) to
        the task's other MECs; taken here at once, with its blobs."""
        others = [m for m in self.task_mecs if m != ctx.node_id]
        ctx.multicast(others, relay)
        self.blobs_in[ctx.node_id] = {sha256(b): b for b in blobs}
        self._accept(ctx, ctx.node_id, relay)

    def _fresh(self, sender: str, round_no: int) -> bool:
        return round_no == self.round and not self.voted and sender not in self.relays

    def _on_relay(self, ctx: NodeContext, sender: str, relay: LmucRelay) -> None:
        if not self._fresh(sender, relay.round) or sender in self.incoming:
            ctx.drop("stale_round", f"LMUC block round {relay.round!r} from {sender}")
            return
        self._accept(ctx, sender, relay)

    def _accept(self, ctx: NodeContext, sender: str, relay: LmucRelay) -> None:
        """`sender`'s relayed block, checked as a light client of that MEC's LMUC
        (`crosschain.checked_block`); then the blobs its updates name that are not here are
        fetched (`ChainSync.fetch_blob`: from `sender`, then from the task's other MECs,
        which may have fetched them already), and its updates used once all are in."""
        if not relay.block:
            self._use(ctx, sender, [])
            return
        try:
            block, needed = checked_block(
                relay.block,
                ctx.config.chains[lmuc_id(sender)].finality,
                self.lmuc_devices[sender],
                ctx.config.task_id,
                self.round,
            )
        except ValueError as exc:
            ctx.drop("bad_lmuc_block", f"from {sender}: {exc}")
            return
        self.incoming[sender] = block
        held = self.blobs_in.setdefault(sender, {})
        store = self.gmuc.replica.blobs
        for key in needed:
            data = store.get(key) if key not in held and store.has(key) else None
            if data is not None:
                held[key] = data
        missing = sorted(k for k in needed if k not in held)
        if not missing:
            self._complete(ctx, sender)
            return
        self.awaited[sender] = set(missing)
        peers = [sender, *(m for m in self.task_mecs if m not in (sender, ctx.node_id))]
        sync, round_no = self.gmuc.replica.sync, self.round
        # a peer's silence: at least REQUEST_TIMEOUT_S, and a share of the time left to vote
        # (an honest MEC busy judging its round's updates answers late, not never)
        timeout_s = max(REQUEST_TIMEOUT_S, FETCH_WAIT_SHARE * (self.vote_at - ctx.now()))
        for key in missing:
            ctx.emit(
                sync.fetch_blob(
                    key,
                    peers,
                    ctx.now(),
                    on_done=functools.partial(self._on_fetched, sender, round_no),
                    max_bytes=needed[key],
                    timeout_s=timeout_s,
                )
            )

    def _on_fetched(self, sender: str, round_no: int, key: bytes, data: bytes | None) -> None:
        """A blob of `sender`'s relayed block fetched (`data`) or not to be had (None: the
        block is given up for this round, its updates unused, and that recorded)."""
        ctx = self.ctx
        awaited = self.awaited.get(sender)
        if round_no != self.round or self.voted or awaited is None or key not in awaited:
            return
        awaited.discard(key)
        if data is None:
            self.withheld.setdefault(sender, []).append(key.hex()[:16])
            ctx.drop("lmuc_blob_missing", f"{sender}'s block names blob {key.hex()[:16]}")
            for other in self.awaited.pop(sender):
                self.gmuc.replica.sync.cancel_fetch(other)
            del self.incoming[sender]
            self._use(ctx, sender, [])
            return
        self.blobs_in[sender][key] = data
        if not awaited:
            del self.awaited[sender]
            self._complete(ctx, sender)

    def _complete(self, ctx: NodeContext, sender: str) -> None:
        """`sender`'s checked block with every blob it names: its updates are the round's."""
        block = self.incoming.pop(sender)
        try:
            items = block_updates(
                block,
                self.blobs_in.get(sender, {}),
                self.lmuc_devices[sender],
                ctx.config.task_id,
                self.round,
            )
        except ValueError as exc:
            ctx.drop("bad_lmuc_block", f"from {sender}: {exc}")
            return
        self._use(ctx, sender, items)

    def _use(self, ctx: NodeContext, sender: str, items: list[LmucUpdate]) -> None:
        self.relays[sender] = items
        if len(self.relays) == len(self.task_mecs):
            self._vote(ctx, "all_relayed")

    def _cancel_fetches(self) -> dict[str, int]:
        """Stop fetching the round's blobs; how many each relaying MEC still owed."""
        sync = self.gmuc.replica.sync
        owed = {m: len(keys) for m, keys in sorted(self.awaited.items()) if keys}
        for keys in self.awaited.values():
            for key in keys:
                sync.cancel_fetch(key)
        self.awaited = {}
        return owed

    def _vote(self, ctx: NodeContext, why: str) -> None:
        """Aggregate every relayed LMUC block's updates (canonical order) and send the signed
        ``gmuc.vote`` with the aggregate to the publisher."""
        ctx.cancel_timer("cross")
        self.voted = True
        unfetched = self._cancel_fetches()  # at the deadline: their blocks are left out
        assert self.reference is not None
        by_chain = {lmuc_id(m): items for m, items in self.relays.items()}
        updates, bad = canonical_updates(by_chain, self.reference)
        verdicts = self._judge(updates)
        own = {u.device for u in self.relays.get(ctx.node_id, [])}
        events = [[d, verdicts[d]] for d in sorted(own) if d in verdicts]
        updates, fault = edge_fault(ctx.config, self.round, updates, self.global_weights)
        weights: Weights = self.global_weights
        contributors: list[str] = []
        if updates and self.strategy.needs.accuracy:
            updates = [
                dataclasses.replace(u, accuracy=self.accuracy.get(u.sender, 0.0)) for u in updates
            ]
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
        samples = {d: int(self.updates[d][0].payload["samples"]) for d in own if d in self.updates}
        pay = self.incentives.pay_report(
            self.gmuc,
            self.round,
            round((ctx.now() - self.round_started) * 1000),
            samples,
            self.accuracy,
            ctx.config.learning.training.local_epochs,
            params_of(ctx).fanout,
            self.selected,
        )
        if pay is not None:  # before the vote: the publisher orders both in the round's block
            ctx.send(PUBLISHER, pay)
        ctx.send(PUBLISHER, VoteMessage(self.round, tx.to_bytes(), model, record))
        ctx.metrics.write(
            "round",
            round=self.round,
            lmuc_blocks=sum(1 for m in self.relays if self.relays[m] or m == ctx.node_id),
            relays=sorted(self.relays),
            withheld=self.withheld,
            unfetched=unfetched,
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
