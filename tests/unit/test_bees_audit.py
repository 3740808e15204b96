"""The ES's audit of a round (node.schemes.bees.audit): claims against its own evaluation,
the top-M FedAvg and the checks of a proposed block, on a real PoL chain with real keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block, CommitSignature
from node.core.encoding import sha256
from node.core.finality import ProofOfLearning
from node.core.tx import Transaction
from node.keys import NodeKey
from node.learning.aggregate import fedavg
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import open_store
from node.schemes.bees.audit import Auditor, global_model, select, verify_round

REFERENCE: Weights = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}


def _evaluate(weights: Weights) -> float:
    """A deterministic stand-in for the test-set accuracy: the mean bias, clipped to [0, 1]."""
    return float(np.clip(weights["b"].mean(), 0.0, 1.0))


def _blob(level: float) -> bytes:
    return weights_to_bytes(
        {"w": np.full((2, 3), level, np.float32), "b": np.full(3, level, np.float32)}
    )


KEYS = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(["mec0", "mec1", "pub"])}
UES = {"dev0-0": 0.2, "dev0-1": 0.4, "dev1-0": 0.9}  # UE -> its update's true accuracy
BLOBS = {ue: _blob(level) for ue, level in UES.items()}


def _update(es: str, nonce: int, ue: str, accuracy: float | None = None) -> Transaction:
    claimed = UES[ue] if accuracy is None else accuracy
    payload = {
        "round": 1,
        "ue": ue,
        "blob": sha256(BLOBS[ue]),
        "accuracy": float(np.float32(claimed)),  # the blob holds float32 levels
        "samples": 10 + nonce,
    }
    return Transaction.create(KEYS[es], "bees.update", nonce, payload)


@pytest.fixture
def auditor() -> Auditor:
    return Auditor(REFERENCE, _evaluate, tolerance=0.01)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    members = {
        "mec0": (KEYS["mec0"].public_key, "mec"),
        "mec1": (KEYS["mec1"].public_key, "mec"),
        "pub": (KEYS["pub"].public_key, "publisher"),
        **{
            ue: (NodeKey.from_seed(bytes([9 + i]) * 32).public_key, "device")
            for i, ue in enumerate(UES)
        },
    }
    genesis = Genesis(members, {}, "bees-audit")
    config = ChainConfig(
        genesis, ProofOfLearning((KEYS["mec0"].public_key, KEYS["mec1"].public_key))
    )
    store = open_store(tmp_path / "chain")
    yield Chain(store, config)
    store.close()


def _block(
    chain: Chain, updates: list[Transaction], m: int, *, forged: bytes | None = None
) -> Block:
    """Round 1's block by mec0 (the winner: no reports yet, ranking by id) over `updates`."""
    auditor = Auditor(REFERENCE, _evaluate, tolerance=1.0)  # the proposer checks nothing here
    kept, _ = select(auditor, [(t, BLOBS[str(t.payload["ue"])]) for t in updates])
    selected, model = global_model(kept, m)
    txs = [
        Transaction.create(KEYS["pub"], "bees.configure", 0, {"m": m}),
        Transaction.create(KEYS["mec0"], "bees.elect", 0, {"round": 1, "rank": 0}),
        *updates,
        Transaction.create(
            KEYS["mec0"],
            "bees.aggregate",
            100,
            {
                "round": 1,
                "selected": list(selected),
                "global_blob": forged or sha256(model),
                "size": len(model),
            },
        ),
    ]
    block = chain.candidate(txs, KEYS["mec0"].public_key, 1_000)
    assert len(block.txs) == len(txs)
    return block.with_certificate((CommitSignature.create(KEYS["mec0"], block.hash),))


def test_check_update_compares_the_claim_with_the_own_evaluation(auditor: Auditor) -> None:
    honest = auditor.check_update(_update("mec1", 1, "dev1-0"), BLOBS["dev1-0"])
    lying = auditor.check_update(_update("mec1", 1, "dev1-0", accuracy=1.0), BLOBS["dev1-0"])
    wrong_blob = auditor.check_update(_update("mec1", 1, "dev1-0"), BLOBS["dev0-0"])

    assert honest.problem is None and honest.accuracy == pytest.approx(0.9)
    assert lying.problem is not None and "claimed 1.0" in lying.problem
    assert wrong_blob.problem == "blob does not match the transaction's hash"


def test_global_model_is_fedavg_of_the_top_m_by_accuracy(auditor: Auditor) -> None:
    txs = [_update("mec0", 1, "dev0-0"), _update("mec0", 2, "dev0-1"), _update("mec1", 1, "dev1-0")]
    kept, left = select(auditor, [(t, BLOBS[str(t.payload["ue"])]) for t in txs])

    selected, model = global_model(kept, 2)

    assert left == [] and selected == ("dev1-0", "dev0-1")
    expected = fedavg(
        [(weights_from_bytes(BLOBS["dev1-0"]), 11.0), (weights_from_bytes(BLOBS["dev0-1"]), 12.0)]
    )
    got = weights_from_bytes(model)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_an_honest_block_verifies_and_yields_its_global_model(
    chain: Chain, auditor: Auditor
) -> None:
    block = _block(chain, [_update("mec0", 1, "dev0-0"), _update("mec0", 2, "dev0-1")], m=1)

    problem, model = verify_round(block, auditor, {sha256(b): b for b in BLOBS.values()}, 1, 1)

    assert problem is None and model == BLOBS["dev0-1"]  # M = 1: the best update itself
    chain.append(block)  # and the contract agrees (election, top-M)


def test_a_block_carrying_a_false_accuracy_is_unverifiable(chain: Chain, auditor: Auditor) -> None:
    lie = _update("mec0", 1, "dev0-0", accuracy=0.95)  # truly 0.2: it would be selected
    block = _block(chain, [lie, _update("mec0", 2, "dev0-1")], m=1)

    problem, model = verify_round(block, auditor, {sha256(b): b for b in BLOBS.values()}, 1, 1)

    assert model is None and problem is not None and problem.startswith("accuracy of 'dev0-0'")


def test_a_forged_global_hash_or_missing_configuration_is_unverifiable(
    chain: Chain, auditor: Auditor
) -> None:
    blobs = {sha256(b): b for b in BLOBS.values()}
    forged = _block(chain, [_update("mec0", 1, "dev0-0")], m=1, forged=sha256(b"other"))
    honest = _block(chain, [_update("mec0", 1, "dev0-0")], m=1)

    assert verify_round(forged, auditor, blobs, 1, 1)[0] == (
        "the global model's hash is not the average of the selected updates"
    )
    assert "bees.configure m=10" in str(verify_round(honest, auditor, blobs, 10, 10)[0])
    assert verify_round(honest, auditor, {}, 1, 1)[0] == "no weights for the update of 'dev0-0'"
