"""Unit tests for node.ledger.store: the SQLite chain store, its atomicity and crash safety."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.block import ZERO_HASH, Block
from node.core.encoding import canonical, sha256
from node.core.tx import Transaction
from node.ledger.store import ChainStore, StoreError, open_blobs, open_store
from tests.unit.test_ledger_block import key, make_block

REPO_ROOT = Path(__file__).resolve().parents[2]


def _txs(height: int, n: int = 3) -> tuple[Transaction, ...]:
    return tuple(
        Transaction.create(key(i + 1), "task.record_update", height * 100 + i, {"h": height})
        for i in range(n)
    )


def _chain(length: int, n_txs: int = 3) -> list[Block]:
    """`length` linked, certified blocks."""
    out: list[Block] = []
    prev = ZERO_HASH
    for height in range(length):
        block = make_block(height, prev, _txs(height, n_txs), signers=(key(9),))
        out.append(block)
        prev = block.hash
    return out


def _snapshot(store: ChainStore) -> tuple[object, ...]:
    """Everything observable about a store, to compare before and after a failed write."""
    blocks = [store.block_bytes(h) for h in range(store.height() + 1)]
    return (store.height(), blocks, store.state_rows(), store.meta_get("head_hash"))


def _tx_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM txs").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    """An empty store, closed after the test."""
    with ChainStore(tmp_path / "ledger.sqlite") as s:
        yield s


def test_empty_store(store: ChainStore) -> None:
    assert store.height() == -1
    assert store.head() is None
    assert store.block(0) is None
    assert store.block_bytes(0) is None
    assert list(store.blocks()) == []
    assert store.state_rows() == []
    assert store.meta_get("head_hash") is None


def test_append_and_read_back(store: ChainStore) -> None:
    chain = _chain(4)
    for i, block in enumerate(chain):
        store.append(block, {("chain", "counter"): str(i).encode(), ("acc", f"k{i}"): b"v"})

    assert store.height() == 3
    assert store.head() == chain[-1]
    assert store.block(1) == chain[1]
    assert store.block_bytes(2) == chain[2].to_bytes()
    assert list(store.blocks()) == chain
    assert list(store.blocks(2)) == chain[2:]
    assert list(store.blocks(9)) == []
    assert store.meta_get("head_hash") == chain[-1].hash
    for block in chain:
        for idx, tx in enumerate(block.txs):
            assert store.tx_location(tx.hash) == (block.height, idx)
    assert store.tx_location(b"\x00" * 32) is None
    assert store.state_get("chain", "counter") == b"3"
    assert store.state_get("chain", "nope") is None
    assert len(store.state_rows()) == 5


def test_state_writes_upsert_and_delete(store: ChainStore) -> None:
    a, b = _chain(2)
    store.append(a, {("x", "1"): b"one", ("x", "2"): b"two"})
    store.append(b, {("x", "1"): b"uno", ("x", "2"): None, ("x", "missing"): None})

    assert store.state_rows() == [("x", "1", b"uno")]


def test_state_rows_are_sorted(store: ChainStore) -> None:
    keys = [("b", "z"), ("a", "é"), ("a", "B"), ("b", "a"), ("a", "a"), ("", "q"), ("a", "ab")]
    store.append(_chain(1)[0], {k: k[1].encode() for k in keys})

    rows = store.state_rows()
    assert [(ns, k) for ns, k, _ in rows] == sorted(keys)


def test_wrong_height_raises_and_leaves_store_unchanged(store: ChainStore) -> None:
    chain = _chain(3)
    with pytest.raises(StoreError):
        store.append(chain[1], {("a", "b"): b"c"})
    assert _snapshot(store) == (-1, [], [], None)

    store.append(chain[0], {("a", "b"): b"c"})
    before = _snapshot(store)
    for wrong in (chain[0], chain[2]):
        with pytest.raises(StoreError, match="expected 1"):
            store.append(wrong, {("a", "b"): b"changed"})
    assert _snapshot(store) == before
    assert _tx_count(store.path) == 3


@pytest.mark.parametrize(
    "writes",
    [
        {("ok", "1"): b"fine", ("bad", "value"): 42},
        {("ok", "1"): b"fine", ("bad", "value"): "text"},
        {("ok", "1"): b"fine", (1, "key"): b"v"},
    ],
)
def test_bad_state_write_mid_append_rolls_everything_back(
    store: ChainStore, writes: dict[tuple[str, str], bytes | None]
) -> None:
    first, second = _chain(2)
    store.append(first, {("ok", "1"): b"before"})
    before = _snapshot(store)

    with pytest.raises(StoreError, match="state"):
        store.append(second, writes)

    assert _snapshot(store) == before
    assert all(store.tx_location(tx.hash) is None for tx in second.txs)
    assert _tx_count(store.path) == len(first.txs)
    store.append(second, {("ok", "1"): b"after"})
    assert store.height() == 1


def test_exception_after_block_insert_rolls_back(
    store: ChainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _chain(2)
    store.append(first, {("c", "n"): b"0"})
    before = _snapshot(store)
    inserted: list[int] = []

    def boom(conn: sqlite3.Connection, block: Block) -> None:
        inserted.append(conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0])
        raise RuntimeError("crash in the middle")

    monkeypatch.setattr(ChainStore, "_insert_txs", staticmethod(boom))
    with pytest.raises(RuntimeError, match="crash in the middle"):
        store.append(second, {("c", "n"): b"1"})

    assert inserted == [1]  # the block row was written inside the transaction ...
    assert _snapshot(store) == before  # ... and rolled back
    monkeypatch.undo()
    store.append(second, {("c", "n"): b"1"})
    assert store.state_get("c", "n") == b"1"


def test_exception_after_partial_state_writes_rolls_back(
    store: ChainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _chain(2)
    store.append(first, {("c", "n"): b"0", ("c", "gone"): b"x"})
    before = _snapshot(store)
    original = ChainStore._apply_state

    def half_then_boom(conn: sqlite3.Connection, writes: dict[tuple[str, str], bytes]) -> None:
        original(conn, writes)
        raise KeyboardInterrupt

    monkeypatch.setattr(ChainStore, "_apply_state", staticmethod(half_then_boom))
    with pytest.raises(KeyboardInterrupt):
        store.append(second, {("c", "n"): b"1", ("c", "gone"): None})

    assert _snapshot(store) == before


def test_duplicate_transaction_is_refused_atomically(store: ChainStore) -> None:
    first = _chain(1)[0]
    store.append(first, {})
    replay = make_block(1, first.hash, first.txs[:1])
    before = _snapshot(store)

    with pytest.raises(sqlite3.IntegrityError):
        store.append(replay, {("a", "b"): b"c"})

    assert _snapshot(store) == before


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    chain = _chain(3)
    with ChainStore(path) as store:
        for i, block in enumerate(chain):
            store.append(block, {("chain", "counter"): str(i).encode()})
        store.meta_set("synced_from", b"node-2")
        before = _snapshot(store)

    with pytest.raises(StoreError, match="closed"):
        store.height()
    store.close()  # closing twice is harmless

    with ChainStore(path, synchronous="FULL") as again:
        assert _snapshot(again) == before
        assert list(again.blocks()) == chain
        assert again.meta_get("synced_from") == b"node-2"
        assert again.tx_location(chain[2].txs[1].hash) == (2, 1)
        again.append(make_block(3, chain[-1].hash), {})
        assert again.height() == 3


def test_pragmas_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with ChainStore(path, synchronous="full") as store:
        conn = store._db
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.isolation_level is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"blocks", "txs", "state", "meta"} <= tables
    with ChainStore(path) as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError):
        ChainStore(path, synchronous="OFF")


def test_reset_deletes_everything(store: ChainStore) -> None:
    for block in _chain(2):
        store.append(block, {("a", str(block.height)): b"v"})
    store.meta_set("k", b"v")

    store.reset()

    assert _snapshot(store) == (-1, [], [], None)
    assert store.meta_get("k") is None
    assert _tx_count(store.path) == 0
    store.append(_chain(1)[0], {})
    assert store.height() == 0


def test_meta_get_set(store: ChainStore) -> None:
    store.meta_set("a", b"1")
    store.meta_set("a", b"2")

    assert store.meta_get("a") == b"2"
    assert store.meta_get("b") is None
    with pytest.raises(StoreError):
        store.meta_set("a", "text")  # type: ignore[arg-type]


def test_corrupt_stored_block_raises_store_error(store: ChainStore) -> None:
    store.append(_chain(1)[0], {})
    store._db.execute("UPDATE blocks SET data = ? WHERE height = 0", (b"\x93garbage",))

    with pytest.raises(StoreError, match="corrupt"):
        store.block(0)
    assert store.block_bytes(0) == b"\x93garbage"


def test_open_store_and_open_blobs_share_the_node_dir(tmp_path: Path) -> None:
    node_dir = tmp_path / "nodes" / "n1"
    with open_store(node_dir) as store:
        store.append(_chain(1)[0], {})
    blobs = open_blobs(node_dir)
    blobs.put(b"weights")

    assert (node_dir / "ledger.sqlite").is_file()
    assert (node_dir / "blobs").is_dir()
    with open_store(node_dir) as store:
        assert store.height() == 0


def test_concurrent_appenders_from_threads_never_interleave(store: ChainStore) -> None:
    chain = _chain(30, n_txs=1)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                height = store.height() + 1
            if height >= len(chain):
                return
            try:
                store.append(chain[height], {("c", "n"): str(height).encode()})
            except StoreError:
                continue  # another thread won this height
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert list(store.blocks()) == chain
    assert store.state_get("c", "n") == b"29"


WRITE = st.tuples(
    st.sampled_from(["a", "b", "ns"]),
    st.sampled_from(["k", "l", "ü", ""]),
    st.none() | st.binary(max_size=8),
)


@settings(derandomize=True, database=None, deadline=None, max_examples=30)
@given(st.lists(st.lists(WRITE, max_size=5), min_size=1, max_size=5))
def test_state_matches_a_dict_model(batches: list[list[tuple[str, str, bytes | None]]]) -> None:
    model: dict[tuple[str, str], bytes] = {}
    chain = _chain(len(batches), n_txs=0)
    with tempfile.TemporaryDirectory() as tmp, ChainStore(Path(tmp) / "l.sqlite") as store:
        for block, batch in zip(chain, batches, strict=True):
            writes = {(ns, k): v for ns, k, v in batch}
            store.append(block, writes)
            for k, v in writes.items():
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
            assert store.state_rows() == sorted((ns, k, v) for (ns, k), v in model.items())


# -- a real crash test: kill -9 a writer process at many points ------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from node.keys import NodeKey
    from node.core.block import ZERO_HASH, Block, BlockHeader, CommitSignature
    from node.core.encoding import canonical, sha256
    from node.core.merkle import merkle_root
    from node.ledger.store import ChainStore
    from node.core.tx import Transaction

    path, run, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4]
    deferred = mode != "sync"
    proposer = NodeKey.from_seed(b"p" * 32)
    senders = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
    store = ChainStore(path)
    store.set_deferred(deferred, thread=mode == "deferred")
    while True:
        head = store.head()
        height = 0 if head is None else head.height + 1
        if height >= limit:
            break
        txs = tuple(
            Transaction.create(
                senders[i % 4], "task.record_update", height * 20 + i,
                {"height": height, "i": i, "run": run, "blob": sha256(bytes([i]) * 8)},
            )
            for i in range(20)
        )
        writes = {
            ("chain", "counter"): str(height).encode(),
            ("runs", str(run)): str(height).encode(),
            ("acc", f"k{height % 5}"): sha256(str(height).encode()),
            ("acc", f"k{(height + 2) % 5}"): None,
        }
        state = {(ns, k): v for ns, k, v in store.state_rows()}
        for k, v in writes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        state_root = sha256(canonical(sorted([ns, k, v] for (ns, k), v in state.items())))
        header = BlockHeader(
            height, ZERO_HASH if head is None else head.hash, 1_000 * height,
            proposer.public_key, merkle_root([tx.hash for tx in txs]), state_root,
        )
        block = Block(header, txs)
        block = block.with_certificate([CommitSignature.create(proposer, block.hash)])
        print(f"begin {height}", flush=True)
        store.append(block, writes)
        if mode == "idle" and height % 3 == 0:  # the host found time to write
            store.write_pending()
        if deferred:  # appended in memory; what the database holds so far
            print(f"durable {store.durable_height()}", flush=True)
        else:
            print(f"committed {height}", flush=True)
    """
)


def _state_root(rows: list[tuple[str, str, bytes]]) -> bytes:
    return sha256(canonical(sorted([ns, k, v] for ns, k, v in rows)))


def _check_chain(path: Path, at_least: int) -> int:
    """Reopen the store and check that it is whole; returns its height."""
    with ChainStore(path) as store:
        height = store.height()
        assert height >= at_least
        prev_hash = ZERO_HASH
        for expected, block in enumerate(store.blocks()):
            assert block.height == expected
            assert block.header.prev_hash == prev_hash
            assert block.computed_merkle_root() == block.header.merkle_root
            assert len(block.txs) == 20
            assert all(sig.verify(block.hash) for sig in block.certificate)
            assert store.tx_location(block.txs[-1].hash) == (expected, 19)
            prev_hash = block.hash
        assert expected == height
        assert store.meta_get("head_hash") == prev_hash
        assert store.state_get("chain", "counter") == str(height).encode()
        head = store.head()
        assert head is not None
        assert head.header.state_root == _state_root(store.state_rows())
    assert _tx_count(path) == 20 * (height + 1)
    return height


def _spin(microseconds: int) -> None:
    """Busy-wait a few microseconds to move the kill point inside an append (not a sleep)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("mode", ["sync", "deferred", "idle"])
def test_kill_9_at_random_points_never_leaves_a_half_written_block(
    tmp_path: Path, mode: str
) -> None:
    """Each writer runs on the store its killed predecessors left; half the kills land
    within microseconds of the writer announcing an append, i.e. inside the transaction.
    Deferred: the writer thread stores batches behind the appends; a kill loses at most the
    blocks not yet written, never what the store reported durable, never part of a block."""
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    db = tmp_path / "ledger.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rng = random.Random(20240611)
    height = -1
    kill_points = 40
    for run in range(kill_points):
        committed_lines = rng.randint(1, 6)
        in_append = run % 2 == 1
        spin_us = rng.randint(0, 600) if in_append else rng.choice([0, rng.randint(1, 2000)])
        child = subprocess.Popen(
            [sys.executable, str(script), str(db), str(run), "100000", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
        )
        watchdog = threading.Timer(60, child.kill)
        watchdog.start()
        reported = height
        try:
            assert child.stdout is not None
            while committed_lines:
                line = child.stdout.readline().decode()
                if not line:
                    child.wait()
                    stderr = child.stderr.read().decode() if child.stderr else ""
                    pytest.fail(f"writer {run} stopped early:\n{stderr}")
                event, value = line.split()
                if event == "committed":
                    assert int(value) == reported + 1
                    reported = int(value)
                    committed_lines -= 1
                elif event == "durable":
                    assert int(value) >= reported
                    if int(value) > reported:  # counted once the database holds more: each
                        reported = int(value)  # run then leaves at least one block more,
                        committed_lines -= 1  # however far the writer lags behind the appends
                elif in_append and committed_lines == 1:
                    committed_lines = 0  # the append of reported + 1 has just begun
            _spin(spin_us)
            child.kill()  # SIGKILL: no cleanup, no atexit, no flush
        finally:
            watchdog.cancel()
            child.kill()
            child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        assert child.returncode == -9
        height = _check_chain(db, at_least=reported)
    assert height >= kill_points
