"""The two-layer device: trains, gossips its signed update over D2D; a full device also
orders its MEC's LMUC blocks by PBFT."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, cast

from node.codec import Message
from node.consensus.ledger import committee_replicas
from node.contracts import gmuc_request, identity
from node.gossip import GossipService
from node.ledger.sync import Outgoing
from node.roles.base import NodeContext
from node.roles.validator import PbftMessage, PbftValidator, Submit
from node.schemes.gossip_fedavg.roles import (
    GossipDeviceRole,
    UpdateCheck,
    block_check,
    blocks_topic,
    group_members,
    updates_topic,
)
from node.schemes.gossip_fedavg.scheme import gossip_peers
from node.schemes.two_layer.common import declared_resources, params_of, task_chain_of
from node.schemes.two_layer.incentives import DeviceIncentives, ItemOffer
from node.schemes.two_layer.messages import Joined, JoinRequest, TaskPacket
from node.schemes.two_layer.tasks import TaskRefused, open_task
from node.schemes.vanilla.common import FINAL_SYNC_S, HELLO_INTERVAL_S, PUBLISHER, replica_of
from node.schemes.vanilla.device import DeviceRole
from node.schemes.vanilla.messages import GlobalModel, Stop

log = logging.getLogger(__name__)

# after the publisher's stop, if the MEC's never comes (a MEC sends its own as soon as it
# gets the publisher's: only a dead MEC's devices wait this long)
STOP_FALLBACK_S = 10.0
# the device's opinion of the task's publisher in its response: no interaction yet
NEUTRAL_OPINION = (0, 0, gmuc_request.OPINION_SCALE)
DEVICE = identity.DEVICE


class TwoLayerDeviceRole(GossipDeviceRole):
    """gossip-fedavg's device on its MEC's LMUC (the only chain it keeps); a member of the
    LMUC's committee (a full device) also runs a PBFT validator with the MEC as proposer."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's device start, the group's gossip (gossip-fedavg's, with this scheme's
        parameters), plus the LMUC validator of a full device."""
        self.mec = str(ctx.me.parent)
        DeviceRole.start(self, cast(NodeContext, _StatusToMec(ctx, self.mec)))
        self.ctx = ctx
        self.gossip = make_service(ctx)
        # incentives: its contract item, and the bytes its gossip forwarded to its neighbours
        gossip_stats = self.gossip.stats
        self.incentives = DeviceIncentives(
            replica_of(ctx).key, ctx.config.task_id, lambda: gossip_stats.forwarded_bytes
        )
        self.topic = updates_topic(self.mec)
        check = UpdateCheck(group_members(ctx, self.mec), ctx.config.max_message_bytes)
        self.gossip.subscribe(self.topic, check, None)  # relay only
        replica = replica_of(ctx)
        self.gossip.subscribe(  # blocks are small and the round waits for them: pull at once
            blocks_topic(self.mec),
            block_check(replica.chain.config.finality),
            self._on_block,
            want_delay_s=0.0,
        )
        self.gossip.start()
        self.joined = False
        self._join(ctx)
        finality = replica.chain.config.finality
        self.validator: PbftValidator | None = None
        if replica.key.public_key in finality.signers:
            roster = ctx.config.roster
            ids = {nid: bytes.fromhex(key) for nid, key in roster.items()}
            self.validator = PbftValidator(
                ctx,
                replica,
                committee_replicas(finality, ids),
                proposer=ids[self.mec],
                forward_to=[],
            )

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Gossip; ``global`` and ``stop`` from the MEC; ``submit`` and ``pbft`` of the LMUC
        (full devices); the publisher's ``stop`` only arms a fallback."""
        if self.gossip.on_message(ctx, msg):
            return
        body, sender = msg.payload, msg.sender
        if isinstance(body, TaskPacket) and sender == self.mec:
            self._on_task(ctx, body)
        elif isinstance(body, ItemOffer) and sender == self.mec:
            ctx.send(self.mec, self.incentives.on_offer(body, ctx.wall_ms()))
        elif isinstance(body, Joined) and sender == self.mec:
            self.joined = True
            ctx.cancel_timer("join")
        elif isinstance(body, Stop) and sender == self.mec:
            self._on_stop(ctx, body)
        elif isinstance(body, Stop) and sender == PUBLISHER:
            ctx.set_timer("stop_fallback", STOP_FALLBACK_S)
        elif self.validator is not None and isinstance(body, Submit) and sender == self.mec:
            self.validator.on_submit(ctx, body)
        elif self.validator is not None and isinstance(body, PbftMessage):
            self.validator.on_pbft(ctx, sender, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """PBFT timers, the stop fallback, then gossip-fedavg's."""
        if self.validator is not None and self.validator.on_timer(ctx, name):
            return
        if name == "join":
            self._join(ctx)
            return
        if name == "stop_fallback":
            log.warning("no stop from MEC %s; stopping", self.mec)
            ctx.stop()
            return
        super().on_timer(ctx, name)

    def _join(self, ctx: NodeContext) -> None:
        """Send the MEC this device's registration and task response (Steps 1-2), again
        every HELLO_INTERVAL_S until the MEC acknowledges them."""
        if self.joined:
            return
        ctx.send(self.mec, self._join_request(ctx))
        ctx.set_timer("join", HELLO_INTERVAL_S)

    def _join_request(self, ctx: NodeContext) -> JoinRequest:
        """The registration (for its LMUC) and response (for its task's GMUC) it signs."""
        key = replica_of(ctx).key
        lmuc = replica_of(ctx).chain.config.genesis.chain_id
        registration = key.sign(identity.registration_message(lmuc, ctx.node_id, DEVICE))
        resources = {
            "samples": len(self.learner.train_y),
            **declared_resources(ctx.config.seed, ctx.node_id),
        }
        gmuc = ctx.config.chains[task_chain_of(ctx, ctx.node_id)].genesis.chain_id
        message = gmuc_request.response_message(
            gmuc, ctx.config.task_id, ctx.node_id, resources, list(NEUTRAL_OPINION)
        )
        return JoinRequest(
            registration,
            resources["samples"],
            resources["cpu_mhz"],
            resources["energy_j"],
            NEUTRAL_OPINION,
            key.sign(message),
        )

    def _on_task(self, ctx: NodeContext, msg: TaskPacket) -> None:
        """Open the sealed task (from this device's MEC, for it, for this task and round,
        naming this model), then train as vanilla's device does."""
        if msg.round <= self.round:
            ctx.drop("stale_round", f"task round {msg.round!r}")
            return
        try:
            deadline = open_task(
                replica_of(ctx).key,
                bytes.fromhex(ctx.config.roster[self.mec]),
                msg.packet,
                ctx.config.task_id,
                msg.round,
                msg.model,
            )
        except TaskRefused as exc:
            ctx.drop("bad_task_packet", f"{exc.reason}: {exc}")
            return
        self._train(ctx, GlobalModel(msg.round, msg.model, deadline))

    def _on_stop(self, ctx: NodeContext, stop: Stop) -> None:
        """Stop once the LMUC holds the MEC's final height (catching up from the MEC or the
        full devices)."""
        replica = replica_of(ctx)
        ctx.cancel_timer("stop_fallback")
        ctx.stop_when_synced(stop.height, FINAL_SYNC_S, report_to=[self.mec])
        if stop.height > replica.height:
            full = [
                nid
                for nid, key in ctx.config.roster.items()
                if bytes.fromhex(key) in replica.chain.config.finality.signers
                and nid != ctx.node_id
            ]
            ctx.emit(replica.sync.seek(stop.height, sorted(full), ctx.now()))


class _StatusToMec:
    """`ctx`, except that the ledger status vanilla's start announces to the publisher goes to
    the device's MEC: the publisher does not keep the LMUC."""

    def __init__(self, ctx: NodeContext, mec: str) -> None:
        self._ctx = ctx
        self._mec = mec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def emit(self, outgoing: Iterable[Outgoing]) -> None:
        """Send `outgoing`, the publisher's share to the MEC instead."""
        self._ctx.emit(
            dataclasses.replace(o, dst=self._mec) if o.dst == PUBLISHER else o for o in outgoing
        )


def make_service(ctx: NodeContext) -> GossipService:
    """A gossip service over this node's D2D group with the two-layer parameters."""
    params = params_of(ctx)
    return GossipService(
        ctx,
        gossip_peers(ctx.topology, ctx.node_id),
        params.gossip_config(ctx.config.seed),
        params.heartbeat_s,
    )
