"""Block storage time t and block timing rows: node.ledger.storage_time, the store's
``block_times`` table, Chain.append's received time, and the run reader node.ledger.timing."""

from __future__ import annotations

import csv
import math
import sqlite3
import time
from pathlib import Path

import pytest

from node.core.block import ZERO_HASH, Block
from node.ledger.chain import Chain
from node.ledger.storage_time import (
    BLOCK_TIMES_INSERT,
    BLOCK_TIMES_SCHEMA,
    BlockTime,
    StorageClock,
    check_storage_time,
)
from node.ledger.store import DB_NAME, ChainStore, StoreError, open_store
from node.ledger.timing import BLOCKS_CSV, block_delays, block_times, write_blocks_csv
from tests.unit.test_ledger_block import key, make_block
from tests.unit.test_ledger_chain import Writer, _config

T_MS = 20.0
EPOCH_MS = 1_700_000_000_000.0


class FakeClock:
    """Time moves only when the store sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> float:
        return EPOCH_MS + self.now * 1000.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> StorageClock:
        return StorageClock(self.monotonic, self.wall_ms, self.sleep)


def _blocks(n: int, first_ts: int = 1_700_000_000_000) -> list[Block]:
    out: list[Block] = []
    prev = ZERO_HASH
    for height in range(n):
        block = make_block(height, prev, signers=(key(9),), timestamp_ms=first_ts + height)
        out.append(block)
        prev = block.hash
    return out


# -- the emulated storage time ------------------------------------------------------------


@pytest.mark.parametrize("deferred", [False, True])
def test_an_append_with_storage_time_takes_at_least_t(tmp_path: Path, deferred: bool) -> None:
    genesis, first, second = _blocks(3)
    with ChainStore(tmp_path / DB_NAME, deferred=deferred, storage_time_ms=T_MS) as store:
        store.append(genesis, {})
        for block in (first, second):
            started = time.monotonic()
            store.append(block, {})
            took_ms = (time.monotonic() - started) * 1000.0
            assert took_ms >= T_MS  # a lower bound only: the machine may be slow
        store.flush()
        times = store.block_times()
    assert [t.height for t in times] == [1, 2]
    assert all(t.storage_ms >= T_MS and t.t_ms == T_MS for t in times)


def test_storage_time_waits_the_remainder_on_the_monotonic_clock(tmp_path: Path) -> None:
    fake = FakeClock()
    genesis, first = _blocks(2)
    with ChainStore(tmp_path / DB_NAME, storage_time_ms=T_MS, clock=fake.clock()) as store:
        store.append(genesis, {})
        assert fake.sleeps == []  # genesis is not a stored block of the run: no wait, no row
        store.append(first, {}, received_ms=EPOCH_MS + 99_000.0)
        (row,) = store.block_times()
    assert sum(fake.sleeps) == pytest.approx(T_MS / 1000.0)
    assert row == BlockTime(
        height=1,
        proposed_ms=first.header.timestamp_ms,
        received_ms=EPOCH_MS + 99_000.0,
        validated_ms=EPOCH_MS + 100_000.0,
        stored_ms=pytest.approx(EPOCH_MS + 100_000.0 + T_MS),
        storage_ms=pytest.approx(T_MS),
        t_ms=T_MS,
    )


def test_without_storage_time_nothing_waits_but_rows_are_kept(tmp_path: Path) -> None:
    fake = FakeClock()
    with ChainStore(tmp_path / DB_NAME, clock=fake.clock()) as store:
        for block in _blocks(3):
            store.append(block, {})
        times = store.block_times()
    assert fake.sleeps == []
    assert [(t.height, t.storage_ms, t.t_ms) for t in times] == [(1, 0.0, 0.0), (2, 0.0, 0.0)]
    assert all(t.received_ms == t.validated_ms == t.stored_ms for t in times)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 60_001.0])
def test_a_bad_storage_time_is_refused_naming_the_field(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="storage_time_ms must be a number from 0 to 60000"):
        check_storage_time(bad)
    with pytest.raises(ValueError, match="storage_time_ms"):
        ChainStore(tmp_path / DB_NAME, storage_time_ms=bad)


# -- the rows: durable with the block -----------------------------------------------------


@pytest.mark.parametrize("deferred", [False, True])
def test_rows_are_written_and_survive_a_reopen(tmp_path: Path, deferred: bool) -> None:
    fake = FakeClock()
    blocks = _blocks(4)
    with ChainStore(tmp_path / DB_NAME, deferred=deferred, clock=fake.clock()) as store:
        for i, block in enumerate(blocks):
            store.append(block, {}, received_ms=EPOCH_MS + i)
        before = store.block_times()
    # closed (deferred: flushed by close); a fresh connection sees every row
    with ChainStore(tmp_path / DB_NAME) as again:
        assert again.block_times() == before
        assert again.block_times(start=3) == before[-1:]
    assert [(t.height, t.received_ms) for t in before] == [(h, EPOCH_MS + h) for h in (1, 2, 3)]
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("SELECT COUNT(*) FROM block_times").fetchone()[0] == 3


def test_a_pending_block_has_its_row_before_it_is_written(tmp_path: Path) -> None:
    with ChainStore(tmp_path / DB_NAME, clock=FakeClock().clock()) as store:
        store.set_deferred(True, thread=False)
        for block in _blocks(2):
            store.append(block, {})
        assert [t.height for t in store.block_times()] == [1]
        assert store.durable_height() == -1
        store.flush()
        assert store.durable_height() == 1
        assert [t.height for t in store.block_times()] == [1]


def test_a_refused_append_leaves_no_row_and_reset_clears_them(tmp_path: Path) -> None:
    genesis, first, second = _blocks(3)
    with ChainStore(tmp_path / DB_NAME, clock=FakeClock().clock()) as store:
        store.append(genesis, {})
        store.append(first, {})
        with pytest.raises(StoreError, match="expected 2"):
            store.append(first, {})
        with pytest.raises(StoreError, match="state"):
            store.append(second, {("ns", "k"): "not bytes"})  # type: ignore[dict-item]
        assert [t.height for t in store.block_times()] == [1]
        store.reset()
        assert store.block_times() == []


def test_a_store_written_before_block_times_opens_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB, data BLOB)")
    with ChainStore(path) as store:
        assert store.block_times() == []


# -- Chain.append: the received time -----------------------------------------------------


def test_chain_records_received_validated_and_stored(tmp_path: Path) -> None:
    fake = FakeClock()
    store = open_store(tmp_path / "node", storage_time_ms=T_MS)
    store.clock = fake.clock()
    chain = Chain(store, _config())
    writer = Writer(chain)
    own = writer.next_block()
    chain.append(own)  # built here: received when appended
    synced = writer.next_block()
    chain.append_bytes(synced.to_bytes(), received_ms=EPOCH_MS + 42.0)
    times = store.block_times()
    store.close()
    assert [t.height for t in times] == [1, 2]
    assert [t.proposed_ms for t in times] == [own.header.timestamp_ms, synced.header.timestamp_ms]
    assert times[0].received_ms == times[0].validated_ms == EPOCH_MS + 100_000.0
    assert times[1].received_ms == EPOCH_MS + 42.0
    assert times[1].stored_ms == pytest.approx(times[1].validated_ms + T_MS)
    assert store.storage_time_ms == T_MS


# -- the run reader -----------------------------------------------------------------------


def _hand_made_store(
    path: Path, rows: list[tuple[int, int, float, float, float, float, float]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(BLOCK_TIMES_SCHEMA)
        conn.executemany(BLOCK_TIMES_INSERT, rows)


def _hand_made_run(run: Path) -> None:
    # chain "lmuc-0" kept by mec0 and dev1, chain "gmuc" by mec0 only; t = 10 ms
    _hand_made_store(
        run / "nodes/mec0/chains/lmuc-0" / DB_NAME,
        [(1, 1000, 1000.0, 1001.0, 1011.0, 10.5, 10.0), (2, 2000, 2000.0, 2001.0, 2012.0, 11, 10)],
    )
    _hand_made_store(
        run / "nodes/dev1/chains/lmuc-0" / DB_NAME,
        [(1, 1000, 1005.0, 1006.0, 1030.0, 24.0, 10.0), (2, 2000, 2003.0, 2004.0, 2011.0, 7, 10)],
    )
    _hand_made_store(
        run / "nodes/mec0/chains/gmuc" / DB_NAME, [(1, 5000, 5002.0, 5003.0, 5013.0, 10, 10)]
    )
    # the layout before several chains: the node's one chain, "main"; t = 0 (not emulated)
    _hand_made_store(run / "nodes/old/" / DB_NAME, [(1, 7000, 7001.0, 7001.0, 7004.0, 3, 0)])
    # a store of a version without block times, and a node with no ledger
    with sqlite3.connect(run / "nodes/dev1" / DB_NAME) as conn:
        conn.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY)")
    (run / "nodes/publisher").mkdir()


def test_block_delays_of_a_hand_made_run(tmp_path: Path) -> None:
    _hand_made_run(tmp_path)

    delays = {(d.chain, d.height): d for d in block_delays(tmp_path)}

    assert sorted(delays) == [("gmuc", 1), ("lmuc-0", 1), ("lmuc-0", 2), ("main", 1)]
    one = delays[("lmuc-0", 1)]
    assert (one.proposed_ms, one.stored_ms, one.last_node, one.keepers) == (1000, 1030.0, "dev1", 2)
    assert (one.delay_ms, one.delay_t) == (30.0, 3.0)
    two = delays[("lmuc-0", 2)]
    assert (two.last_node, two.delay_ms, two.delay_t) == ("mec0", 12.0, 1.2)
    gmuc = delays[("gmuc", 1)]
    assert (gmuc.keepers, gmuc.delay_ms, gmuc.delay_t) == (1, 13.0, 1.3)
    main = delays[("main", 1)]
    assert (main.last_node, main.delay_ms, main.t_ms, main.delay_t) == ("old", 4.0, 0.0, None)
    # an explicit unit t overrides the recorded one
    assert {d.chain: d.delay_t for d in block_delays(tmp_path, t_ms=4.0)}["main"] == 1.0


def test_block_times_and_blocks_csv_of_a_hand_made_run(tmp_path: Path) -> None:
    _hand_made_run(tmp_path)

    rows = block_times(tmp_path)
    out = write_blocks_csv(tmp_path)

    assert out == tmp_path / BLOCKS_CSV
    assert [(r.node, r.chain, r.height) for r in rows] == [
        ("dev1", "lmuc-0", 1),
        ("dev1", "lmuc-0", 2),
        ("mec0", "gmuc", 1),
        ("mec0", "lmuc-0", 1),
        ("mec0", "lmuc-0", 2),
        ("old", "main", 1),
    ]
    with out.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == [
        "chain", "height", "hash", "node", "proposed_ms", "certified_ms", "received_ms",
        "validated_ms", "stored_ms", "storage_ms", "t_ms", "delay_ms", "delay_t",
        "proposed_from", "round",
    ]  # fmt: skip
    by_key = {(d["node"], d["chain"], d["height"]): d for d in read}
    assert by_key[("dev1", "lmuc-0", "1")]["delay_t"] == "3.0"  # (1030 - 1000) / 10
    assert by_key[("old", "main", "1")]["delay_t"] == ""  # t = 0: no unit
    # no blocks table in the hand-made stores: no hash; no proposal rows: the header's time,
    # and certified when the first keeper began storing it
    assert {d["hash"] for d in read} == {""}
    assert {d["proposed_from"] for d in read} == {"header"}
    assert {d["round"] for d in read} == {""}  # no block bytes: the round is unknown
    assert by_key[("dev1", "lmuc-0", "1")]["certified_ms"] == "1001.0"  # mec0's validated_ms
    assert [(d["node"], d["chain"], float(d["stored_ms"])) for d in read] == [
        (r.node, r.chain, r.stored_ms) for r in rows
    ]
    assert block_times(tmp_path / "nowhere") == []


def test_block_delays_of_stores_written_by_chains(tmp_path: Path) -> None:
    """In one process: a writer and a replica, each with storage time t (real clock); the
    replica, which appends after the writer, is each block's last keeper."""
    config = _config()
    writer_store = open_store(tmp_path / "nodes/pub/chains/task", storage_time_ms=T_MS)
    replica_store = open_store(tmp_path / "nodes/dev0/chains/task", storage_time_ms=T_MS)
    writer_chain, replica = Chain(writer_store, config), Chain(replica_store, config)
    writer = Writer(writer_chain)
    for _ in range(3):
        block = writer.next_block()
        writer_chain.append(block)
        replica.append_bytes(block.to_bytes())
    writer_store.close()
    replica_store.close()

    delays = block_delays(tmp_path)

    assert [(d.chain, d.height, d.keepers, d.last_node) for d in delays] == [
        ("task", h, 2, "dev0") for h in (1, 2, 3)
    ]
    rows = block_times(tmp_path)
    assert len(rows) == 6 and all(r.storage_ms >= T_MS for r in rows)  # measured, monotonic
    for d in delays:
        assert d.delay_t == pytest.approx(d.delay_ms / T_MS)


def test_a_recorded_proposal_overrides_the_header_time(tmp_path: Path) -> None:
    """A PoW miner's `record_proposal` (when it started mining, when it found the proof) is
    what every node's row of that block says, not the header's timestamp (mined over); a
    block without one keeps the header's, certified at its first keeper's append."""
    config = _config()
    miner_store = open_store(tmp_path / "nodes/mec0/chains/pow", storage_time_ms=T_MS)
    follower_store = open_store(tmp_path / "nodes/dev0/chains/pow", storage_time_ms=T_MS)
    miner, follower = Chain(miner_store, config), Chain(follower_store, config)
    writer = Writer(miner)
    built = []
    for _ in range(2):
        block = writer.next_block()
        miner.append(block)
        follower.append_bytes(block.to_bytes())
        built.append(block)
    first, second = built
    started = first.header.timestamp_ms - 5_000.0  # the header ran 5 s ahead of the clock
    miner_store.record_proposal(first.hash, 1, started, started + 40.0)
    assert miner_store.proposals() == {first.hash: (1, started, started + 40.0)}
    miner_store.close()
    follower_store.close()

    rows = {(r.node, r.height): r for r in block_times(tmp_path)}
    delays = {d.height: d for d in block_delays(tmp_path)}

    for node in ("mec0", "dev0"):
        one = rows[(node, 1)]
        assert (one.proposed_ms, one.certified_ms, one.proposed_from) == (
            started,
            started + 40.0,
            "record",
        )
        assert one.hash == first.hash.hex()
        assert one.delay_ms == pytest.approx(one.stored_ms - started)
        two = rows[(node, 2)]
        assert (two.proposed_ms, two.proposed_from) == (second.header.timestamp_ms, "header")
        assert two.certified_ms == rows[("mec0", 2)].validated_ms  # the miner appended first
    assert delays[1].proposed_ms == started
    assert delays[1].delay_ms == pytest.approx(
        max(rows[(n, 1)].stored_ms for n in ("mec0", "dev0")) - started
    )


def test_a_proposal_needs_a_block_hash_and_reset_clears_proposals(tmp_path: Path) -> None:
    with ChainStore(tmp_path / DB_NAME) as store:
        with pytest.raises(StoreError, match="32 bytes"):
            store.record_proposal(b"short", 1, 1.0, 2.0)
        store.record_proposal(bytes(32), 1, 1.0, 2.0)
        store.reset()
        assert store.proposals() == {}
