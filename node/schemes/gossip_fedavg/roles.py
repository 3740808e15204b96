"""gossip-fedavg's roles: vanilla's, with the devices' updates and the round's blocks carried
by D2D gossip (`node.gossip.GossipService`) inside each MEC's group."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import cast

from node.codec import Message
from node.core.block import Block, BlockError
from node.core.encoding import EncodingError, canonical, decode_canonical, sha256
from node.core.finality import Finality, FinalityError
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.gossip import ACCEPT, Deliver, GossipService, Validator, Verdict, reject
from node.roles.base import NodeContext, Role
from node.schemes.gossip_fedavg.scheme import GossipFedAvgParams, GossipFedAvgScheme, gossip_peers
from node.schemes.vanilla.common import devices_of, replica_of
from node.schemes.vanilla.device import DeviceRole
from node.schemes.vanilla.mec import MecRole
from node.schemes.vanilla.messages import DeviceUpdate
from node.schemes.vanilla.publisher import PublisherRole

log = logging.getLogger(__name__)


def updates_topic(mec: str) -> str:
    """The gossip topic of the update transactions of `mec`'s devices."""
    return f"updates.{mec}"


def blocks_topic(mec: str) -> str:
    """The gossip topic that carries the chain's blocks to `mec`'s devices."""
    return f"blocks.{mec}"


def params_of(ctx: NodeContext) -> GossipFedAvgParams:
    """This run's scheme parameters."""
    return cast(GossipFedAvgParams, GossipFedAvgScheme.parse_params(ctx.config.scheme_params))


def make_service(ctx: NodeContext) -> GossipService:
    """A gossip service over this node's D2D group (see `scheme.gossip_peers`)."""
    params = params_of(ctx)
    return GossipService(
        ctx,
        gossip_peers(ctx.topology, ctx.node_id),
        params.gossip_config(ctx.config.seed),
        params.heartbeat_s,
    )


class Refused(ValueError):
    """A gossiped item is refused; `verdict` says why."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def update_item(blob: bytes, tx: bytes) -> bytes:
    """The gossip item of a device update: the canonical map ``{blob, tx}`` (every byte of
    it is covered: the transaction is signed and names the blob's hash and size)."""
    return canonical({"blob": blob, "tx": tx})


class UpdateCheck:
    """The validation hook of an updates topic: an `update_item` whose ``task.record_update``
    transaction is signed by a device of the group and names the carried blob. Rounds are
    the MEC's business (a late update is valid, and dropped there as ``stale_round``)."""

    def __init__(self, members: Mapping[bytes, str], max_bytes: int) -> None:
        self.members = dict(members)
        self.max_bytes = max_bytes

    def parse(self, data: bytes) -> tuple[str, DeviceUpdate]:
        """(the signing device, the update as vanilla's MEC takes it); raises Refused."""
        try:
            item = decode_canonical(data, self.max_bytes)
        except EncodingError as exc:
            raise Refused(reject("malformed")) from exc
        if not (
            isinstance(item, dict)
            and set(item) == {"blob", "tx"}
            and isinstance(item["blob"], bytes)
            and isinstance(item["tx"], bytes)
        ):
            raise Refused(reject("malformed"))
        try:
            tx = Transaction.from_bytes(item["tx"])
            tx.verify()
        except TxError as exc:
            raise Refused(reject("bad_signature")) from exc
        device = self.members.get(tx.sender)
        if device is None:
            raise Refused(reject("not_member"))
        p, blob = tx.payload, item["blob"]
        round_no = p.get("round")
        if tx.type != "task.record_update" or type(round_no) is not int or round_no < 0:
            raise Refused(reject("bad_tx"))
        if p.get("blob") != sha256(blob) or p.get("size") != len(blob):
            raise Refused(reject("blob_mismatch"))
        # loss and accuracy are informational and unsigned: not carried
        return device, DeviceUpdate(round_no, blob, item["tx"], math.nan, math.nan)

    def __call__(self, data: bytes) -> Verdict:
        try:
            self.parse(data)
        except Refused as exc:
            return exc.verdict
        return ACCEPT


def block_check(finality: Finality) -> Validator:
    """The validation hook of a blocks topic: a well-formed block whose transactions match
    its Merkle root and whose certificate satisfies the chain's finality rule (what a relay
    can check without the parent; the ledger checks the rest when appending)."""

    def check(data: bytes) -> Verdict:
        try:
            block = Block.from_bytes(data)
        except BlockError:
            return reject("malformed")
        if merkle_root([tx.hash for tx in block.txs]) != block.header.merkle_root:
            return reject("bad_block")
        try:
            finality.check(block)
        except FinalityError:
            return reject("bad_block")
        return ACCEPT

    return check


def group_members(ctx: NodeContext, mec: str) -> dict[bytes, str]:
    """Public key -> device id for `mec`'s devices."""
    roster = ctx.config.roster
    return {bytes.fromhex(roster[d]): d for d in devices_of(ctx, mec) if d in roster}


class GossipMember(Role):
    """A role in a D2D gossip group: gossip messages and the heartbeat go to its service
    (`self.gossip`, made in `start`), everything else to the vanilla role it is mixed into."""

    gossip: GossipService

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Gossip to the service; the rest to the vanilla role."""
        if not self.gossip.on_message(ctx, msg):
            super().on_message(ctx, msg)  # type: ignore[safe-super]  # the vanilla role's

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """The gossip heartbeat, or the vanilla role's timers."""
        if not self.gossip.on_timer(ctx, name):
            super().on_timer(ctx, name)

    def finish(self, ctx: NodeContext) -> None:
        """Write the gossip counters."""
        self.gossip.finish(ctx)
        super().finish(ctx)


class GossipDeviceRole(GossipMember, DeviceRole):
    """Vanilla's device; its update goes into the group's gossip, which it also relays, and
    it takes the chain's blocks from the gossip."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start, then join the group's gossip."""
        super().start(ctx)
        mec = str(ctx.me.parent)
        self.ctx = ctx
        self.gossip = make_service(ctx)
        self.topic = updates_topic(mec)
        members = group_members(ctx, mec)
        check = UpdateCheck(members, ctx.config.max_message_bytes)
        self.gossip.subscribe(self.topic, check, None)  # relay only
        finality = replica_of(ctx).chain.config.finality
        self.gossip.subscribe(blocks_topic(mec), block_check(finality), self._on_block)
        self.gossip.start()

    def send_update(self, ctx: NodeContext, update: DeviceUpdate) -> None:
        """Into the group's gossip (the MEC takes it from there), not to the MEC."""
        self.gossip.publish(self.topic, update_item(update.blob, update.tx))

    def _on_block(self, item: Deliver) -> None:
        """A block from the gossip goes to the ledger as if sent by the relay that brought it
        (the next one is appended; a gap makes the ledger ask that relay for what is missing);
        it was received now, when the gossip delivered it."""
        height = Block.from_bytes(item.data).height
        payload = {"block": item.data, "height": height}
        sync = replica_of(self.ctx).sync
        self.ctx.emit(
            sync.handle(item.sender, "chain.block", payload, self.ctx.now(), self.ctx.wall_ms())
        )


class GossipMecRole(GossipMember, MecRole):
    """Vanilla's MEC; it averages the updates that reach it by gossip and spreads each block
    of the chain into its devices' gossip."""

    def start(self, ctx: NodeContext) -> None:
        """Vanilla's start, then join the group's gossip and follow the chain."""
        super().start(ctx)
        self.ctx = ctx
        self.gossip = make_service(ctx)
        members = group_members(ctx, ctx.node_id)
        self.check = UpdateCheck(members, ctx.config.max_message_bytes)
        self.gossip.subscribe(updates_topic(ctx.node_id), self.check, self._on_gossiped_update)
        replica = replica_of(ctx)
        self.blocks = blocks_topic(ctx.node_id)
        self.gossip.subscribe(self.blocks, block_check(replica.chain.config.finality), None)
        self.gossip.start()
        replica.chain.subscribe(self._spread_block)

    def _on_gossiped_update(self, item: Deliver) -> None:
        device, update = self.check.parse(item.data)  # valid: the hook accepted it
        self._on_update(self.ctx, device, update)

    def _spread_block(self, block: Block) -> None:
        self.gossip.publish(self.blocks, block.to_bytes())


class GossipPublisherRole(PublisherRole):
    """Vanilla's publisher; it sends each block to the MECs only (they gossip it on)."""

    def block_peers(self) -> list[str]:
        """The MECs only: each gossips the block on in its group."""
        return list(self.mecs)
