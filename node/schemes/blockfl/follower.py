"""What every blockfl node does: follow the mined blocks (fork choice, confirmation into the
ledger), fetch blobs on demand, and aggregate the global model from the latest block."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from node.codec import Message
from node.contracts.state import State
from node.contracts.task import NS_UPDATE, get_task, update_key
from node.core.block import Block, BlockError
from node.core.encoding import sha256
from node.learning.aggregators import Update, make_strategy
from node.learning.weights import Weights, weights_from_bytes
from node.ledger.chain import LedgerError
from node.ledger.chains import ChainHandle
from node.roles.base import NodeContext, Role
from node.roles.learner import check_update
from node.schemes.blockfl.forkchoice import BlockTree, InvalidBlock
from node.schemes.blockfl.messages import BlobGive, BlobWant, BlockWant, PowBlock
from node.schemes.blockfl.scheme import PUBLISHER, BlockflParams, BlockflScheme
from node.schemes.vanilla.common import replica_of
from topologies import NodeKind

log = logging.getLogger(__name__)

BLOB_RETRY_S = 2.0
GLOBAL_TX = "task.record_global"


@dataclass(frozen=True)
class RoundUpdates:
    """The updates of the latest trained round on the best tip: (device, blob hash, samples)
    in device-id order (0: nothing trained yet)."""

    round: int
    updates: tuple[tuple[str, bytes, int], ...]


def params_of(ctx: NodeContext) -> BlockflParams:
    """This run's scheme parameters."""
    return cast(BlockflParams, BlockflScheme.parse_params(ctx.config.scheme_params))


def latest_updates(state: State, task_id: str, devices: list[str]) -> RoundUpdates | None:
    """From a tip's state: the last round with updates on chain and those updates (None: the
    task is not published yet). The task's recorded round G has its updates; round G+1's
    are on chain when a device has one recorded."""
    task = get_task(state, task_id)
    if task is None:
        return None
    for round_no in (int(task["round"]) + 1, int(task["round"])):
        if round_no < 1:
            continue
        found = []
        for dev in devices:
            rec = state.get(NS_UPDATE, update_key(task_id, round_no, dev))
            if rec is not None:
                found.append((dev, bytes.fromhex(rec["blob"]), int(rec["samples"])))
        if found or round_no == int(task["round"]):
            return RoundUpdates(round_no, tuple(found))
    return RoundUpdates(0, ())


class PowFollower(Role):
    """Mixed into each blockfl role: call `start_follower` in `start`, hand messages to
    `on_follower_message` and timers to `on_follower_timer`; `on_tip` and `on_blobs` are
    the role's hooks."""

    def start_follower(self, ctx: NodeContext) -> None:
        """Set up the block tree over the node's ledger and the aggregation strategy."""
        self.params = params_of(ctx)
        replica = replica_of(ctx)
        self.handle: ChainHandle = ctx.chains[ctx.config.plan.chains[0]]
        self.tree = BlockTree(replica.chain, self.params.confirmations)
        roster = ctx.config.roster
        self.node_of = {bytes.fromhex(key): nid for nid, key in roster.items()}
        self.miners = sorted(n.id for n in ctx.topology.of_kind(NodeKind.MEC) if n.id in roster)
        self.devices = sorted(n.id for n in ctx.topology.of_kind(NodeKind.DEVICE))
        self.others = sorted(nid for nid in roster if nid != ctx.node_id)
        self.wanted: dict[bytes, tuple[tuple[str, ...], int, float]] = {}
        agg = ctx.config.aggregator
        self.strategy = make_strategy(agg.name, agg.params)
        if self.strategy.needs.accuracy:
            raise ValueError(
                f"aggregator.name: {agg.name!r} needs each update's accuracy, which blockfl's "
                "devices cannot measure; allowed: an aggregator that does not (e.g. fedavg)"
            )
        self.last_tip = self.tree.tip[0].hash
        # block hash -> (height, when it reached this node, wall-clock ms): what the ledger
        # records as the block's received time when the block is confirmed into it
        self.arrived: dict[bytes, tuple[int, int]] = {}
        replica.chain.subscribe(lambda _block: self.tree.rebase())  # synced or own appends

    # -- messages --------------------------------------------------------------------------
    def on_follower_message(self, ctx: NodeContext, msg: Message) -> bool:
        """Blocks, block and blob requests and answers; False for anything else."""
        body = msg.payload
        if isinstance(body, PowBlock):
            try:
                block = Block.from_bytes(body.block)
            except BlockError as exc:
                ctx.drop("bad_block", f"from {msg.sender}: {exc}")
                return True
            self.take_block(ctx, block, msg.sender)
        elif isinstance(body, BlockWant):
            found = self.tree.get(body.hash)
            if found is not None:
                ctx.send(msg.sender, PowBlock(found.to_bytes()))
        elif isinstance(body, BlobWant):
            blobs = replica_of(ctx).blobs
            for key in body.hashes:
                ctx.send(msg.sender, BlobGive(key, blobs.get(key) or b""))
        elif isinstance(body, BlobGive):
            self._on_blob(ctx, msg.sender, body)
        else:
            return False
        return True

    def on_follower_timer(self, ctx: NodeContext, name: str) -> bool:
        """The blob retry timer; False for any other."""
        if name != "blob_retry":
            return False
        now = ctx.now()
        for key, (sources, i, asked) in list(self.wanted.items()):
            if now - asked >= BLOB_RETRY_S:
                self._ask(ctx, key, sources, i + 1)
        if self.wanted:
            ctx.set_timer("blob_retry", BLOB_RETRY_S)
        return True

    # -- blocks ----------------------------------------------------------------------------
    def take_block(self, ctx: NodeContext, block: Block, sender: str | None) -> None:
        """Add a block (own or received) to the tree; confirm what is deep enough; call
        `on_tip` when the best tip changed."""
        self.arrived.setdefault(block.hash, (block.height, ctx.wall_ms()))
        try:
            added = self.tree.add(block)
        except InvalidBlock as exc:
            ctx.drop(exc.reason, f"block {block.height} from {sender}: {exc}")
            return
        if not added:
            if sender is not None and self.tree.missing_parent(block):
                ctx.send(sender, BlockWant(block.header.prev_hash))
            return
        for b in added:
            globals_ = [tx.payload["blob"] for tx in b.txs if tx.type == GLOBAL_TX]
            self.want_blobs(ctx, globals_, (PUBLISHER,))
        for b in self.tree.confirmable():
            arrived = self.arrived.get(b.hash)
            try:
                self.handle.append_block(b, None if arrived is None else arrived[1])
            except LedgerError as exc:  # checked against the same parent: not expected
                log.error("confirmed block %d refused by the ledger: %s", b.height, exc)
                break
        stored = self.handle.height
        self.arrived = {h: a for h, a in self.arrived.items() if a[0] > stored}
        self.tree.rebase()
        tip = self.tree.tip[0]
        if tip.hash != self.last_tip:
            self.last_tip = tip.hash
            ctx.metrics.write("tip", height=tip.height, hash=tip.hash.hex(), forks=self.tree.forks)
            self.on_tip(ctx)

    def on_tip(self, ctx: NodeContext) -> None:
        """The best tip changed."""

    def latest(self, ctx: NodeContext) -> RoundUpdates | None:
        """The latest round's updates on the best tip."""
        return latest_updates(self.tree.tip[1], ctx.config.task_id, self.devices)

    # -- blobs -----------------------------------------------------------------------------
    def update_sources(self, device: str) -> tuple[str, ...]:
        """Whom to ask for a device's update: the miners (each got it), then the device."""
        return (*self.miners, device)

    def want_blobs(self, ctx: NodeContext, keys: list[bytes], sources: tuple[str, ...]) -> None:
        """Fetch the blobs among `keys` this node lacks, asking `sources` in turn."""
        blobs = replica_of(ctx).blobs
        sources = tuple(s for s in sources if s != ctx.node_id)
        if not sources:
            return
        for key in keys:
            if key not in self.wanted and not blobs.has(key):
                self._ask(ctx, key, sources, 0)
        if self.wanted:
            ctx.set_timer("blob_retry", BLOB_RETRY_S)

    def _ask(self, ctx: NodeContext, key: bytes, sources: tuple[str, ...], i: int) -> None:
        self.wanted[key] = (sources, i, ctx.now())
        ctx.send(sources[i % len(sources)], BlobWant((key,)))

    def _on_blob(self, ctx: NodeContext, sender: str, give: BlobGive) -> None:
        entry = self.wanted.get(give.hash)
        if entry is None:
            ctx.drop("unsolicited_blob", f"from {sender}")
            return
        if not give.data:
            self._ask(ctx, give.hash, entry[0], entry[1] + 1)
            return
        if sha256(give.data) != give.hash:
            ctx.drop("bad_blob", f"from {sender}")
            return
        replica_of(ctx).blobs.put_behind(give.hash, give.data)
        del self.wanted[give.hash]
        self.on_blobs(ctx)

    def on_blobs(self, ctx: NodeContext) -> None:
        """A wanted blob arrived."""

    def fetch_updates(self, ctx: NodeContext, latest: RoundUpdates) -> bool:
        """True if every update blob of `latest` is here; else ask for the missing ones."""
        blobs = replica_of(ctx).blobs
        missing = [(dev, key) for dev, key, _ in latest.updates if not blobs.has(key)]
        for dev, key in missing:
            self.want_blobs(ctx, [key], self.update_sources(dev))
        return not missing

    def aggregate(
        self, ctx: NodeContext, latest: RoundUpdates, reference: Weights, previous: Weights
    ) -> tuple[Weights, list[str], dict[str, str]]:
        """FedAvg (the run's aggregation strategy) of `latest`'s updates, whose blobs are all
        here: (global weights, contributors, rejected device -> reason). Deterministic:
        every node aggregating the same block gets the same weights. `previous` is kept when
        no update is usable."""
        blobs = replica_of(ctx).blobs
        updates: list[Update] = []
        rejected: dict[str, str] = {}
        for dev, key, samples in latest.updates:
            data = blobs.get(key)
            try:
                if data is None:
                    raise ValueError("blob missing")
                weights = check_update(reference, weights_from_bytes(data))
            except ValueError as exc:
                log.warning("round %d: update of %s refused: %s", latest.round, dev, exc)
                rejected[dev] = "bad_model"
                continue
            updates.append(Update(weights, samples, None, dev))
        if not updates:
            return previous, [], rejected
        try:
            combined = self.strategy.combine(updates)
        except ValueError as exc:
            log.warning("round %d: the aggregator refused the updates: %s", latest.round, exc)
            return previous, [], {**rejected, **{u.sender: "aggregator_refused" for u in updates}}
        for r in combined.selection.rejected:
            rejected[r.update.sender] = r.reason
        weights = previous if combined.weights is None else dict(combined.weights)
        return weights, sorted(u.sender for u in combined.selection.kept), rejected
