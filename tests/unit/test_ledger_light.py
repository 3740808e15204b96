"""Light replicas (node.ledger.light): header links, certificates, Merkle roots, inclusion
proofs, durability, and sync from a full replica."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block, CommitSignature
from node.core.finality import Committee, SingleWriter
from node.core.merkle import merkle_root
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import MemoryBlobStore
from node.ledger.chain import Chain, ChainConfig, LedgerError, verify_store
from node.ledger.light import (
    LightChain,
    follow,
    is_light_store,
    merkle_proof,
    verify_header,
    verify_inclusion,
    verify_light_store,
    verify_replica_store,
)
from node.ledger.replica import Replica
from node.ledger.store import DB_NAME, open_store
from node.ledger.sync import ChainSync

PUB = NodeKey.from_seed(b"\x01" * 32)
DEV = NodeKey.from_seed(b"\x02" * 32)
OTHER = NodeKey.from_seed(b"\x03" * 32)
TASK = "t"


def _config() -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher"), "dev": (DEV.public_key, "device")}
    return ChainConfig(Genesis(members, {"pub": 1000}, "light"), SingleWriter(PUB.public_key))


def _blocks(n: int, tmp: Path) -> list[Block]:
    """`n` blocks of a task chain written by PUB (the device records an update in each)."""
    writer = Chain(open_store(tmp / "writer"), _config())
    out = []
    for i in range(n):
        if i == 0:
            txs = [
                Transaction.create(
                    PUB,
                    "task.publish",
                    1,
                    {
                        "task_id": TASK,
                        "reward_pool": 10,
                        "rounds": 99,
                        "model": "m",
                        "dataset": "-",
                    },
                )
            ]
        else:
            payload: dict[str, Any] = {
                "task_id": TASK,
                "round": i,
                "blob": bytes([i]) * 32,
                "size": 1,
                "samples": 1,
            }
            txs = [Transaction.create(DEV, "task.record_update", i + 10, payload)]
        block = writer.build(txs, PUB, 1_000 * (i + 1))
        assert len(block.txs) == 1
        writer.append(block)
        out.append(block)
    writer.store.close()
    return out


def test_light_chain_follows_a_full_chain_and_survives_reopening(tmp_path: Path) -> None:
    blocks = _blocks(5, tmp_path)
    light = LightChain(open_store(tmp_path / "light"), _config(), DEV.public_key)
    for block in blocks:
        assert light.append_bytes(block.to_bytes()) == []
    assert light.height == 5 and light.head == blocks[-1].header
    assert light.last_nonce() == 14
    light.store.close()

    store = open_store(tmp_path / "light")
    assert is_light_store(store) and not store.state_rows()
    reopened = LightChain(store, _config(), DEV.public_key)
    assert reopened.head == blocks[-1].header and reopened.last_nonce() == 14
    report = verify_light_store(store)
    assert report.ok and report.height == 5 and report.head_hash == blocks[-1].hash
    assert verify_replica_store(store) == report
    full = verify_replica_store(open_store(tmp_path / "writer"))
    assert full.ok and full.head_hash == report.head_hash
    # a full replay of a light store finds no state: what verify_replica_store avoids
    assert [f.reason for f in verify_store(store).failures] == ["state_mismatch"]


def test_light_chain_refuses_and_writes_nothing(tmp_path: Path) -> None:
    blocks = _blocks(2, tmp_path)
    light = LightChain(open_store(tmp_path / "light"), _config())
    first = blocks[0]
    forged = dataclasses.replace(first.header, timestamp_ms=first.header.timestamp_ms + 1)
    other_sig = (CommitSignature.create(OTHER, forged.hash),)
    cases = {
        "bad_height": blocks[1],
        "bad_certificate": Block(forged, first.txs, other_sig),
        "bad_merkle_root": Block(first.header, blocks[1].txs, first.certificate),
        "bad_prev_hash": Block(
            dataclasses.replace(first.header, prev_hash=bytes(32)), first.txs, first.certificate
        ),
    }
    for reason, block in cases.items():
        with pytest.raises(LedgerError) as err:
            light.append(block)
        assert err.value.reason == reason
    assert light.height == 0 and light.store.height() == 0
    light.append(first)
    assert light.height == 1


def test_full_and_light_stores_are_not_mixed_up(tmp_path: Path) -> None:
    full = Chain(open_store(tmp_path / "full"), _config())
    full.store.close()
    with pytest.raises(ValueError, match="full replica"):
        LightChain(open_store(tmp_path / "full"), _config())


def test_verify_light_store_finds_a_tampered_block(tmp_path: Path) -> None:
    blocks = _blocks(3, tmp_path)
    light = LightChain(open_store(tmp_path / "light"), _config())
    for block in blocks:
        light.append(block)
    light.store.close()
    # block 2 replaced by block 2 carrying block 1's transactions: same header, other body
    bad = Block(blocks[1].header, blocks[0].txs, blocks[1].certificate)
    with sqlite3.connect(tmp_path / "light" / DB_NAME) as db:
        db.execute("UPDATE blocks SET data = ? WHERE height = 2", (bad.to_bytes(),))
    report = verify_light_store(open_store(tmp_path / "light"))
    assert not report.ok and report.failures[0].reason == "bad_merkle_root"
    assert report.height == 1


def test_follow_checks_a_committee_certificate_chain() -> None:
    keys = [NodeKey.from_seed(bytes([40 + i]) * 32) for i in range(4)]
    finality = Committee.bft(tuple(k.public_key for k in keys))
    genesis = ChainConfig(Genesis({}, {}, "c"), finality).genesis_block[0].header
    links = []
    prev = genesis
    for h in range(1, 4):
        header = dataclasses.replace(prev, height=h, prev_hash=prev.hash, timestamp_ms=h)
        links.append((header, [CommitSignature.create(k, header.hash) for k in keys[:3]]))
        prev = header
    assert follow(genesis, links, finality) == prev
    short = [(links[0][0], links[0][1][:2])]  # 2 of 4: below the quorum of 3
    with pytest.raises(LedgerError) as err:
        follow(genesis, short, finality)
    assert err.value.reason == "bad_certificate"
    with pytest.raises(LedgerError) as err:
        verify_header(genesis, links[1][0], links[1][1], finality)
    assert err.value.reason == "bad_height"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9])
def test_merkle_proofs_for_every_leaf(n: int) -> None:
    leaves = [bytes([i]) * 32 for i in range(n)]
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert verify_inclusion(leaf, proof, root)
        assert not verify_inclusion(b"\xff" * 32, proof, root)


def test_inclusion_of_a_transaction(tmp_path: Path) -> None:
    blocks = _blocks(3, tmp_path)
    light = LightChain(open_store(tmp_path / "light"), _config())
    for block in blocks:
        light.append(block)
    tx = blocks[2].txs[0]
    found = light.inclusion(tx.hash)
    assert found is not None and found.height == 3 and found.verify()
    assert light.inclusion(b"\x00" * 32) is None


def test_light_replica_signs_with_nonces_above_its_own(tmp_path: Path) -> None:
    blocks = _blocks(3, tmp_path)
    replica = Replica(tmp_path / "dev", _config(), DEV, light=True)
    for block in blocks:
        replica.chain.append(block)
    assert replica.transaction("task.record_update", {}).nonce == 13
    with pytest.raises(RuntimeError, match="light replica"):
        _ = replica.chain.state
    with pytest.raises(RuntimeError, match="light replica"):
        replica.chain.build([], DEV, 10_000)
    replica.close()
    reopened = Replica(tmp_path / "dev", _config(), DEV, light=True)
    assert reopened.next_nonce() == 13
    reopened.close()


def test_a_light_replica_keeps_a_small_page_cache_and_a_full_one_sqlites_default(
    tmp_path: Path,
) -> None:
    from node.ledger.replica import LIGHT_CACHE_KIB

    light = Replica(tmp_path / "dev", _config(), DEV, light=True)
    full = Replica(tmp_path / "mec", _config(), DEV)
    default = sqlite3.connect(":memory:").execute("PRAGMA cache_size").fetchone()[0]
    try:
        for block in _blocks(2, tmp_path):  # still taking blocks, with the small cache
            light.chain.append(block)
        assert light.height == 2
        assert light.chain.store._db.execute("PRAGMA cache_size").fetchone()[0] == (
            -LIGHT_CACHE_KIB
        )
        assert full.chain.store._db.execute("PRAGMA cache_size").fetchone()[0] == default
    finally:
        light.close()
        full.close()


def test_a_light_replica_syncs_from_a_full_one_and_serves_its_blocks(tmp_path: Path) -> None:
    blocks = _blocks(4, tmp_path)
    full = Chain(open_store(tmp_path / "full"), _config())
    for block in blocks:
        full.append(block)
    light = LightChain(open_store(tmp_path / "light"), _config())
    syncs = {
        "full": ChainSync(full, MemoryBlobStore()),
        "light": ChainSync(light, MemoryBlobStore()),
    }
    fresh = Chain(open_store(tmp_path / "fresh"), _config())
    syncs["fresh"] = ChainSync(fresh, MemoryBlobStore())

    # light learns of full's height and fetches the blocks
    for msg in syncs["full"].announce(["light"]):
        replies = syncs["light"].handle("full", msg.type, msg.payload, 0.0)
        while replies:
            req = replies.pop(0)
            assert req.dst == "full"
            for rep in syncs["full"].handle("light", req.type, req.payload, 0.0):
                replies += syncs["light"].handle("full", rep.type, rep.payload, 0.0)
    assert light.height == 4 and light.head == full.head
    # a full replica catches up from the light one and validates what it serves completely
    for msg in syncs["light"].announce(["fresh"]):
        replies = syncs["fresh"].handle("light", msg.type, msg.payload, 0.0)
        while replies:
            req = replies.pop(0)
            for rep in syncs["light"].handle("fresh", req.type, req.payload, 0.0):
                replies += syncs["fresh"].handle("light", rep.type, rep.payload, 0.0)
    assert fresh.height == 4 and fresh.state.root() == full.state.root()
