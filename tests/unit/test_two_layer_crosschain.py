"""The two-layer cross-chain check: a MEC takes another MEC's LMUC block as a light client
(certificate against that LMUC's committee, Merkle root, signers, blobs) and aggregates the
round's updates in one canonical order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block, CommitSignature
from node.core.encoding import sha256
from node.core.finality import Committee
from node.core.tx import Transaction
from node.keys import NodeKey
from node.learning.weights import weights_to_bytes
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import open_store
from node.schemes.two_layer.crosschain import canonical_updates, needed_blobs, round_updates

MEC = NodeKey.from_seed(b"\x31" * 32)
DEVICES = [NodeKey.from_seed(bytes([0x32 + i]) * 32) for i in range(4)]
OUTSIDER = NodeKey.from_seed(b"\x3f" * 32)
COMMITTEE = Committee.bft([MEC.public_key, *(d.public_key for d in DEVICES[:3])])
NAMES = {d.public_key: f"dev0-{i}" for i, d in enumerate(DEVICES)}
REFERENCE = {"w": np.zeros((2, 2), dtype=np.float32)}


def _blob(value: float) -> bytes:
    return weights_to_bytes({"w": np.full((2, 2), value, dtype=np.float32)})


def _update(key: NodeKey, blob: bytes, round_: int = 2, samples: int = 10) -> Transaction:
    payload = {
        "task_id": "t",
        "round": round_,
        "blob": sha256(blob),
        "size": len(blob),
        "samples": samples,
    }
    return Transaction.create(key, "task.record_update", 0, payload)


def _block(tmp_path: Path, txs: list[Transaction], signers: list[NodeKey]) -> Block:
    members = {"mec0": (MEC.public_key, "publisher")}
    members |= {NAMES[d.public_key]: (d.public_key, "device") for d in DEVICES}
    members["out"] = (OUTSIDER.public_key, "device")  # on this chain, not in the relay's map
    chain = Chain(open_store(tmp_path / "c"), ChainConfig(Genesis(members, {}, "x"), COMMITTEE))
    block = chain.candidate(txs, MEC.public_key, 1_000)
    chain.store.close()
    return block.with_certificate(tuple(CommitSignature.create(k, block.hash) for k in signers))


def test_a_certified_block_gives_its_round_updates(tmp_path: Path) -> None:
    blobs = [_blob(1.0), _blob(3.0)]
    txs = [_update(DEVICES[0], blobs[0]), _update(DEVICES[3], blobs[1], samples=30)]
    block = _block(tmp_path, txs, [MEC, DEVICES[0], DEVICES[1]])

    assert needed_blobs(block.to_bytes(), "t", 2) == {sha256(b) for b in blobs}
    assert needed_blobs(block.to_bytes(), "t", 3) == set()
    _, items = round_updates(block.to_bytes(), blobs, COMMITTEE, NAMES, "t", 2)
    assert [(i.device, i.samples) for i in items] == [("dev0-0", 10), ("dev0-3", 30)]
    _, other_round = round_updates(block.to_bytes(), blobs, COMMITTEE, NAMES, "t", 3)
    assert other_round == []
    updates, bad = canonical_updates({"lmuc-mec1": items[:1], "lmuc-mec0": items[1:]}, REFERENCE)
    assert [u.sender for u in updates] == ["dev0-3", "dev0-0"] and bad == []


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("short_certificate", "2 of 3"),
        ("outsider_signs", "not a committee member"),
        ("altered_update", "Merkle root"),
        ("missing_blob", "blob"),
        ("outsider_update", "not signed by a device"),
    ],
)
def test_refused_blocks(tmp_path: Path, case: str, match: str) -> None:
    blobs = [_blob(1.0)]
    signer = OUTSIDER if case == "outsider_update" else DEVICES[0]
    txs = [_update(signer, blobs[0])]
    signers = [MEC, DEVICES[0], DEVICES[1]]
    if case == "short_certificate":
        signers = signers[:2]
    if case == "outsider_signs":
        signers = [MEC, DEVICES[0], OUTSIDER]
    block = _block(tmp_path, txs, signers)
    data = block.to_bytes()
    if case == "altered_update":  # the MEC swaps the certified update for another one
        other = _update(DEVICES[0], _blob(9.0))
        data = Block(block.header, (other,), block.certificate).to_bytes()
    given = [] if case == "missing_blob" else blobs

    with pytest.raises(ValueError, match=match):
        round_updates(data, given, COMMITTEE, NAMES, "t", 2)
