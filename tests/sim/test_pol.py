"""Proof-of-learning rounds among 7-20 edge servers on a seeded in-memory network.

How it works: every ES runs a `PolCore` and a small host (this file) that builds, signs and
broadcasts a real block when the core says `Propose`, re-verifies received blocks (links,
Merkle root, every transaction's Ed25519 signature, and the ``bees.elect`` transaction
against the ranking — what the BEES contract checks), appends accepted blocks and starts the
next round, `gap_ms` later (training and update collection), with the ranking computed
from the new head. A heap of (time ms, tiebreak, event)
holds deliveries (blocks travel as bytes, with seeded random delays) and core ticks; the
clock jumps to the next event. Every honest `Accept` is checked at once: no two honest ES
may accept different blocks for one height.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from node.consensus.pol import Accept, PolAction, PolCore, Propose, Reject
from node.core.block import Block, BlockHeader, CommitSignature, genesis_header
from node.core.encoding import sha256
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.keys import NodeKey

TIMEOUT_MS = 200
GRACE_MS = 50
GENESIS = Block(genesis_header(sha256(b"bees-genesis")), ())

Ranking = Callable[[int, bytes], tuple[str, ...]]


class SafetyViolation(AssertionError):
    """Two honest ES accepted different blocks for one height."""


def es_ids(n: int) -> list[str]:
    """ES ids es00..es{n-1}."""
    return [f"es{i:02d}" for i in range(n)]


def key_for(es: str) -> NodeKey:
    """A fixed Ed25519 key per ES id."""
    return NodeKey.from_seed(sha256(b"pol-sim/" + es.encode()))


def pol_ranking(ids: list[str], seed: int) -> Ranking:
    """Stands in for the BEES contract: ES ids by I_k = n_k·c_k/B_k, best first, where n_k
    and c_k are seeded per ES and the leftover battery B_k is drawn from the parent block's
    hash (chain state), so the ranking changes from height to height."""
    rng = random.Random(seed)
    n = {es: rng.randint(3, 7) * rng.randint(200, 600) for es in ids}
    c = {es: rng.uniform(1.0, 3.0) for es in ids}

    def ranking(height: int, parent: bytes) -> tuple[str, ...]:
        state = random.Random(sha256(parent + height.to_bytes(8, "big")))
        battery = {es: state.uniform(0.2, 1.0) for es in ids}
        return tuple(sorted(ids, key=lambda es: (-n[es] * c[es] / battery[es], es)))

    return ranking


def forced_first(first: list[str], rest: Ranking) -> Ranking:
    """A ranking with `first` at ranks 0.. and the others in `rest`'s order."""

    def ranking(height: int, parent: bytes) -> tuple[str, ...]:
        return tuple(first) + tuple(es for es in rest(height, parent) if es not in first)

    return ranking


@dataclass
class Host:
    """One ES: its core, key, accepted chain and what it saw."""

    id: str
    key: NodeKey
    behaviour: str  # "honest" | "early" | "bad_tx" | "silent"
    ranking: Ranking
    core: PolCore = field(init=False)
    chain: list[Block] = field(default_factory=lambda: [GENESIS])
    nonce: int = 0
    accepts: list[tuple[int, Accept]] = field(default_factory=list)  # (time, accept)
    rejects: list[tuple[int, Reject, str]] = field(default_factory=list)  # (+ proposer id)
    starts: dict[int, int] = field(default_factory=dict)  # height -> round start ms
    arrivals: dict[bytes, int] = field(default_factory=dict)  # block hash -> first seen ms

    @property
    def honest(self) -> bool:
        return self.behaviour == "honest"

    def verify(self, block: Block) -> str | None:
        """What an honest ES re-checks before accepting a block."""
        head = self.chain[-1]
        if block.header.prev_hash != head.hash:
            return "prev_hash"
        if block.header.merkle_root != block.computed_merkle_root():
            return "merkle_root"
        for tx in block.txs:
            try:
                tx.verify()
            except TxError as exc:
                return f"tx {exc.reason}"
        elects = [tx for tx in block.txs if tx.type == "bees.elect"]
        ranking = self.ranking(block.height, head.hash)
        if len(elects) != 1 or elects[0].sender != block.header.proposer:
            return "election"
        rank, proposer = elects[0].payload.get("rank"), self.core.ids[block.header.proposer]
        if not isinstance(rank, int) or ranking[rank : rank + 1] != (proposer,):
            return "election"  # what the BEES contract refuses: not ranking[rank]
        return None

    def build(self, height: int, rank: int, now: int, members: dict[str, NodeKey]) -> Block:
        """A signed block for `height` at `rank`: the election and this ES's update."""
        self.nonce += 1
        txs = [
            Transaction.create(self.key, "bees.elect", self.nonce, {"round": height, "rank": rank})
        ]
        self.nonce += 1
        update = {"round": height, "accuracy": 0.81, "blob": sha256(self.id.encode())}
        if self.behaviour == "bad_tx":  # an update claimed for another ES, signed by this one
            victim = next(k for es, k in members.items() if es != self.id)
            good = Transaction.create(self.key, "bees.update", self.nonce, update)
            txs.append(
                Transaction("bees.update", victim.public_key, self.nonce, update, good.signature)
            )
        else:
            txs.append(Transaction.create(self.key, "bees.update", self.nonce, update))
        parent = self.chain[-1].hash
        root = merkle_root([tx.hash for tx in txs])
        header = BlockHeader(height, parent, now, self.key.public_key, root, sha256(parent + root))
        block = Block(header, tuple(txs))
        return block.with_certificate((CommitSignature.create(self.key, block.hash),))


class Net:
    """The hosts, a simulated clock (ms) and a queue of deliveries and ticks."""

    def __init__(
        self,
        n: int,
        seed: int,
        behaviours: dict[str, str] | None = None,
        ranking: Ranking | None = None,
        slow: dict[str, int] | None = None,
        grace_ms: int = GRACE_MS,
        links: dict[frozenset[str], int] | None = None,
        gap_ms: int = 30,
    ) -> None:
        """`slow`: extra delay (ms) to and from an ES; `links`: extra delay on the link
        between two ES; `gap_ms`: how long after accepting a block an ES starts the next
        round (its training and update collection; an "early" ES skips it)."""
        ids = es_ids(n)
        self.rng = random.Random(seed)
        self.ranking = ranking or pol_ranking(ids, seed)
        self.slow = slow or {}
        self.links = links or {}
        self.gap_ms = gap_ms
        self._blocks: dict[bytes, Block] = {}
        self.keys = {es: key_for(es) for es in ids}
        members = {es: k.public_key for es, k in self.keys.items()}
        self.hosts: list[Host] = []
        for es in ids:
            host = Host(es, self.keys[es], (behaviours or {}).get(es, "honest"), self.ranking)
            host.core = PolCore(es, members, host.verify, TIMEOUT_MS, grace_ms)
            self.hosts.append(host)
        self.now = 0
        self.target = 0
        self._queue: list[tuple[int, int, int, str, object]] = []
        self._seq = 0
        self._ticks: dict[int, int] = {}
        self._accepted: dict[int, bytes] = {}

    def _push(self, at: int, idx: int, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, idx, kind, payload))

    def _broadcast(self, idx: int, block: Block) -> None:
        src = self.hosts[idx].id
        data = block.to_bytes()
        for j, host in enumerate(self.hosts):
            if j != idx:
                delay = self.rng.randint(1, 20) + self.slow.get(src, 0) + self.slow.get(host.id, 0)
                delay += self.links.get(frozenset((src, host.id)), 0)
                self._push(self.now + delay, j, "block", (src, data))

    def apply(self, idx: int, actions: list[PolAction]) -> None:
        """Carry out ES `idx`'s actions (its behaviour decides what a Byzantine one does)."""
        host = self.hosts[idx]
        for act in actions:
            if isinstance(act, Propose):
                if host.behaviour in ("silent", "early"):
                    continue
                self._propose(idx, act.height, act.rank)
            elif isinstance(act, Accept):
                host.accepts.append((self.now, act))
                block = self._blocks[act.block_hash]
                assert block.height == len(host.chain)
                host.chain.append(block)
                if host.honest:
                    first = self._accepted.setdefault(act.height, act.block_hash)
                    if first != act.block_hash:
                        raise SafetyViolation(f"two blocks accepted for height {act.height}")
                if act.height < self.target and self.gap_ms and host.behaviour != "early":
                    self._push(self.now + self.gap_ms, idx, "start", act.height + 1)
                elif act.height < self.target:
                    self._start(idx, act.height + 1)
            else:
                proposer = host.core.ids.get(self._blocks[act.block_hash].header.proposer, "?")
                host.rejects.append((self.now, act, proposer))
        self._schedule_tick(idx)

    def _propose(self, idx: int, height: int, rank: int) -> None:
        host = self.hosts[idx]
        block = host.build(height, rank, self.now, self.keys)
        self._blocks[block.hash] = block
        self._broadcast(idx, block)
        host.arrivals.setdefault(block.hash, self.now)
        self.apply(idx, host.core.on_block(block, host.id, self.now))

    def _start(self, idx: int, height: int) -> None:
        host = self.hosts[idx]
        host.starts[height] = self.now
        acts = host.core.start_round(height, self.ranking(height, host.chain[-1].hash), self.now)
        if host.behaviour == "early":  # proposes at once, whatever its rank
            rank = host.core.rank
            assert rank is not None
            self._propose(idx, height, rank)
        self.apply(idx, acts)

    def _schedule_tick(self, idx: int) -> None:
        due = self.hosts[idx].core.next_tick_ms()
        if due is not None and self._ticks.get(idx) != due:
            self._ticks[idx] = due
            self._push(max(due, self.now), idx, "tick", due)

    def run(self, heights: int, until_ms: int = 60_000) -> None:
        """Every ES starts round 1 at time 0; run until every ES (the Byzantine ones follow
        the chain too) accepted `heights` blocks, or the clock passes `until_ms`."""
        self.target = heights
        for idx in range(len(self.hosts)):
            self._start(idx, 1)
        while self._queue and self._queue[0][0] <= until_ms:
            at, _, idx, kind, payload = heapq.heappop(self._queue)
            self.now = at
            host = self.hosts[idx]
            if kind == "tick":
                if self._ticks.get(idx) == payload:
                    del self._ticks[idx]
                    self.apply(idx, host.core.tick(at))
                continue
            if kind == "start":
                assert isinstance(payload, int)
                self._start(idx, payload)
                continue
            src, data = payload  # type: ignore[misc]
            block = Block.from_bytes(data)
            self._blocks.setdefault(block.hash, block)
            host.arrivals.setdefault(block.hash, at)
            self.apply(idx, host.core.on_block(block, src, at))
            if all(len(h.chain) > heights for h in self.hosts):
                return

    def honest_hosts(self) -> list[Host]:
        """The honest ES."""
        return [h for h in self.hosts if h.honest]

    def winners(self) -> list[tuple[str, ...]]:
        """The ranking at each height, from the (agreed) honest chain."""
        chain = self.honest_hosts()[0].chain
        return [self.ranking(b.height, chain[b.height - 1].hash) for b in chain[1:]]


def _agreed_chain(net: Net, heights: int) -> list[Block]:
    chains = [[b.hash for b in h.chain] for h in net.honest_hosts()]
    assert all(len(c) == heights + 1 for c in chains), [len(c) for c in chains]
    assert all(c == chains[0] for c in chains)
    return net.honest_hosts()[0].chain


@pytest.mark.parametrize(("n", "seed"), [(7, 1), (13, 2), (20, 3), (20, 4)])
def test_honest_run_every_es_accepts_the_pol_winners_block(n: int, seed: int) -> None:
    net = Net(n, seed)
    net.run(heights=6)
    chain = _agreed_chain(net, 6)
    for block, ranking in zip(chain[1:], net.winners(), strict=True):
        assert block.header.proposer == net.keys[ranking[0]].public_key
    for host in net.hosts:
        assert [a.rank for _, a in host.accepts] == [0] * 6
        assert host.rejects == []
        assert dict(host.core.counts) == {"accepted": 6}
        # nobody waited for a timeout: each block was accepted within a few deliveries
        assert all(t - host.starts[a.height] < TIMEOUT_MS - GRACE_MS for t, a in host.accepts)


@pytest.mark.parametrize(("n", "seed", "rank"), [(7, 5, 3), (13, 6, 1), (20, 7, 12)])
def test_a_byzantine_non_winner_proposing_first_is_rejected(n: int, seed: int, rank: int) -> None:
    ids = es_ids(n)
    byz, winner = ids[-1], ids[0]
    base = pol_ranking(ids, seed)

    def ranking(height: int, parent: bytes) -> tuple[str, ...]:
        order = [es for es in base(height, parent) if es not in (byz, winner)]
        return (winner, *order[: rank - 1], byz, *order[rank - 1 :])

    # the winner's links are slow and the Byzantine ES does not train between rounds, so its
    # block reaches everyone first at every height
    net = Net(n, seed, {byz: "early"}, ranking, slow={winner: 25}, gap_ms=40)
    net.run(heights=3)
    chain = _agreed_chain(net, 3)
    assert all(b.header.proposer == net.keys[winner].public_key for b in chain[1:])
    for host in net.honest_hosts():
        if host.id == winner:
            continue
        assert [(r.reason, p) for _, r, p in host.rejects] == [("not_winner", byz)] * 3
        for (_, reject, _), block in zip(host.rejects, chain[1:], strict=True):
            assert reject.height == block.height
            assert host.arrivals[reject.block_hash] < host.arrivals[block.hash]
        assert [(a.proposer, a.rank) for _, a in host.accepts] == [(winner, 0)] * 3
        assert host.core.counts == {"accepted": 3, "not_winner": 3}


@pytest.mark.parametrize(("n", "seed"), [(7, 8), (16, 9)])
def test_an_unverifiable_winner_block_is_rejected_and_rank_1_takes_over(n: int, seed: int) -> None:
    ids = es_ids(n)
    byz = ids[2]
    ranking = forced_first([byz], pol_ranking(ids, seed))
    net = Net(n, seed, {byz: "bad_tx"}, ranking)
    net.run(heights=3)
    chain = _agreed_chain(net, 3)
    for block, order in zip(chain[1:], net.winners(), strict=True):
        assert block.header.proposer == net.keys[order[1]].public_key
    for host in net.honest_hosts():
        reasons = [r.reason for _, r, _ in host.rejects]
        assert reasons == ["unverifiable:tx bad_signature"] * 3
        assert {p for _, _, p in host.rejects} == {byz}
        assert [a.rank for _, a in host.accepts] == [1] * 3
        # our choice: rank 1 waits for its turn even though the bad block was seen earlier
        for t, accept in host.accepts:
            assert t >= host.starts[accept.height] + TIMEOUT_MS - GRACE_MS
        assert host.core.counts == {"accepted": 3, "unverifiable": 3}


@pytest.mark.parametrize(("n", "seed", "silent"), [(7, 10, 1), (20, 11, 1), (10, 12, 2)])
def test_silent_winners_are_replaced_after_the_timeout(n: int, seed: int, silent: int) -> None:
    ids = es_ids(n)
    quiet = ids[:silent]
    ranking = forced_first(quiet, pol_ranking(ids, seed))
    net = Net(n, seed, dict.fromkeys(quiet, "silent"), ranking)
    net.run(heights=4)
    chain = _agreed_chain(net, 4)
    for block, order in zip(chain[1:], net.winners(), strict=True):
        assert block.header.proposer == net.keys[order[silent]].public_key
    for host in net.hosts:  # the silent ones follow the chain too
        assert [a.rank for _, a in host.accepts] == [silent] * 4
        assert host.rejects == []
        for t, accept in host.accepts:
            assert t >= host.starts[accept.height] + silent * TIMEOUT_MS - GRACE_MS
    # the takeover came at the first turn after the silence, not later
    proposer = net.hosts[ids.index(net.winners()[0][silent])]
    assert proposer.accepts[0][0] == proposer.starts[1] + silent * TIMEOUT_MS


@pytest.mark.parametrize(("grace", "split"), [(80, False), (0, True)])
def test_the_grace_covers_round_start_skew(grace: int, split: bool) -> None:
    """Why the grace exists: es06's link to es01 is slow, so es06 starts round 2 (when es01's
    takeover block of round 1 reaches it) up to 59 ms after es02, round 2's takeover
    proposer. Without grace es06 refuses es02's block as early (not_winner), proposes its
    own at its turn and the honest ES split; with a grace above the skew all agree."""
    ids = es_ids(7)
    rest = pol_ranking(ids, 13)
    first = {1: [ids[0], ids[1]], 2: [ids[0], ids[2], ids[6]]}

    def ranking(height: int, parent: bytes) -> tuple[str, ...]:
        return forced_first(first[height], rest)(height, parent)

    links = {frozenset((ids[1], ids[6])): 40}
    net = Net(7, 13, {ids[0]: "silent"}, ranking, grace_ms=grace, links=links)
    if split:
        with pytest.raises(SafetyViolation):
            net.run(heights=2)
        late = net.hosts[6]
        assert [(r.reason, p) for _, r, p in late.rejects][:1] == [("not_winner", ids[2])]
    else:
        net.run(heights=2)
        chain = _agreed_chain(net, 2)
        assert chain[2].header.proposer == net.keys[ids[2]].public_key
        assert all(h.rejects == [] for h in net.honest_hosts())
