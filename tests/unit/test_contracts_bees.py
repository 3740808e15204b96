"""Unit tests for the BEES contract: ES reports and the PoL ranking, the election check that
makes a block invalid, per-UE update transactions and the top-M FedAvg selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.contracts import bees
from node.contracts.genesis import Genesis, genesis_state
from node.contracts.runtime import (
    CONTRACTS,
    BlockContext,
    Receipt,
    TxRejected,
    default_registry,
    last_nonce,
)
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.encoding import sha256
from node.core.finality import ProofOfLearning
from node.core.merkle import merkle_root
from node.core.tx import Transaction
from node.keys import NodeKey
from node.learning.aggregate import fedavg
from node.learning.weights import weights_to_bytes
from node.ledger.chain import Chain, ChainConfig, LedgerError
from node.ledger.store import open_store

PUB = NodeKey.from_seed(b"\x50" * 32)
ES_KEYS = {f"es{i}": NodeKey.from_seed(bytes([0x50 + i]) * 32) for i in range(1, 6)}
ES1, ES2, ES3, ES4, ES5 = ES_KEYS.values()
UE1 = NodeKey.from_seed(b"\x60" * 32)
STRANGER = NodeKey.from_seed(b"\x61" * 32)
GENESIS = Genesis(
    members={
        "pub": (PUB.public_key, "publisher"),
        "ue1": (UE1.public_key, "device"),
        **{es: (key.public_key, "mec") for es, key in ES_KEYS.items()},
    },
    balances={},
    chain_id="bees-test",
)
# n·c/B: es3 1.5e9 > es1 4e8 > es2 = es4 3e8 (tie: by id) > es5 (no report)
REPORTS = {
    "es1": (100, 2e9, 500.0),
    "es2": (300, 1e9, 1000.0),
    "es3": (50, 3e9, 100.0),
    "es4": (150, 2e9, 1000),
}
RANKING = ("es3", "es1", "es2", "es4", "es5")
# 25 UEs with distinct accuracies, except ue21 ties ue02 at the 10th place (ue02 wins by id)
ACCURACY = {f"ue{k:02d}": round(0.40 + 0.02 * ((k * 7) % 25), 4) for k in range(1, 26)}
ACCURACY["ue21"] = ACCURACY["ue02"]
TOP_10 = ("ue07", "ue14", "ue03", "ue10", "ue17", "ue24", "ue06", "ue13", "ue20", "ue02")

Call = tuple[NodeKey, str, dict[str, Any]]


class Bees:
    """A genesis state, the default registry and a block height; blocks run execute_block."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.state = genesis_state(genesis)
        self.registry = default_registry()
        self.nonces: dict[bytes, int] = {}
        self.height = 0

    def tx(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Transaction:
        """A signed tx with the key's next nonce."""
        nonce = self.nonces.get(key.public_key, -1) + 1
        self.nonces[key.public_key] = nonce
        return Transaction.create(key, type_, nonce, payload)

    def block(self, proposer: NodeKey, calls: list[Call]) -> list[Receipt]:
        """Run the next block's txs (all-or-nothing)."""
        txs = [self.tx(key, type_, payload) for key, type_, payload in calls]
        ctx = BlockContext(self.height + 1, 1_000 * (self.height + 1), proposer.public_key)
        receipts = self.registry.execute_block(self.state, ctx, txs)
        self.height += 1
        return receipts

    def ok(self, proposer: NodeKey, calls: list[Call]) -> list[Receipt]:
        """A block whose txs all succeed."""
        receipts = self.block(proposer, calls)
        assert all(r.ok for r in receipts), [r.error for r in receipts]
        return receipts

    def invalid(self, proposer: NodeKey, calls: list[Call], match: str) -> None:
        """A block the contract refuses as a whole: nothing of it stays, nonces included."""
        before = self.state.copy()
        with pytest.raises(TxRejected) as exc:
            self.block(proposer, calls)
        assert exc.value.reason == bees.BLOCK_INVALID
        assert match in str(exc.value), str(exc.value)
        assert self.state.diff(before) == {}
        assert self.state.root() == before.root()

    def reported(self) -> None:
        """Every ES but es5 reports for round 1 (a block without election)."""
        self.ok(ES5, [(ES_KEYS[es], "bees.report", report(1, *r)) for es, r in REPORTS.items()])


def report(round_: int, samples: int, capacity: float, battery: float) -> dict[str, Any]:
    """A bees.report payload."""
    return {"round": round_, "samples": samples, "capacity": capacity, "battery": battery}


def elect(round_: int, rank: int = 0) -> dict[str, Any]:
    """A bees.elect payload."""
    return {"round": round_, "rank": rank}


def update(round_: int, ue: str, accuracy: float = 0.5, samples: int = 60) -> dict[str, Any]:
    """A bees.update payload (the blob: a hash naming the UE)."""
    blob = sha256(f"{round_}/{ue}".encode())
    return {"round": round_, "ue": ue, "blob": blob, "accuracy": accuracy, "samples": samples}


def aggregate(round_: int, selected: tuple[str, ...], blob: bytes = b"\x07" * 32) -> dict[str, Any]:
    """A bees.aggregate payload."""
    return {"round": round_, "selected": list(selected), "global_blob": blob, "size": 1234}


# ------------------------------------------------------------------- reports and ranking


def test_the_ranking_is_argmax_of_n_c_over_b_with_ties_by_id_and_unreported_last() -> None:
    chain = Bees()
    assert bees.ranking(chain.state) == ("es1", "es2", "es3", "es4", "es5")  # nobody reported

    chain.reported()

    assert bees.importance(50, 3e9, 100.0) == 1.5e9
    assert bees.importance(300, 1e9, 1000.0) == bees.importance(150, 2e9, 1000) == 3e8
    assert bees.ranking(chain.state) == RANKING
    stored = chain.state.get(bees.NS_REPORT, "es4")
    assert stored == {"round": 1, "samples": 150, "capacity": 2e9, "battery": 1000.0, "height": 1}
    with pytest.raises(ValueError, match="battery"):
        bees.importance(1, 1.0, 0.0)


def test_reports_are_once_per_es_and_round_and_checked() -> None:
    chain = Bees()
    chain.reported()

    receipts = chain.block(
        ES5,
        [
            (ES1, "bees.report", report(1, 10, 1e9, 10.0)),  # round 1 again
            (ES2, "bees.report", report(1, 10, 1e9, 0.0)),  # no battery left
            (ES5, "bees.report", report(1, -1, 1e9, 10.0)),
            (ES5, "bees.report", report(1, 10, -1.0, 10.0)),
            (ES5, "bees.report", {**report(1, 10, 1e9, 10.0), "x": 1}),
            (ES1, "bees.report", report(2, 10, 1e9, 1.0)),  # the next round: accepted
        ],
    )

    assert [r.ok for r in receipts] == [False] * 5 + [True]
    assert "already reported round 1" in receipts[0].error
    assert "battery: must be > 0" in receipts[1].error
    assert "samples" in receipts[2].error
    assert "capacity" in receipts[3].error
    assert "unknown field" in receipts[4].error
    assert bees.ranking(chain.state)[0] == "es1"  # 10·1e9/1 = 1e10 now


def test_only_es_members_may_call() -> None:
    chain = Bees()
    receipts = chain.block(
        ES3,
        [
            (UE1, "bees.report", report(1, 10, 1e9, 1.0)),
            (PUB, "bees.report", report(1, 10, 1e9, 1.0)),
        ],
    )
    assert [r.ok for r in receipts] == [False, False]
    assert all("needs 'mec'" in r.error for r in receipts)
    assert chain.state.items(bees.NS_REPORT) == []

    with pytest.raises(TxRejected) as exc:
        chain.block(ES3, [(STRANGER, "bees.report", report(1, 10, 1e9, 1.0))])
    assert exc.value.reason == "unknown_sender"


# ------------------------------------------------------------------------------ election


def test_the_winner_s_election_is_accepted() -> None:
    chain = Bees()
    chain.reported()

    receipts = chain.ok(ES3, [(ES3, "bees.elect", elect(1, 0))])

    assert receipts[0].events[0].data == {"round": 1, "es": "es3", "rank": 0}
    assert bees.current_round(chain.state) == 1
    assert bees.election(chain.state, 1) == {"es": "es3", "rank": 0, "height": 2, "updates": 0}
    late = chain.block(ES3, [(ES5, "bees.report", report(1, 10, 1e9, 1.0))])
    assert "round: 1 is already elected" in late[0].error


@pytest.mark.parametrize(
    ("proposer", "sender", "payload", "match"),
    [
        (ES1, ES1, elect(1, 0), "'es1' is not rank 0 of round 1 (that is 'es3')"),
        (ES4, ES4, elect(1, 2), "'es4' is not rank 2"),
        (ES3, ES3, elect(1, 5), "not rank 5"),
        (ES1, ES3, elect(1, 0), "not sent by the block's proposer"),
        (ES3, ES3, elect(2, 0), "round 2, expected 1"),
        (ES3, ES3, {"round": 1}, "rank: missing"),
        (UE1, UE1, elect(1, 0), "needs 'mec'"),
    ],
)
def test_a_wrong_election_makes_the_whole_block_invalid(
    proposer: NodeKey, sender: NodeKey, payload: dict[str, Any], match: str
) -> None:
    chain = Bees()
    chain.reported()

    chain.invalid(
        proposer,
        [(sender, "bees.elect", payload), (ES2, "bees.report", report(2, 1, 1.0, 1.0))],
        match,
    )

    assert bees.current_round(chain.state) == 0
    assert last_nonce(chain.state, ES2.public_key) == 0  # its round-1 report only


def test_a_refused_election_writes_nothing_not_even_the_nonce() -> None:
    chain = Bees()
    chain.reported()
    before = chain.state.copy()
    ctx = BlockContext(2, 2_000, ES1.public_key)

    with pytest.raises(TxRejected):  # one tx, as a proposer building a candidate runs it
        chain.registry.execute(chain.state, ctx, chain.tx(ES1, "bees.elect", elect(1, 0)))

    assert chain.state.diff(before) == {}
    assert last_nonce(chain.state, ES1.public_key) == 0


def test_a_backup_rank_may_claim_its_rank_and_the_election_must_open_the_block() -> None:
    chain = Bees()
    chain.reported()
    # a report before the election could change the ranking the block is judged by
    chain.invalid(
        ES3,
        [(ES3, "bees.report", report(2, 1, 1.0, 1.0)), (ES3, "bees.elect", elect(1))],
        "not the block's first bees transaction",
    )
    chain.invalid(ES3, [(ES3, "bees.elect", elect(1)), (ES3, "bees.elect", elect(2))], "first")

    chain.ok(ES1, [(ES1, "bees.elect", elect(1, 1))])  # es3 was silent: rank 1 took over

    assert bees.election(chain.state, 1)["es"] == "es1"  # type: ignore[index]


def test_round_transactions_without_their_election_in_the_block_make_it_invalid() -> None:
    chain = Bees()
    chain.reported()
    chain.invalid(ES3, [(ES2, "bees.update", update(1, "ue01"))], "without its election")
    chain.invalid(ES3, [(ES3, "bees.aggregate", aggregate(1, ("ue01",)))], "without its election")
    chain.ok(ES3, [(ES3, "bees.elect", elect(1)), (ES2, "bees.update", update(1, "ue01"))])

    # round 1's block is over: its late updates and aggregate are not accepted in block 4
    chain.invalid(ES3, [(ES2, "bees.update", update(1, "ue02"))], "without its election")
    chain.invalid(ES3, [(ES3, "bees.aggregate", aggregate(1, ("ue01",)))], "without its election")
    assert [u.ue for u in bees.round_updates(chain.state, 1)] == ["ue01"]


# ------------------------------------------------------------------------------- updates


def test_an_update_is_recorded_with_its_es_and_a_duplicate_is_refused() -> None:
    chain = Bees()
    chain.reported()
    receipts = chain.block(
        ES3,
        [
            (ES3, "bees.elect", elect(1)),
            (ES2, "bees.update", update(1, "ue01", 0.75, 120)),
            (ES4, "bees.update", update(1, "ue01", 0.99, 120)),  # the same UE again
            (ES4, "bees.update", update(1, "es1")),  # an ES is not a UE
            (ES4, "bees.update", update(1, "ue02", 1.5)),
            (ES4, "bees.update", {**update(1, "ue02"), "blob": b"short"}),
            (UE1, "bees.update", update(1, "ue1")),  # a UE posts nothing itself
            (ES4, "bees.update", update(1, "ue1", 0.5, 30)),  # a registered device: fine
        ],
    )

    assert [r.ok for r in receipts] == [True, True, False, False, False, False, False, True]
    assert "already has an update in round 1" in receipts[2].error
    assert "not as a 'device'" in receipts[3].error
    assert "accuracy" in receipts[4].error
    assert "32 bytes" in receipts[5].error
    assert "needs 'mec'" in receipts[6].error
    assert bees.round_updates(chain.state, 1) == [
        bees.Update("ue01", "es2", sha256(b"1/ue01"), 0.75, 120),
        bees.Update("ue1", "es4", sha256(b"1/ue1"), 0.5, 30),
    ]
    assert bees.election(chain.state, 1)["updates"] == 2  # type: ignore[index]


# --------------------------------------------------------------------- top-M aggregation


def _round_with_25_updates(chain: Bees, extra: list[Call]) -> list[Receipt]:
    es_ids = list(ES_KEYS)
    calls: list[Call] = [(ES3, "bees.elect", elect(1))]
    for i, (ue, acc) in enumerate(sorted(ACCURACY.items())):
        calls.append((ES_KEYS[es_ids[i % 5]], "bees.update", update(1, ue, acc, 50 + i)))
    return chain.block(ES3, calls + extra)


def test_top_m_is_the_10_most_accurate_of_25_ties_by_ue_id() -> None:
    chain = Bees()
    chain.reported()
    _round_with_25_updates(chain, [])
    updates = bees.round_updates(chain.state, 1)

    assert len(updates) == 25
    assert bees.top_m(updates, 10) == TOP_10
    assert bees.top_m(updates, 1) == ("ue07",)
    assert bees.top_m(updates, 100) == tuple(sorted(ACCURACY, key=lambda u: (-ACCURACY[u], u)))


def test_the_aggregate_records_the_fedavg_of_the_top_10_and_refuses_another_selection() -> None:
    chain = Bees()
    chain.reported()
    rng = np.random.default_rng(15)
    local = {ue: {"w": rng.standard_normal((4, 3)).astype(np.float32)} for ue in ACCURACY}
    samples = {ue: 50 + i for i, ue in enumerate(sorted(ACCURACY))}
    # what the elected ES computes off chain (eq. 3) and every other ES recomputes
    global_w = fedavg([(local[ue], samples[ue]) for ue in TOP_10])
    global_blob = sha256(weights_to_bytes(global_w))
    wrong = (*TOP_10[:9], "ue21")  # the tie's loser instead of ue02

    receipts = _round_with_25_updates(
        chain,
        [
            (ES3, "bees.aggregate", aggregate(1, wrong, global_blob)),
            (ES3, "bees.aggregate", aggregate(1, TOP_10[::-1], global_blob)),
            (ES3, "bees.aggregate", aggregate(1, TOP_10[:1], global_blob)),
            (ES3, "bees.aggregate", aggregate(1, TOP_10, global_blob)),
            (ES3, "bees.aggregate", aggregate(1, TOP_10, global_blob)),
            (ES2, "bees.update", update(1, "ue99", 1.0)),
        ],
    )

    assert [r.ok for r in receipts[-6:]] == [False, False, False, True, False, False]
    assert "is not the top-M" in receipts[-6].error
    assert "already aggregated" in receipts[-2].error
    assert "already aggregated" in receipts[-1].error
    assert bees.global_of(chain.state, 1) == {
        "es": "es3",
        "blob": global_blob.hex(),
        "size": 1234,
        "selected": list(TOP_10),
        "samples": sum(samples[ue] for ue in TOP_10),
    }
    assert bees.global_of(chain.state, 2) is None
    expected = sum(local[ue]["w"].astype(np.float64) * samples[ue] for ue in TOP_10)
    total = sum(samples[ue] for ue in TOP_10)
    np.testing.assert_allclose(global_w["w"], expected / total, rtol=1e-6)


def test_only_the_elected_es_aggregates() -> None:
    chain = Bees()
    chain.reported()
    chain.invalid(
        ES3,
        [
            (ES3, "bees.elect", elect(1)),
            (ES2, "bees.update", update(1, "ue01")),
            (ES2, "bees.aggregate", aggregate(1, ("ue01",))),
        ],
        "not by its elected ES 'es3'",
    )
    receipts = chain.block(
        ES3, [(ES3, "bees.elect", elect(1)), (ES3, "bees.aggregate", aggregate(1, ()))]
    )
    assert "no updates to aggregate" in receipts[1].error


def test_b_ei_selects_only_the_single_best_update() -> None:
    chain = Bees()
    receipts = chain.block(
        ES1,
        [
            (ES1, "bees.configure", {"m": 1}),  # not a publisher
            (PUB, "bees.configure", {"m": 0}),
            (PUB, "bees.configure", {"m": 1}),
        ],
    )
    assert [r.ok for r in receipts] == [False, False, True]
    assert bees.m_of(chain.state) == 1
    chain.reported()

    receipts = _round_with_25_updates(
        chain,
        [
            (ES3, "bees.aggregate", aggregate(1, TOP_10)),
            (ES3, "bees.aggregate", aggregate(1, ("ue07",))),
        ],
    )

    assert [r.ok for r in receipts[-2:]] == [False, True]
    assert bees.global_of(chain.state, 1)["selected"] == ["ue07"]  # type: ignore[index]
    late = chain.block(ES5, [(PUB, "bees.configure", {"m": 10})])
    assert "M is fixed now" in late[0].error
    assert Bees().state.get(bees.NS_CONFIG, "m") is None and bees.m_of(Bees().state) == 10


# ------------------------------------------------------- the ledger refuses such a block


def test_the_ledger_refuses_a_block_with_a_wrong_election(tmp_path: Path) -> None:
    config = ChainConfig(GENESIS, ProofOfLearning(tuple(k.public_key for k in ES_KEYS.values())))
    chain = Chain(open_store(tmp_path / "es"), config)
    try:
        reports = [
            Transaction.create(ES_KEYS[es], "bees.report", 0, report(1, *r))
            for es, r in REPORTS.items()
        ]
        first = chain.candidate(reports, ES5.public_key, 1_000)
        chain.append(Block(first.header, first.txs, (CommitSignature.create(ES5, first.hash),)))
        assert bees.ranking(chain.state) == RANKING

        # es1 (rank 1) claims rank 0: a candidate leaves the claim out, a forged block is refused
        claim = Transaction.create(ES1, "bees.elect", 1, elect(1, 0))
        assert chain.candidate([claim], ES1.public_key, 2_000).txs == ()
        header = BlockHeader(
            height=2,
            prev_hash=chain.head.hash,
            timestamp_ms=2_000,
            proposer=ES1.public_key,
            merkle_root=merkle_root([claim.hash]),
            state_root=chain.state.root(),
        )
        forged = Block(header, (claim,), (CommitSignature.create(ES1, header.hash),))
        with pytest.raises(LedgerError) as exc:
            chain.append(forged)
        assert exc.value.reason == "bad_certificate"
        assert "'es1' is not rank 0" in exc.value.detail
        assert chain.head.height == 1

        # the winner's block: election, an update, the aggregate
        txs = [
            Transaction.create(ES3, "bees.elect", 1, elect(1, 0)),
            Transaction.create(ES2, "bees.update", 1, update(1, "ue01", 0.9)),
            Transaction.create(ES3, "bees.aggregate", 2, aggregate(1, ("ue01",))),
        ]
        good = chain.candidate(txs, ES3.public_key, 2_000)
        receipts = chain.append(
            Block(good.header, good.txs, (CommitSignature.create(ES3, good.hash),))
        )
        assert [r.ok for r in receipts] == [True, True, True]
        assert bees.global_of(chain.state, 1)["selected"] == ["ue01"]  # type: ignore[index]
    finally:
        chain.store.close()


def test_registered_in_the_default_registry() -> None:
    assert bees in CONTRACTS
    assert default_registry().methods("bees") == [
        "aggregate",
        "configure",
        "elect",
        "report",
        "update",
    ]


def test_update_and_aggregate_blobs_are_on_chain_blob_references() -> None:
    """`chain verify` learns blob fields from BLOB_FIELDS: a bees.update names its UE's
    weights and a bees.aggregate the global model, each expected at the ES that signed it."""
    from node.ledger.blobrefs import BlobRef, expected, tx_blobs

    chain = Bees()
    up = chain.tx(ES1, "bees.update", update(1, "ue01"))
    agg = chain.tx(ES2, "bees.aggregate", aggregate(1, ("ue01",), b"\x09" * 32))

    assert tx_blobs(up) == [sha256(b"1/ue01")]
    assert tx_blobs(agg) == [b"\x09" * 32]
    assert tx_blobs(chain.tx(ES1, "bees.report", report(1, 1, 1.0, 1.0))) == []
    ref = BlobRef(b"\x09" * 32, 1, agg.type, agg.sender)
    assert expected(ref, ES2.public_key, replicated=False)
    assert not expected(ref, ES1.public_key, replicated=False)
