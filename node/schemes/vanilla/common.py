"""What the vanilla roles share: names, timing constants, ledger helpers, the hello."""

from __future__ import annotations

import logging

from node.core.encoding import sha256
from node.core.tx import Transaction, TxError
from node.ledger.replica import Replica
from node.roles.base import NodeContext, Role
from node.schemes.vanilla.messages import DeviceUpdate, Hello, Stop
from topologies import NodeKind

log = logging.getLogger(__name__)

PUBLISHER = "pub"
MEC_DEADLINE_FRACTION = 0.8
HELLO_INTERVAL_S = 1.0
FINAL_SYNC_S = 20.0  # a node's bound on the final catch-up (normally a few ms)
FINAL_LINGER_S = 30.0  # the publisher's bound on serving it (longer than FINAL_SYNC_S)
FINAL_COMMIT_S = 20.0
VALIDATION_SAMPLES = 1000


def replica_of(ctx: NodeContext) -> Replica:
    if ctx.replica is None:
        raise RuntimeError("the vanilla scheme needs a ledger replica on every node")
    return ctx.replica


def catch_up_peers(ctx: NodeContext) -> list[str]:
    """Whom a node asks for missing blocks, in order: the publisher (it lingers after
    ``stop`` until its peers report the final height), this node's MEC, the other MECs,
    the devices of this node's MEC, then every other device (any of them may hold the
    blocks: the MECs and devices keep a replica each)."""
    me = ctx.me
    mecs = sorted(n.id for n in ctx.topology.of_kind(NodeKind.MEC))
    devices = sorted(n.id for n in ctx.topology.of_kind(NodeKind.DEVICE))
    own_mec = me.parent if me.kind == NodeKind.DEVICE else me.id
    order = [PUBLISHER, *([str(own_mec)] if own_mec in mecs else []), *mecs]
    order += [d for d in devices if ctx.topology.node(d).parent == own_mec] + devices
    return [n for n in dict.fromkeys(order) if n != ctx.node_id and n in ctx.config.roster]


def stop_after_last_block(ctx: NodeContext, stop: Stop) -> None:
    """Stop once the ledger holds the publisher's final block (catching up from any peer
    that has it; at most FINAL_SYNC_S), then tell the publisher this node's height."""
    height = stop.height
    replica = replica_of(ctx)
    # first: the blocks this node has received but not yet taken are taken
    ctx.stop_when_synced(height, FINAL_SYNC_S, report_to=[PUBLISHER])
    if height > replica.height:
        log.info("catching up from height %d to the final %d", replica.height, height)
        ctx.emit(replica.sync.seek(height, catch_up_peers(ctx), ctx.now()))


def parse_update_tx(
    ctx: NodeContext,
    sender: str,
    update: DeviceUpdate,
    round_no: int,
    tx_type: str = "task.record_update",
) -> tuple[Transaction, bytes]:
    """The device's signed update transaction (of `tx_type`) and its blob; ValueError if
    they do not match."""
    blob = update.blob
    try:
        tx = Transaction.from_bytes(update.tx)
        tx.verify()
    except TxError as exc:
        raise ValueError(f"transaction: {exc}") from None
    if tx.sender.hex() != ctx.config.roster.get(sender):
        raise ValueError("transaction signed by another key than the sender's")
    p = tx.payload
    if tx.type != tx_type or p.get("round") != round_no:
        raise ValueError("not an update transaction for this round")
    if p.get("blob") != sha256(blob) or p.get("size") != len(blob):
        raise ValueError("blob does not match the transaction's hash and size")
    if not isinstance(p.get("samples"), int) or p["samples"] <= 0:
        raise ValueError("transaction without a sample count")
    return tx, blob


def devices_of(ctx: NodeContext, mec_id: str) -> list[str]:
    return [n.id for n in ctx.topology.of_kind(NodeKind.DEVICE) if n.parent == mec_id]


class Greeter(Role):
    """Says hello to the publisher until the first global model arrives."""

    greeted = False

    def start(self, ctx: NodeContext) -> None:
        """Announce this node (and its ledger height, so that a restarted node catches up)."""
        ctx.emit(replica_of(ctx).sync.announce([PUBLISHER]))
        self._hello(ctx)

    def _hello(self, ctx: NodeContext) -> None:
        if not self.greeted:
            ctx.send(PUBLISHER, Hello(str(ctx.me.kind)))
            ctx.set_timer("hello", HELLO_INTERVAL_S)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Repeat the hello."""
        if name == "hello":
            self._hello(ctx)
