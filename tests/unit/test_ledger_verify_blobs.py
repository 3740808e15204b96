"""`bcfl chain verify` on real ledgers built with the ledger API: blobs re-hashed, the stored
hash column and head hash checked against the blocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block
from node.core.finality import SingleWriter
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobrefs import chain_blobs, tx_blobs
from node.ledger.blobs import FileBlobStore
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import DB_NAME, open_store
from orchestrator.chain_cli import verify

TASK = "t1"
ROUNDS = 3


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


PUB = _key(1)
DEVICES = {"dev0": _key(10), "dev1": _key(11)}


def _config() -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher")}
    members.update({name: (k.public_key, "device") for name, k in DEVICES.items()})
    return ChainConfig(Genesis(members, {"pub": 1000}, "verify"), SingleWriter(PUB.public_key))


def _build_run(run_dir: Path) -> list[Block]:
    """A publisher and two devices: publish, ROUNDS rounds (updates + global), each node's
    ledger holding every block and its blob store what a real node keeps (the publisher
    its global models, a device its own updates and the global models it fetched)."""
    dirs = {n: run_dir / "nodes" / n for n in ("pub", *DEVICES)}
    stores = {n: open_store(d) for n, d in dirs.items()}
    blobs = {n: FileBlobStore(d / "blobs") for n, d in dirs.items()}
    chains = {n: Chain(s, _config()) for n, s in stores.items()}
    nonces: dict[bytes, int] = {}

    def tx(key: NodeKey, type_: str, payload: dict[str, object]) -> Transaction:
        nonces[key.public_key] = nonces.get(key.public_key, 0) + 1
        return Transaction.create(key, type_, nonces[key.public_key], payload)

    blocks = []
    publish = {"task_id": TASK, "reward_pool": 100, "rounds": ROUNDS, "model": "m", "dataset": "d"}
    rounds: list[list[Transaction]] = [[tx(PUB, "task.publish", publish)]]
    for r in range(1, ROUNDS + 1):
        txs = []
        for name, key in DEVICES.items():
            data = f"update {name} {r}".encode()
            payload = {"task_id": TASK, "round": r, "blob": blobs[name].put(data)}
            txs.append(tx(key, "task.record_update", {**payload, "size": len(data), "samples": 5}))
        data = f"global {r}".encode()
        blob = blobs["pub"].put(data)
        for name in DEVICES:
            blobs[name].put(data)  # fetched after the block
        payload = {"task_id": TASK, "round": r, "blob": blob, "size": len(data)}
        extra = {"accuracy": 0.5, "contributors": sorted(DEVICES)}
        txs.append(tx(PUB, "task.record_global", {**payload, **extra}))
        rounds.append(txs)
    for i, txs in enumerate(rounds):
        block = chains["pub"].build(txs, PUB, 1000 * (i + 1))
        for chain in chains.values():
            chain.append(block)
        blocks.append(block)
    for s in stores.values():
        s.close()
    return blocks


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    _build_run(out)
    return out


def _blob_file(run_dir: Path, node: str, key: bytes) -> Path:
    return run_dir / "nodes" / node / "blobs" / key.hex()[:2] / key.hex()


def _refs(run_dir: Path) -> dict[str, list[tuple[bytes, int]]]:
    """Blob hash and height of each global model ("pub") and each device's updates."""
    store = open_store(run_dir / "nodes" / "pub")
    try:
        out: dict[str, list[tuple[bytes, int]]] = {"pub": [], **{n: [] for n in DEVICES}}
        names = {k.public_key: n for n, k in DEVICES.items()} | {PUB.public_key: "pub"}
        for ref in chain_blobs(store):
            out[names[ref.sender]].append((ref.key, ref.height))
        return out
    finally:
        store.close()


def test_blob_fields_come_from_the_contract() -> None:
    t = Transaction.create(PUB, "task.record_global", 1, {"blob": b"\x01" * 32, "x": b"\x02" * 32})
    assert tx_blobs(t) == [b"\x01" * 32]
    assert tx_blobs(t, ("task.record_update",)) == []
    other = Transaction.create(PUB, "task.reward", 2, {"blob": b"\x01" * 32})
    assert tx_blobs(other) == []


def test_clean_run_directory_verifies(run_dir: Path) -> None:
    ok, lines = verify(run_dir)

    assert ok, lines
    text = "\n".join(lines)
    # pub holds the 3 global models, and the 6 device updates are not its to hold
    assert "pub: ok  height 4" in text and "blobs 3 ok, 6 not held" in text
    # a device holds its 3 updates and the 3 global models; the other's 3 updates: not held
    assert text.count("blobs 6 ok, 3 not held") == 2


def test_flipped_byte_in_a_blob_fails_naming_hash_and_height(run_dir: Path) -> None:
    key, height = _refs(run_dir)["pub"][1]
    path = _blob_file(run_dir, "dev1", key)  # a global model the device fetched
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))

    ok, lines = verify(run_dir)

    assert not ok
    text = "\n".join(lines)
    assert "dev1: FAILED" in text
    assert f"at height {height}: corrupt blob {key.hex()[:16]}" in text
    assert "pub: ok" in text and "dev0: ok" in text
    assert path.read_bytes() == bytes(data), "verify reports, it does not delete"


def test_deleted_blob_the_node_signed_is_missing(run_dir: Path) -> None:
    key, height = _refs(run_dir)["dev0"][2]
    _blob_file(run_dir, "dev0", key).unlink()

    ok, lines = verify(run_dir / "nodes" / "dev0")

    assert not ok
    assert f"at height {height}: missing blob {key.hex()[:16]}" in "\n".join(lines)


def test_deleted_replicated_blob_is_counted_not_held(run_dir: Path) -> None:
    key, _ = _refs(run_dir)["pub"][0]
    _blob_file(run_dir, "dev0", key).unlink()

    ok, lines = verify(run_dir / "nodes" / "dev0")

    assert ok, lines
    assert "blobs 5 ok, 4 not held" in lines[0]


def test_deleted_global_model_on_the_publisher_is_missing(run_dir: Path) -> None:
    key, height = _refs(run_dir)["pub"][0]
    _blob_file(run_dir, "pub", key).unlink()

    ok, lines = verify(run_dir)

    assert not ok
    assert f"at height {height}: missing blob {key.hex()[:16]}" in "\n".join(lines)


def test_tampered_hash_column_is_reported(run_dir: Path) -> None:
    db = run_dir / "nodes" / "dev0" / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE blocks SET hash = ? WHERE height = 2", (b"\x07" * 32,))

    ok, lines = verify(run_dir)

    assert not ok
    text = "\n".join(lines)
    assert "dev0: FAILED" in text and "at height 2: bad_stored_hash" in text
    assert "0707070707070707" in text


def test_tampered_head_hash_is_reported(run_dir: Path) -> None:
    db = run_dir / "nodes" / "pub" / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (b"\x09" * 32,))

    ok, lines = verify(run_dir / "nodes" / "pub")

    assert not ok
    assert "at height 4: bad_head_hash" in lines[0]
