"""PbftValidator with pipelined candidates: 4 validators (real cores, real ledgers with
deferred writes) in memory; submissions all at once commit in order, also with a silent
validator, and every ledger verifies once flushed."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from node.contracts.runtime import Genesis
from node.core.encoding import sha256
from node.core.finality import Committee
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.chain import ChainConfig, verify_store
from node.ledger.replica import Replica
from node.ledger.sync import Outgoing
from node.messages import from_payload, message_type, to_payload
from node.roles.validator import PbftMessage, PbftValidator, Submit

PUB = NodeKey.from_seed(sha256(b"validator-pipeline/pub"))
DEVICES = [NodeKey.from_seed(sha256(b"validator-pipeline/dev/%d" % i)) for i in range(3)]
MECS = [NodeKey.from_seed(sha256(b"validator-pipeline/mec/%d" % i)) for i in range(4)]
IDS = [f"mec{i}" for i in range(4)]
ROUNDS = 7


class Net:
    """A FIFO of (src, dst, type, payload) among validators; `silent` ids send nothing."""

    def __init__(self, silent: frozenset[str] = frozenset()) -> None:
        self.queue: deque[tuple[str, str, str, dict[str, Any]]] = deque()
        self.silent = silent
        self.forwarded: dict[str, list[int]] = {}
        self.drops: list[tuple[str, str]] = []
        self.clock = 0.0


class Ctx:
    """The parts of NodeContext the validator uses."""

    def __init__(self, node_id: str, net: Net) -> None:
        self.node_id = node_id
        self.net = net

    def now(self) -> float:
        return self.net.clock

    def wall_ms(self) -> int:
        return int(self.net.clock * 1000)

    def send(self, dst: str, msg: object, payload: Mapping[str, Any] | None = None) -> None:
        self.multicast([dst], msg, payload)

    def multicast(
        self, dsts: Iterable[str], msg: object, payload: Mapping[str, Any] | None = None
    ) -> None:
        """Ledger messages as (type, map), the validator's own as instances (as the daemon)."""
        if payload is None:
            msg_type, payload = message_type(msg), to_payload(msg)
        else:
            msg_type = str(msg)
        for dst in dsts:
            if msg_type == "chain.block":
                self.net.forwarded.setdefault(self.node_id, []).append(payload["height"])
            elif self.node_id not in self.net.silent:
                self.net.queue.append((self.node_id, dst, msg_type, dict(payload)))

    def emit(self, outgoing: Iterable[Outgoing]) -> None:
        list(outgoing)

    def set_timer(self, name: str, delay_s: float) -> None:
        pass  # nothing times out: every submission commits while the queue drains

    def cancel_timer(self, name: str) -> None:
        pass

    def drop(self, reason: str, detail: str = "") -> None:
        self.net.drops.append((reason, detail))


def _submissions() -> list[tuple[list[Transaction], int]]:
    nonces: dict[bytes, int] = {}

    def tx(key: NodeKey, type_: str, payload: dict[str, Any]) -> Transaction:
        nonces[key.public_key] = nonces.get(key.public_key, 0) + 1
        return Transaction.create(key, type_, nonces[key.public_key], payload)

    publish = {"task_id": "t", "reward_pool": 100, "rounds": 1000, "model": "m", "dataset": "d"}
    out = []
    for r in range(1, ROUNDS + 1):
        txs = [tx(PUB, "task.publish", publish)] if r == 1 else []
        for i, d in enumerate(DEVICES):
            update = {"task_id": "t", "round": r, "blob": sha256(b"%d/%d" % (r, i)), "size": 1}
            txs.append(tx(d, "task.record_update", {**update, "samples": 10}))
        record = {
            "task_id": "t",
            "round": r,
            "blob": sha256(b"g%d" % r),
            "size": 1,
            "accuracy": 0.5,
            "contributors": [f"dev{i}" for i in range(len(DEVICES))],
        }
        txs.append(tx(PUB, "task.record_global", record))
        out.append((txs, 1000 * r))
    return out


@pytest.fixture
def config() -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher")}
    members.update({f"dev{i}": (k.public_key, "device") for i, k in enumerate(DEVICES)})
    members.update({nid: (k.public_key, "mec") for nid, k in zip(IDS, MECS, strict=True)})
    genesis = Genesis(members, {"pub": 10**6}, "pipeline")
    return ChainConfig(genesis, Committee.bft(tuple(k.public_key for k in MECS)))


@pytest.fixture
def replicas(tmp_path: Path, config: ChainConfig) -> Iterator[list[Replica]]:
    out = [Replica(tmp_path / nid, config, k) for nid, k in zip(IDS, MECS, strict=True)]
    yield out
    for r in out:
        r.close()


@pytest.mark.parametrize("silent", [frozenset(), frozenset({"mec3"})])
def test_pipelined_candidates_commit_in_order(
    replicas: list[Replica], silent: frozenset[str]
) -> None:
    net = Net(silent)
    group = [(nid, k.public_key) for nid, k in zip(IDS, MECS, strict=True)]
    validators = {
        nid: PbftValidator(Ctx(nid, net), rep, group, PUB.public_key, ["pub"])  # type: ignore[arg-type]
        for nid, rep in zip(IDS, replicas, strict=True)
    }
    depth = 0
    for txs, ts in _submissions():  # the publisher submits every round at once
        raw = [tx.to_bytes() for tx in txs]
        for nid, v in validators.items():
            v.on_submit(Ctx(nid, net), Submit(tuple(raw), ts))  # type: ignore[arg-type]
            depth = max(depth, len(v.in_flight))
    steps = 0
    while net.queue and steps < 100_000:
        src, dst, msg_type, payload = net.queue.popleft()
        net.clock += 0.001
        pbft = from_payload(msg_type, payload)  # what the daemon hands the role
        assert isinstance(pbft, PbftMessage)
        validators[dst].on_pbft(Ctx(dst, net), src, pbft)  # type: ignore[arg-type]
        depth = max(depth, max(len(v.in_flight) for v in validators.values()))
        steps += 1

    assert depth >= 2, "candidates were pipelined"
    assert not net.drops
    heads = set()
    for nid, rep in zip(IDS, replicas, strict=True):
        assert rep.height == ROUNDS, nid
        assert net.forwarded[nid] == list(range(1, ROUNDS + 1)), "appended in height order"
        assert not validators[nid].queue and not validators[nid].in_flight
        rep.flush()
        assert rep.chain.store.durable_height() == ROUNDS
        report = verify_store(rep.chain.store)
        assert report.ok, report.failures
        heads.add(report.head_hash)
        assert rep.chain.store.deferred
    assert len(heads) == 1
