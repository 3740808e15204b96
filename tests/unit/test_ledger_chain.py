"""Unit tests for node.ledger.chain: validated appends, exact rejection reasons, replay."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.contracts.runtime import Genesis
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.encoding import canonical
from node.core.finality import SingleWriter
from node.core.merkle import merkle_root
from node.core.tx import MAX_PAYLOAD_BYTES, Transaction
from node.keys import NodeKey
from node.ledger.chain import (
    REASONS,
    Chain,
    ChainConfig,
    LedgerError,
    VerifyReport,
    verify_store,
)
from node.ledger.store import DB_NAME, ChainStore, open_store

N_DEVICES = 3
TASK = "t1"


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


PUB = _key(1)
DEVICES = [_key(10 + i) for i in range(N_DEVICES)]
STRANGER = _key(99)


def _config(chain_id: str = "unit") -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher")}
    members.update({f"dev{i}": (k.public_key, "device") for i, k in enumerate(DEVICES)})
    genesis = Genesis(members=members, balances={"pub": 1000}, chain_id=chain_id)
    return ChainConfig(genesis, SingleWriter(PUB.public_key))


class Writer:
    """Builds a task workload: publish, then one round (updates + global) per block."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.nonces: dict[bytes, int] = {}
        self.round = 0
        self.ts = 1_000

    def nonce(self, key: NodeKey) -> int:
        n = self.nonces.get(key.public_key, 0) + 1
        self.nonces[key.public_key] = n
        return n

    def publish_tx(self, pool: int = 100) -> Transaction:
        payload = {
            "task_id": TASK,
            "reward_pool": pool,
            "rounds": 1000,
            "model": "m",
            "dataset": "d",
        }
        return Transaction.create(PUB, "task.publish", self.nonce(PUB), payload)

    def round_txs(self) -> list[Transaction]:
        r = self.round + 1
        txs = [
            Transaction.create(
                dev,
                "task.record_update",
                self.nonce(dev),
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": bytes([r % 256, i]) * 16,
                    "size": 10,
                    "samples": 5,
                },
            )
            for i, dev in enumerate(DEVICES)
        ]
        txs.append(
            Transaction.create(
                PUB,
                "task.record_global",
                self.nonce(PUB),
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": bytes([r % 256, 255]) * 16,
                    "size": 10,
                    "accuracy": 0.5,
                    "contributors": [f"dev{i}" for i in range(N_DEVICES)],
                },
            )
        )
        self.round = r
        return txs

    def next_block(self) -> Block:
        """The next valid block (not appended)."""
        txs = [self.publish_tx()] if self.chain.height == 0 else self.round_txs()
        self.ts += 1_000
        return self.chain.build(txs, PUB, self.ts)

    def extend(self, n: int) -> int:
        """Append `n` blocks; returns the number of transactions appended."""
        count = 0
        for _ in range(n):
            block = self.next_block()
            receipts = self.chain.append(block)
            assert all(r.ok for r in receipts), receipts
            count += len(block.txs)
        return count


def _signed(header: BlockHeader, txs: tuple[Transaction, ...], key: NodeKey = PUB) -> Block:
    return Block(header, txs, (CommitSignature.create(key, header.hash),))


def _reheader(block: Block, key: NodeKey = PUB, **changes: object) -> Block:
    """`block` with header fields changed and re-signed, so only those fields are wrong."""
    header = dataclasses.replace(block.header, **changes)
    return _signed(header, block.txs, key)


def _snapshot(chain: Chain) -> tuple[object, ...]:
    store = chain.store
    return (
        store.height(),
        store.meta_get("head_hash"),
        store.state_rows(),
        chain.height,
        chain.head.hash,
        chain.state.root(),
    )


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = Chain(open_store(tmp_path / "node"), _config())
    yield c
    c.store.close()


# -- happy path ------------------------------------------------------------------------------


def test_append_verify_reopen(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    chain = Chain(open_store(node_dir), _config())
    assert chain.height == 0
    writer = Writer(chain)
    tx_count = writer.extend(6)
    assert chain.height == 6
    report = verify_store(chain.store)
    assert report.ok, report.failures
    assert (report.height, report.tx_count, report.head_hash) == (6, tx_count, chain.head.hash)
    root, head = chain.state.root(), chain.head
    chain.store.close()

    again = Chain(open_store(node_dir), _config())
    assert again.height == 6 and again.head == head and again.state.root() == root
    writer.chain = again
    writer.extend(2)  # continues from the head
    assert again.height == 8
    assert verify_store(again.store).ok
    again.store.close()

    store = open_store(node_dir)
    opened = Chain.open(store)
    assert opened.config == _config()
    assert opened.height == 8
    store.close()


def test_store_of_another_chain_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path / "node")
    Chain(store, _config("one"))
    with pytest.raises(ValueError, match="different chain"):
        Chain(store, _config("two"))
    other_writer = dataclasses.replace(_config("one"), finality=SingleWriter(STRANGER.public_key))
    with pytest.raises(ValueError, match="different chain"):
        Chain(store, other_writer)
    store.close()


def test_open_without_config_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path / "empty")
    with pytest.raises(ValueError, match="no chain config"):
        Chain.open(store)
    store.close()


# -- rejections ------------------------------------------------------------------------------


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def _bad_blocks(chain: Chain, writer: Writer) -> dict[str, Block]:
    """Bad successors of the head, each wrong in one respect; keyed by the expected reason."""
    good = writer.next_block()
    assert len(good.txs) >= 2
    h = good.header

    tampered = dataclasses.replace(good.txs[0], signature=_flip(good.txs[0].signature, 5))
    txs = (tampered, *good.txs[1:])
    bad_sig = _reheader(Block(h, txs, ()), merkle_root=merkle_root([tx.hash for tx in txs]))

    stranger_tx = Transaction.create(
        STRANGER,
        "task.publish",
        1,
        {"task_id": "t9", "reward_pool": 0, "rounds": 1, "model": "m", "dataset": "d"},
    )
    unknown_sender = _reheader(
        Block(h, (stranger_tx,), ()), merkle_root=merkle_root([stranger_tx.hash])
    )

    unknown_contract_tx = Transaction.create(PUB, "nosuch.method", 10_000, {})
    unknown_contract = _reheader(
        Block(h, (unknown_contract_tx,), ()),
        merkle_root=merkle_root([unknown_contract_tx.hash]),
    )

    stale = Transaction.create(PUB, "task.close", 1, {"task_id": TASK})  # nonce 1 used
    bad_nonce = _reheader(Block(h, (stale,), ()), merkle_root=merkle_root([stale.hash]))

    oversize_tx = Transaction(
        "task.close",
        PUB.public_key,
        10_001,
        {"task_id": TASK, "x": b"\0" * MAX_PAYLOAD_BYTES},
        bytes(64),
    )
    oversize = _reheader(Block(h, (oversize_tx,), ()), merkle_root=merkle_root([oversize_tx.hash]))

    wrong_sig = CommitSignature(PUB.public_key, _flip(good.certificate[0].signature, 0))
    return {
        "bad_signature": bad_sig,
        "bad_prev_hash": _reheader(good, prev_hash=b"\x01" * 32),
        "bad_height": _reheader(good, height=h.height + 1),
        "bad_merkle_root": _reheader(good, merkle_root=b"\x02" * 32),
        "bad_state_root": _reheader(good, state_root=b"\x03" * 32),
        "bad_timestamp": _reheader(good, timestamp_ms=chain.head.timestamp_ms - 1),
        "unknown_sender": unknown_sender,
        "unknown_contract": unknown_contract,
        "bad_nonce": bad_nonce,
        "oversize": oversize,
        "bad_certificate/non_validator": _reheader(good, key=STRANGER),
        "bad_certificate/missing": good.with_certificate(()),
        "bad_certificate/bad_signature": good.with_certificate((wrong_sig,)),
        "bad_certificate/other_hash": good.with_certificate(
            (CommitSignature.create(PUB, b"\x04" * 32),)
        ),
        "bad_certificate/twice": good.with_certificate(good.certificate * 2),
    }


REJECTIONS = [
    "bad_signature",
    "bad_prev_hash",
    "bad_height",
    "bad_merkle_root",
    "bad_state_root",
    "bad_timestamp",
    "unknown_sender",
    "unknown_contract",
    "bad_nonce",
    "oversize",
    "bad_certificate/non_validator",
    "bad_certificate/missing",
    "bad_certificate/bad_signature",
    "bad_certificate/other_hash",
    "bad_certificate/twice",
]


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejection_reason_and_store_unchanged(chain: Chain, case: str) -> None:
    writer = Writer(chain)
    writer.extend(3)
    saved_nonces, saved_round, saved_ts = dict(writer.nonces), writer.round, writer.ts
    bad = _bad_blocks(chain, writer)[case]
    before = _snapshot(chain)
    with pytest.raises(LedgerError) as info:
        chain.append(bad)
    reason = case.split("/")[0]
    assert info.value.reason == reason
    assert info.value.height == bad.height
    assert _snapshot(chain) == before
    # The chain is not wedged: the intended block still goes on.
    writer.nonces, writer.round, writer.ts = saved_nonces, saved_round, saved_ts
    chain.append(writer.next_block())
    assert chain.height == 4
    assert verify_store(chain.store).ok


def test_replayed_tx_in_a_later_block_is_bad_nonce(chain: Chain) -> None:
    writer = Writer(chain)
    writer.extend(3)
    old = chain.store.block(2)
    assert old is not None
    replay = old.txs[0]
    good = writer.next_block()
    txs = (*good.txs, replay)
    bad = _reheader(Block(good.header, txs, ()), merkle_root=merkle_root([t.hash for t in txs]))
    before = _snapshot(chain)
    with pytest.raises(LedgerError) as info:
        chain.append(bad)
    assert info.value.reason == "bad_nonce"
    assert _snapshot(chain) == before


def test_oversize_payload_via_bytes_is_malformed(chain: Chain) -> None:
    writer = Writer(chain)
    writer.extend(1)
    bad = _bad_blocks(chain, writer)["oversize"]
    raw = bad.to_bytes()
    before = _snapshot(chain)
    with pytest.raises(LedgerError) as info:
        chain.append_bytes(raw)
    assert info.value.reason in ("oversize", "malformed")
    assert _snapshot(chain) == before


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00", b"garbage", b"\x93\x01\x02\x03", b"\xc1" * 10, b"\x90"]
)
def test_append_bytes_garbage_is_malformed(chain: Chain, garbage: bytes) -> None:
    before = _snapshot(chain)
    with pytest.raises(LedgerError) as info:
        chain.append_bytes(garbage)
    assert info.value.reason == "malformed"
    assert info.value.height == 1
    assert _snapshot(chain) == before


def test_append_bytes_of_a_valid_block(chain: Chain) -> None:
    writer = Writer(chain)
    block = writer.next_block()
    chain.append_bytes(block.to_bytes())
    assert chain.head.hash == block.hash


def test_reasons_are_known() -> None:
    for case in REJECTIONS:
        assert case.split("/")[0] in REASONS
    with pytest.raises(AssertionError):
        LedgerError("no_such_reason", 1)


# -- build -----------------------------------------------------------------------------------


def test_build_leaves_out_rejected_and_keeps_reverted(chain: Chain) -> None:
    writer = Writer(chain)
    writer.extend(1)  # publish with a pool of 100 (PUB nonce 1)
    stale = Transaction.create(PUB, "task.close", 1, {"task_id": TASK})
    stranger = Transaction.create(STRANGER, "task.close", 1, {"task_id": TASK})
    too_much = Transaction.create(
        PUB, "task.reward", 2, {"task_id": TASK, "to": "dev0", "amount": 1_000_000}
    )
    paid = Transaction.create(PUB, "task.reward", 3, {"task_id": TASK, "to": "dev0", "amount": 10})
    block = chain.build([stale, stranger, too_much, paid], PUB, 5_000)
    assert block.txs == (too_much, paid)
    receipts = chain.append(block)
    assert [r.ok for r in receipts] == [False, True]
    assert "exceeds the reward pool" in receipts[0].error
    assert verify_store(chain.store).ok


def test_build_never_goes_back_in_time(chain: Chain) -> None:
    writer = Writer(chain)
    writer.extend(2)
    block = chain.build([], PUB, 0)
    assert block.header.timestamp_ms == chain.head.timestamp_ms
    chain.append(block)


# -- tampering on disk -----------------------------------------------------------------------

TAMPER_BLOCKS = 5


@pytest.fixture(scope="module")
def tampered_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChainStore, Path]]:
    node_dir = tmp_path_factory.mktemp("tamper")
    chain = Chain(open_store(node_dir), _config())
    Writer(chain).extend(TAMPER_BLOCKS)
    assert verify_store(chain.store).ok
    yield chain.store, node_dir / DB_NAME
    chain.store.close()


def _block_data(db: Path, height: int) -> bytes:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
    return bytes(row[0])


def _set_block_data(db: Path, height: int, data: bytes) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE blocks SET data = ? WHERE height = ?", (data, height))
    finally:
        conn.close()


def _check_flip_detected(store: ChainStore, db: Path, height: int, index: int, bit: int) -> None:
    original = _block_data(db, height)
    index %= len(original)
    _set_block_data(db, height, _flip(original, index, 1 << bit))
    try:
        report = verify_store(store)
        assert not report.ok, (height, index, bit)
        assert report.failures[0].height in (height, height + 1), report.failures
    finally:
        _set_block_data(db, height, original)
    assert verify_store(store).ok


@pytest.mark.parametrize("height", range(TAMPER_BLOCKS + 1))
def test_one_byte_changed_on_disk(tampered_store: tuple[ChainStore, Path], height: int) -> None:
    store, db = tampered_store
    middle = len(_block_data(db, height)) // 2
    _check_flip_detected(store, db, height, middle, 0)


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(
    height=st.integers(0, TAMPER_BLOCKS),
    index=st.integers(0, 1 << 20),
    bit=st.integers(0, 7),
)
def test_every_bit_flip_is_reported(
    tampered_store: tuple[ChainStore, Path], height: int, index: int, bit: int
) -> None:
    store, db = tampered_store
    _check_flip_detected(store, db, height, index, bit)


def _tamper_state(store: ChainStore, db: Path, value: bytes) -> VerifyReport:
    """verify_store with one token balance row set to `value` (restored afterwards)."""
    conn = sqlite3.connect(db)
    try:
        key, original = conn.execute(
            "SELECT key, value FROM state WHERE ns = 'token.balance' ORDER BY key"
        ).fetchone()
        with conn:
            conn.execute(
                "UPDATE state SET value = ? WHERE ns = 'token.balance' AND key = ?", (value, key)
            )
        try:
            return verify_store(store)
        finally:
            with conn:
                conn.execute(
                    "UPDATE state SET value = ? WHERE ns = 'token.balance' AND key = ?",
                    (original, key),
                )
    finally:
        conn.close()
        assert verify_store(store).ok


def test_tampered_state_row_is_state_mismatch(tampered_store: tuple[ChainStore, Path]) -> None:
    store, db = tampered_store
    report = _tamper_state(store, db, canonical(123_456))
    assert [f.reason for f in report.failures] == ["state_mismatch"]
    assert report.height == TAMPER_BLOCKS


def test_corrupt_state_row_is_state_mismatch(tampered_store: tuple[ChainStore, Path]) -> None:
    store, db = tampered_store
    report = _tamper_state(store, db, canonical(900) + b"\x00")
    assert [f.reason for f in report.failures] == ["state_mismatch"]


def test_missing_config_is_bad_genesis(tmp_path: Path) -> None:
    store = open_store(tmp_path / "empty")
    report = verify_store(store)
    assert [f.reason for f in report.failures] == ["bad_genesis"]
    store.close()
