"""blockfl's roles: the miner (a MEC), the device and the publisher (vanilla's, re-used where
the protocol is the same: hello, training, update transactions, round records, rewards, stop)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from node.codec import Message
from node.contracts.runtime import last_nonce
from node.contracts.task import get_task
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.finality import mine
from node.core.tx import Transaction, TxError
from node.learning.weights import Weights, weights_to_bytes
from node.ledger.chains import Committer
from node.roles.base import NodeContext
from node.schemes.blockfl.follower import PowFollower, RoundUpdates
from node.schemes.blockfl.messages import PowBlock, PowTxs
from node.schemes.vanilla.common import (
    PUBLISHER,
    Greeter,
    parse_update_tx,
    replica_of,
    stop_after_last_block,
)
from node.schemes.vanilla.device import DeviceRole
from node.schemes.vanilla.messages import DeviceUpdate, GlobalModel, Stop
from node.schemes.vanilla.publisher import PublisherRole

log = logging.getLogger(__name__)


class PowSubmitter:
    """The committer of a node that is not a miner: its transactions go to every miner,
    which puts them in the next block it mines."""

    def __init__(self, ctx: NodeContext, miners: Sequence[str]) -> None:
        self.ctx = ctx
        self.miners = list(miners)

    def submit(self, txs: Sequence[Transaction]) -> None:
        """``pow.txs`` to every miner."""
        if txs:
            self.ctx.multicast(self.miners, PowTxs(tuple(tx.to_bytes() for tx in txs)))


class MinerRole(PowFollower, Greeter):
    """A MEC: collects the round's signed updates and the publisher's transactions, and races
    the other miners to mine the block that records them."""

    kind = "mec"

    def start(self, ctx: NodeContext) -> None:
        """Follow the chain, then say hello."""
        self.start_follower(ctx)
        self.key = replica_of(ctx).key
        self.pub_key = bytes.fromhex(ctx.config.roster[PUBLISHER])
        self.pool: dict[int, dict[str, Transaction]] = {}  # round -> device -> update tx
        self.pub_txs: dict[bytes, Transaction] = {}  # the publisher's, by hash, in order
        self.collect = 0  # the round whose updates this miner collects (0: none yet)
        self.deadline_passed = False
        self.work: tuple[Block, int] | None = None  # candidate, next timestamp to try
        self.work_started = 0.0
        self.work_started_ms = 0  # wall clock: when the block was proposed (see _mine_slice)
        self.attempts = 0
        self.stopped = False
        self.mined = 0
        self.tip_since = ctx.now()
        super().start(ctx)
        self._new_tip(ctx)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Blocks and blobs, updates from devices, transactions from the publisher, stop."""
        body = msg.payload
        if self.on_follower_message(ctx, msg):
            return
        if isinstance(body, DeviceUpdate) and msg.sender in self.devices:
            self._on_update(ctx, msg.sender, body)
        elif isinstance(body, PowTxs) and msg.sender == PUBLISHER:
            self._on_pub_txs(ctx, body)
        elif isinstance(body, Stop) and msg.sender == PUBLISHER:
            self.stopped = True
            self.work = None
            ctx.cancel_timer("mine")
            stop_after_last_block(ctx, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """A mining slice, the round deadline, blob retries, the hello."""
        if self.on_follower_timer(ctx, name):
            return
        if name == "mine":
            self._mine_slice(ctx)
        elif name == "settle":
            self._maybe_mine(ctx)
        elif name == "deadline":
            self.deadline_passed = True
            self._maybe_mine(ctx)
        else:
            super().on_timer(ctx, name)

    # -- collecting ------------------------------------------------------------------------
    def _on_update(self, ctx: NodeContext, sender: str, update: DeviceUpdate) -> None:
        if update.round < max(self.collect, 1) or sender in self.pool.get(update.round, {}):
            ctx.drop("stale_round", f"update round {update.round!r} from {sender}")
            return
        try:
            tx, blob = parse_update_tx(ctx, sender, update, update.round)
        except ValueError as exc:
            ctx.drop("bad_tx", f"{sender}: {exc}")
            return
        replica_of(ctx).blobs.put_behind(tx.payload["blob"], blob)  # hashed by parse_update_tx
        self.pool.setdefault(update.round, {})[sender] = tx
        if update.round == self.collect:
            self._maybe_mine(ctx)

    def _on_pub_txs(self, ctx: NodeContext, body: PowTxs) -> None:
        for raw in body.txs:
            try:
                tx = Transaction.from_bytes(raw)
                tx.verify()
            except TxError as exc:
                ctx.drop("bad_tx", f"publisher transaction: {exc}")
                return
            if tx.sender != self.pub_key:
                ctx.drop("bad_tx", "a pow.txs transaction not signed by the publisher")
                return
            self.pub_txs[tx.hash] = tx
        self._maybe_mine(ctx)

    def on_tip(self, ctx: NodeContext) -> None:
        """Abandon the work on the old tip; collect for the new tip's next round."""
        self._new_tip(ctx)

    def _new_tip(self, ctx: NodeContext) -> None:
        self.greeted = self.greeted or self.tree.tip[0].height > 0
        self.work = None
        self.tip_since = ctx.now()
        ctx.cancel_timer("mine")
        state = self.tree.tip[1]
        used = last_nonce(state, self.pub_key)
        self.pub_txs = {h: tx for h, tx in self.pub_txs.items() if tx.nonce > used}
        latest = self.latest(ctx)
        collect = 0 if latest is None else latest.round + 1
        if collect != self.collect:
            self.collect = collect
            self.pool = {r: p for r, p in self.pool.items() if r >= collect}
            self.deadline_passed = False
            ctx.set_timer("deadline", ctx.config.learning.training.round_deadline_s)
        self._maybe_mine(ctx)

    # -- mining ----------------------------------------------------------------------------
    def _candidate_txs(self, ctx: NodeContext) -> list[Transaction] | None:
        """What the next block should hold, or None to wait: the publisher's pending
        transactions and, once every device answered (or the deadline passed), the updates
        of the round being collected. While a round is being trained the publisher's
        transactions wait for its updates (one block per round)."""
        pub = list(self.pub_txs.values())
        state = self.tree.tip[1]
        task = get_task(state, ctx.config.task_id)
        rounds = ctx.config.learning.training.rounds
        training = task is not None and task["status"] == "open" and 1 <= self.collect <= rounds
        if not training:
            return pub
        got = self.pool.get(self.collect, {})
        if len(got) < len(self.devices) and not (self.deadline_passed and got):
            return pub if self.deadline_passed else None
        return pub + [got[d] for d in sorted(got)]

    def _needs_confirmation(self, ctx: NodeContext) -> bool:
        """True while the task's closing block has fewer than `confirmations` blocks on top
        (the miners then mine empty blocks, so that it reaches every ledger)."""
        branch = self.tree.branch()
        for depth, block in enumerate(reversed(branch)):
            if any(tx.type == "task.close" for tx in block.txs):
                return depth < self.params.confirmations
        return False

    def _maybe_mine(self, ctx: NodeContext) -> None:
        if self.work is not None or self.stopped:
            return
        wait = self.tip_since + self.params.settle_s - ctx.now()
        if wait > 0:  # competing blocks of the tip's height may still be on their way
            ctx.set_timer("settle", wait)
            return
        txs = self._candidate_txs(ctx)
        if txs is None:
            return
        parent, state = self.tree.tip
        proposed_ms = ctx.wall_ms()
        start = max(proposed_ms, parent.timestamp_ms)
        chain = self.handle.replica.chain
        candidate, _ = chain.candidate_on(parent, state, txs, self.key.public_key, start)
        wanted_updates = [tx for tx in txs if tx.type == "task.record_update"]
        kept = {tx.hash for tx in candidate.txs}
        if any(tx.hash not in kept for tx in wanted_updates):
            return  # the publisher's record of the previous round has not arrived yet
        if not candidate.txs and not self._needs_confirmation(ctx):
            return
        self.work = (candidate, candidate.header.timestamp_ms)
        self.work_started = ctx.now()
        self.work_started_ms = proposed_ms
        self.attempts = 0
        ctx.set_timer("mine", 0.0)

    def _mine_slice(self, ctx: NodeContext) -> None:
        if self.work is None:
            return
        candidate, first = self.work
        n = self.params.slice_attempts
        found: BlockHeader | None = mine(candidate.header, self.params.difficulty_bits, first, n)
        if found is None:
            self.work = (candidate, first + n)
            self.attempts += n
            ctx.set_timer("mine", 0.0)
            return
        self.attempts += found.timestamp_ms - first + 1
        block = Block(found, candidate.txs, ())
        block = block.with_certificate((CommitSignature.create(self.key, block.hash),))
        self.work = None
        self.mined += 1
        # The block's honest proposal time: the header's timestamp is where the search ran
        # (ahead of the clock by the attempts), so the miner records when it began mining
        # this block (proposed) and when it found the proof (certified: final under PoW).
        found_ms = ctx.wall_ms()
        self.handle.replica.chain.store.record_proposal(
            block.hash, block.height, self.work_started_ms, found_ms
        )
        ctx.metrics.write(
            "mined",
            height=block.height,
            txs=len(block.txs),
            hash=block.hash.hex(),
            attempts=self.attempts,
            mining_s=ctx.now() - self.work_started,
            proposed_ms=self.work_started_ms,
            found_ms=found_ms,
        )
        ctx.multicast(self.others, PowBlock(block.to_bytes()))
        self.take_block(ctx, block, None)


class BlockflDeviceRole(PowFollower, DeviceRole):
    """Vanilla's device; its global model is the aggregate of the latest block's updates,
    computed here, and its update goes to every miner."""

    def start(self, ctx: NodeContext) -> None:
        """Load the partition (vanilla), follow the chain, say hello."""
        self.ctx = ctx
        super().start(ctx)  # DeviceRole.start: learner, threats, hello
        self.start_follower(ctx)
        self.global_weights: Weights = self.reference
        self.pending: RoundUpdates | None = None

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Blocks and blobs; `stop` from the publisher."""
        if self.on_follower_message(ctx, msg):
            return
        body = msg.payload
        if isinstance(body, Stop) and msg.sender == PUBLISHER:
            stop_after_last_block(ctx, body)
        else:
            ctx.drop("unexpected", f"{msg.type} from {msg.sender}")

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Blob retries and the hello."""
        if not self.on_follower_timer(ctx, name):
            super().on_timer(ctx, name)

    def send_update(self, ctx: NodeContext, update: DeviceUpdate) -> None:
        """To every miner."""
        ctx.multicast(self.miners, update)

    def on_tip(self, ctx: NodeContext) -> None:
        """Train the next round once the latest block's updates are aggregated."""
        self.greeted = True
        latest = self.latest(ctx)
        rounds = ctx.config.learning.training.rounds
        if latest is None or latest.round + 1 > rounds or latest.round + 1 <= self.round:
            return
        self.pending = latest
        self.on_blobs(ctx)

    def on_blobs(self, ctx: NodeContext) -> None:
        """Aggregate and train when the pending round's blobs are all here."""
        latest = self.pending
        if latest is None or not self.fetch_updates(ctx, latest):
            return
        self.pending = None
        if latest.round >= 1:
            self.global_weights, _, _ = self.aggregate(
                ctx, latest, self.reference, self.global_weights
            )
        model = weights_to_bytes(self.global_weights)
        deadline = ctx.config.learning.training.round_deadline_s
        self._train(ctx, GlobalModel(latest.round + 1, model, deadline))


class BlockflPublisherRole(PowFollower, PublisherRole):
    """Vanilla's publisher without the round traffic: it publishes the task, aggregates each
    round's block like every device, evaluates, records the round and pays the rewards
    through the miners."""

    def start(self, ctx: NodeContext) -> None:
        """What vanilla's publisher sets up (its committer: the miners, `make_committer`)."""
        self.recorded = 0
        self.pending: RoundUpdates | None = None
        self.finishing = False
        super().start(ctx)
        self.reference = self.weights

    def make_committer(self, ctx: NodeContext) -> Committer:
        """The task chain follows the longest proof-of-work branch; the miners write it."""
        self.start_follower(ctx)
        return PowSubmitter(ctx, self.miners)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Blocks and blobs; hellos (vanilla)."""
        if not self.on_follower_message(ctx, msg):
            super().on_message(ctx, msg)

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        """Blob retries; vanilla's start-up, final and linger timers."""
        if not self.on_follower_timer(ctx, name):
            super().on_timer(ctx, name)

    def _begin_round(self, ctx: NodeContext, model: bytes | None = None) -> None:
        """Nothing to send: the devices start each round from the latest block."""
        self.round = max(self.round, 1)
        self.round_started = ctx.now()

    def on_tip(self, ctx: NodeContext) -> None:
        """Aggregate and record the latest block's round (once)."""
        latest = self.latest(ctx)
        if latest is None or latest.round <= self.recorded:
            return
        self.pending = latest
        self.on_blobs(ctx)

    def on_blobs(self, ctx: NodeContext) -> None:
        """Aggregate, evaluate and record the pending round when its blobs are all here."""
        latest = self.pending
        if latest is None or not self.fetch_updates(ctx, latest):
            return
        self.pending = None
        self._record(ctx, latest)

    def _record(self, ctx: NodeContext, latest: RoundUpdates) -> None:
        round_no = latest.round
        self.weights, contributors, rejected = self.aggregate(
            ctx, latest, self.reference, self.weights
        )
        samples = {dev: n for dev, _, n in latest.updates}
        for dev in contributors:
            self.samples_by_device[dev] = self.samples_by_device.get(dev, 0) + samples[dev]
        model = weights_to_bytes(self.weights)
        self.learner.load(self.weights)
        result = self.learner.evaluate()
        self.recorded = round_no
        self.round = round_no
        self._record_round(ctx, round_no, {}, contributors, result.accuracy, model)
        missing = sorted(set(self.devices) - set(samples))
        ctx.metrics.write(
            "round",
            round=round_no,
            accuracy=result.accuracy,
            loss=result.loss,
            eval_set="test",
            contributors=len(contributors),
            rejected=sorted(rejected),
            rejected_reasons=dict(sorted(rejected.items())),
            missing=missing,
            round_time_s=ctx.now() - self.round_started,
            elapsed_s=ctx.now() - self.run_started,
            height=self.tree.tip[0].height,
        )
        log.info(
            "round %d: accuracy %.4f loss %.4f (%d devices)",
            round_no,
            result.accuracy,
            result.loss,
            len(contributors),
        )
        self.round_started = ctx.now()
        if round_no >= ctx.config.learning.training.rounds and not self.finishing:
            self.finishing = True
            self._finish(ctx)
