"""The sfl scheme over the in-memory network: real daemons and roles (Ed25519, PBFT among the
4 MECs, who are also the evaluators with quorum n - f = 3, torch on digits), each in its own
thread. 4 MECs x 2 devices, threshold 0.5. a) One MEC signs a false local evaluation: the
honest three decide, and its vote fails on chain or is outvoted. b) The publisher posts a
tampered aggregate in round 2: the evaluators' quorum refuses it and the global model stays
round 1's; the run goes on to its last round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.contracts import sfl as contract
from node.contracts.base import Receipt
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.daemon import Daemon
from node.keys import NodeKey
from node.learning.train import configure_torch_threads
from node.learning.weights import weights_from_bytes, weights_to_bytes
from node.ledger.chain import Chain, verify_store
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.store import open_store
from node.roles.base import NodeContext, Role
from node.schemes.sfl.evaluation import aggregate_blob, round_inputs
from node.schemes.sfl.mec import SflMecRole
from node.schemes.sfl.publisher import AGGREGATED, SflPublisherRole
from node.schemes.vanilla.common import replica_of
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import HierarchyParams, NodeSpec, build_hierarchy

MECS = ("mec0", "mec1", "mec2", "mec3")
LIAR, TARGET = "mec2", "dev1-0"
LOCAL_TX = "sfl.evaluate_local_model"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


class LyingMec(SflMecRole):
    """Signs a local evaluation in which `target`'s correct count is inflated to the total
    (or 0 where it already is the total). Round 1: it holds the lie until its own chain has
    decided the round (a late vote, certain to come after the decision); later rounds: it
    sends the lie at once (before or after the decision, as the race goes)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.honest: dict[int, dict[str, Any]] = {}  # round -> the payload it computed
        self.lies: dict[int, Transaction] = {}
        self.held: list[Transaction] = []

    def start(self, ctx: NodeContext) -> None:
        super().start(ctx)
        replica_of(ctx).chain.subscribe(lambda _block: self._release(ctx))

    def _vote(self, ctx: NodeContext, tx: Transaction) -> None:
        if tx.type != LOCAL_TX:
            super()._vote(ctx, tx)
            return
        payload = dict(tx.payload)
        round_no = int(payload["round"])
        self.honest[round_no] = payload
        total = int(payload["total"])
        results = [
            [d, (0 if c == total else total) if d == self.target else c]
            for d, c in payload["results"]
        ]
        lie = replica_of(ctx).transaction(LOCAL_TX, {**payload, "results": results})
        self.lies[round_no] = lie
        if round_no == 1:
            self.held.append(lie)
            self._release(ctx)
        else:
            super()._vote(ctx, lie)

    def _release(self, ctx: NodeContext) -> None:
        state = replica_of(ctx).chain.state
        ready = [t for t in self.held if contract.round_record(state, t.payload["round"])]
        self.held = [t for t in self.held if t not in ready]
        for tx in ready:
            super()._vote(ctx, tx)


class TamperingPublisher(SflPublisherRole):
    """In round `at`, posts as its aggregate the FedAvg of ALL submitted updates (negated
    where that happens to equal the FedAvg of the qualified ones, so that it is always
    another blob) under ``selected`` = the qualified devices."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.tampered: bytes | None = None  # the blob hash it posted
        self.honest: bytes | None = None  # the hash of the qualified-only FedAvg

    def _aggregate_qualified(self, ctx: NodeContext) -> None:
        if self.round != self.at:
            super()._aggregate_qualified(ctx)
            return
        replica = replica_of(ctx)
        inputs = round_inputs(replica.chain.state, self.round)
        qualified = set(inputs.qualified)
        every = [(d, replica.blobs.get(b), n) for d, b, n in inputs.updates]
        current = replica.blobs.get(inputs.global_blob) or weights_to_bytes(self.weights)
        encoded = aggregate_blob(self.weights, every, current)
        honest = aggregate_blob(self.weights, [u for u in every if u[0] in qualified], current)
        if encoded == honest:
            encoded = weights_to_bytes({k: -v for k, v in weights_from_bytes(encoded).items()})
        self.tampered, self.honest = sha256(encoded), sha256(honest)
        replica.blobs.put_behind(self.tampered, encoded)
        payload = {
            "round": self.round,
            "selected": sorted(qualified),
            "global_blob": self.tampered,
            "size": len(encoded),
        }
        self.stage, self.stage_started = AGGREGATED, ctx.now()
        self._commit(ctx, [replica.transaction("sfl.aggregate_model_update", payload)])


def _net() -> VanillaNet:
    """`VanillaNet.build` with fixed keys, but without D2D links (the sfl plan refuses them;
    the harness's builder always draws them)."""
    topology = build_hierarchy(HierarchyParams(mecs_per_bs=4, devices_per_mec=2, d2d=None), 6)
    keys = {n.id: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(topology.daemons())}
    return VanillaNet(topology, keys)


def _run(tmp_path: Path, rounds: int, roles: dict[str, Role]) -> dict[str, Daemon]:
    net = _net()

    def role(spec: NodeSpec) -> Role | None:
        return roles.get(spec.id)

    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=rounds,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=120,  # rounds end when every MEC answered, not at the deadline
    )
    params = {"threshold": 0.5, "evaluation_timeout_s": 120.0}
    return net.run(
        tmp_path,
        learning,
        seed=6,
        reward_pool=1000,
        role=role,
        scheme="sfl",
        params=params,
        consensus="pbft",
        config={"startup_timeout_s": 120},
        join_timeout_s=600,
    )


def _replay(tmp_path: Path, node: str) -> tuple[Any, list[tuple[int, Transaction, Receipt]]]:
    """`node`'s chain, checked (verify_store), and replayed block by block on a fresh store
    of the same config: (final state, every transaction with its height and receipt)."""
    store = open_store(chain_dir(tmp_path / node, MAIN_CHAIN))
    fresh = open_store(tmp_path / f"replay-{node}")
    try:
        report = verify_store(store)
        assert report.ok, (node, report.failures)
        chain = Chain.open(store)
        replay = Chain(fresh, chain.config)
        out = []
        for block in store.blocks(1):
            receipts = replay.append(block)
            out += [(block.height, tx, r) for tx, r in zip(block.txs, receipts, strict=True)]
        assert replay.state.root() == chain.state.root()
        return chain.state, out
    finally:
        store.close()
        fresh.close()


def _events(receipts: list[tuple[int, Transaction, Receipt]], name: str) -> list[dict[str, Any]]:
    return [dict(e.data) for _, _, r in receipts for e in r.events if e.name == name]


def _records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r.get("event") == event]


def test_a_lying_evaluator_is_outvoted_or_fails_on_chain(tmp_path: Path) -> None:
    liar = LyingMec(TARGET)
    _run(tmp_path, rounds=2, roles={LIAR: liar})

    state, receipts = _replay(tmp_path, "mec0")
    for mec in MECS[1:]:
        assert _replay(tmp_path, mec)[0].root() == state.root(), f"{mec} holds another state"
    task = contract.get_FL_task(state)
    assert task is not None and task["phase"] == "done" and task["quorum"] == 3
    assert task["evaluators"] == list(MECS)
    decided_at = {
        e.data["round"]: h
        for h, _, rc in receipts
        for e in rc.events
        if e.name == "local_evaluated"
    }
    assert sorted(decided_at) == [1, 2]
    for r in (1, 2):
        honest = liar.honest[r]
        lie = liar.lies[r]
        # the decided evaluation is what the honest evaluators computed (the liar computed it
        # too before it lied), never the lie
        for device, correct in honest["results"]:
            entry = contract.evaluation(state, r, device)
            assert entry is not None and entry["correct"] == correct, (r, device)
            assert entry["total"] == honest["total"]
        lied = dict(lie.payload["results"])[TARGET]
        assert lied != dict(honest["results"])[TARGET]
        honest_digest = contract.vote_digest(
            [honest["data"], honest["total"], honest["results"]]
        ).hex()
        votes = {
            k.split("/")[1]: v["digest"]
            for k, v in state.items(contract.NS_EVAL_VOTE)
            if k.startswith(f"{r}/")
        }
        assert all(votes[m] == honest_digest for m in MECS if m != LIAR and m in votes)
        assert sum(1 for m in MECS if m != LIAR and votes.get(m) == honest_digest) >= 3
        placed = [(h, rc) for h, tx, rc in receipts if tx.hash == lie.hash]
        assert len(placed) == 1, f"round {r}: the liar's vote is on chain once"
        height, receipt = placed[0]
        if height > decided_at[r]:  # after the decision: a failed transaction
            assert not receipt.ok and "disagrees with the decided evaluation" in receipt.error
            assert LIAR not in votes
        else:  # before it: recorded, and outvoted
            assert receipt.ok
            assert votes[LIAR] != honest_digest
    # the lie would have changed who qualified (seeded: dev1-0 has 41 of 90 in round 2)
    assert any(
        contract.evaluation(state, r, TARGET)["qualified"]  # type: ignore[index]
        != (dict(liar.lies[r].payload["results"])[TARGET] / liar.honest[r]["total"] >= 0.5)
        for r in (1, 2)
    )
    # round 1's lie was held until the round was decided: it always fails
    assert next(h for h, tx, _ in receipts if tx.hash == liar.lies[1].hash) > decided_at[1]
    # the model evaluations agree, and every aggregate became the global model
    for r in (1, 2):
        record = contract.round_record(state, r)
        assert record is not None and record["accepted"] and record["data"] == "test"
    rounds = _records(tmp_path, "pub", "round")
    assert [x["round"] for x in rounds] == [1, 2]


def test_a_tampering_aggregators_model_never_becomes_global(tmp_path: Path) -> None:
    publisher = TamperingPublisher(at=2)
    _run(tmp_path, rounds=3, roles={"pub": publisher})

    state, receipts = _replay(tmp_path, "mec0")
    for node in (*MECS[1:], "pub"):
        assert _replay(tmp_path, node)[0].root() == state.root(), f"{node} holds another state"
    assert publisher.tampered is not None and publisher.honest is not None
    assert publisher.tampered != publisher.honest
    records = {r: contract.round_record(state, r) for r in (1, 2, 3)}
    assert all(rec is not None for rec in records.values())
    one, two, three = records[1], records[2], records[3]
    assert one is not None and two is not None and three is not None
    assert one["accepted"] and one["global"] == one["aggregate"]
    # round 2: the tampered aggregate is on record, refused; the global stays round 1's
    assert two["aggregate"] == publisher.tampered.hex()
    assert two["accepted"] is False and two["global"] == one["global"]
    rejected = _events(receipts, "aggregate_rejected")
    # what the evaluators' quorum computed is the FedAvg of the qualified only
    assert rejected == [
        {"round": 2, "aggregate": publisher.tampered.hex(), "evaluated": publisher.honest.hex()}
    ]
    globals_ = _events(receipts, "global")
    assert [g["round"] for g in globals_] == [1, 3]
    assert all(g["blob"] != publisher.tampered.hex() for g in globals_)
    # round 3 is honest again: accepted, and the run completes
    assert three["accepted"] and three["global"] == three["aggregate"]
    current = contract.get_global_model(state)
    assert current is not None and current["round"] == 3
    task = contract.get_FL_task(state)
    assert task is not None and task["phase"] == "done" and task["posted"]
    rounds = _records(tmp_path, "pub", "round")
    assert [(x["round"], x["accepted"]) for x in rounds] == [(1, True), (2, False), (3, True)]
