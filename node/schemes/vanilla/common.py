"""What the vanilla roles share: names, timing constants, ledger helpers, the hello."""

from __future__ import annotations

import logging

from node.codec import Message
from node.ledger.encoding import sha256
from node.ledger.replica import Replica
from node.ledger.tx import Transaction, TxError
from node.roles.base import NodeContext, Role
from topologies import NodeKind

log = logging.getLogger(__name__)

PUBLISHER = "pub"
MEC_DEADLINE_FRACTION = 0.8
HELLO_INTERVAL_S = 1.0
FINAL_SYNC_S = 5.0
FINAL_COMMIT_S = 20.0
ACCURACY_AGGREGATORS = ("top_k_accuracy", "accuracy_threshold")
VALIDATION_SAMPLES = 1000


def replica_of(ctx: NodeContext) -> Replica:
    if ctx.replica is None:
        raise RuntimeError("the vanilla scheme needs a ledger replica on every node")
    return ctx.replica


def stop_after_last_block(ctx: NodeContext, msg: Message) -> None:
    """Stop once the ledger holds the publisher's final block (or after FINAL_SYNC_S)."""
    height = msg.payload.get("height")
    replica = replica_of(ctx)
    if isinstance(height, int) and height > replica.height:
        ctx.emit(replica.sync.announce([PUBLISHER]))
        ctx.stop_when_synced(height, FINAL_SYNC_S)
    else:
        ctx.stop()


def parse_update_tx(ctx: NodeContext, msg: Message, round_no: int) -> tuple[Transaction, bytes]:
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
            ctx.send(PUBLISHER, "hello", {"kind": str(ctx.me.kind)})
            ctx.set_timer("hello", HELLO_INTERVAL_S)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Repeat the hello."""
        if name == "hello":
            self._hello(ctx)
