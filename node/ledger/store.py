"""The persistent chain store: blocks, a transaction index, contract state and metadata.

How it works: one SQLite database in WAL mode per node. ``blocks`` holds each block's
canonical bytes by height, ``txs`` maps a transaction hash to (height, index), ``state``
holds the contract state as (namespace, key) -> bytes, and ``meta`` holds small values such
as ``head_hash``. The connection runs in autocommit mode (isolation_level=None) and every
write is an explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``: `append` writes a block, its
transactions, its state writes and the new head in one transaction, so a crash or an error
at any point leaves either the whole block or none of it (ROLLBACK on any exception). The
store does not check blocks semantically; the chain module does that before `append`.
With synchronous=NORMAL a commit survives a process crash; FULL also survives power loss.

Deferred writes (`deferred=True` or `set_deferred`, used by PBFT validators): `append`
returns once the block is in an in-memory overlay, and pending blocks are stored in order,
up to BATCH_BLOCKS per SQLite transaction, either by a writer thread on its own connection
or, with `set_deferred(True, thread=False)`, by the host calling `write_pending` when idle
(one thread: no GIL hand-offs, which cost scheduler latency on a loaded machine). Every read
(`height`, `block_bytes`, `tx_location`, `state_get`, `state_rows`, `meta_get(head_hash)`…)
looks at the overlay first, so callers see no difference; an overlay entry is dropped only
after its transaction committed. `durable_height()` is what the database holds and
`flush()` waits for the writer (`close()` flushes, and so does interpreter exit). A
kill -9 loses at most the blocks not yet written, never part of one: each batch is one
transaction, so the reopened store is a verifiable chain at its durable height, and a PBFT
replica fills the gap from its peers (they committed those blocks too). A failed write is
kept and raised by the next `append`/`flush`.

Block storage time (`storage_time_ms`, the two-layer paper's unit t; `node.ledger.storage_time`):
every append above genesis takes at least that long (the wait is part of the append: in
immediate mode inside its transaction, just before COMMIT; in deferred mode before the block
enters the overlay), and records when the block was proposed, received, validated and stored
as a ``block_times`` row written with the block. 0 (the default) waits for nothing. A node
that knows when a block was proposed and certified better than its header says (a PoW
miner) records it with `record_proposal` (``block_proposals``, by block hash).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from node.core.block import Block, BlockError
from node.ledger.blobs import FileBlobStore, open_blobs
from node.ledger.storage_time import (
    BLOCK_PROPOSALS_SCHEMA,
    BLOCK_PROPOSALS_SELECT,
    BLOCK_PROPOSALS_UPSERT,
    BLOCK_TIMES_INSERT,
    BLOCK_TIMES_SCHEMA,
    BLOCK_TIMES_SELECT,
    REAL_CLOCK,
    BlockTime,
    StorageClock,
    check_storage_time,
)

__all__ = ["ChainStore", "FileBlobStore", "StoreError", "open_blobs", "open_store"]

logger = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
DB_NAME = "ledger.sqlite"
HEAD_HASH_KEY = "head_hash"
BATCH_BLOCKS = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL REFERENCES blocks(height),
    idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB
);
"""

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store refused an operation (wrong height, bad write) or holds corrupt data."""


@dataclass(frozen=True)
class _Pending:
    """A block appended but not yet written (deferred mode)."""

    block: Block
    data: bytes
    state_writes: tuple[tuple[tuple[str, str], bytes | None], ...]
    tx_rows: tuple[tuple[bytes, int, int], ...]
    time: BlockTime | None = None


class ChainStore:
    """A node's chain on disk; thread-safe, one writer at a time."""

    def __init__(
        self,
        path: Path,
        synchronous: str = "NORMAL",
        deferred: bool = False,
        storage_time_ms: float = 0.0,
        clock: StorageClock = REAL_CLOCK,
        cache_kib: int | None = None,
    ) -> None:
        """`storage_time_ms`: the least time an append of a block above genesis takes (the
        emulated block storage time t; 0: no wait). `clock`: what appends are timed with.
        `cache_kib`: SQLite's page cache per connection (None: SQLite's default, 2 MiB), for
        a store that is mostly written (a light replica's)."""
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.storage_time_ms = check_storage_time(storage_time_ms)
        self.clock = clock
        self.path = Path(path)
        self.synchronous = mode
        self.cache_kib = cache_kib
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = _connect(self.path, mode, cache_kib)
        try:
            self._transaction(_create_schema)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        # deferred writes: the overlay (guarded by _cv) and the writer thread
        self._cv = threading.Condition(threading.Lock())
        self._pending: list[_Pending] = []
        self._p_blocks: dict[int, tuple[bytes, bytes]] = {}
        self._p_txs: dict[bytes, tuple[int, int]] = {}
        self._p_state: dict[tuple[str, str], tuple[int, bytes | None]] = {}
        self._writing = 0  # blocks taken by the writer, not yet committed
        self._write_error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._closing = False
        self._at_exit = False
        self.deferred = False
        self.batches = 0
        self.from_template = False  # set by open_store: copied from a template just now
        if deferred:
            self.set_deferred(True)
        logger.debug("opened chain store %s at height %d", self.path, self.height())

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the chain store is closed")
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body` in one BEGIN IMMEDIATE ... COMMIT; ROLLBACK and re-raise on error."""
        with self._lock:
            conn = self._db
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    def close(self) -> None:
        """Write what is pending, stop the writer and close the database; further calls raise
        StoreError. A write error is logged here (`flush` raises it)."""
        if self.deferred and self._conn is not None:
            try:
                self.flush()
            except StoreError as exc:
                logger.error("chain store %s: pending blocks not written: %s", self.path, exc)
        self._stop_writer()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- deferred writes ------------------------------------------------------------------

    def set_deferred(self, on: bool, thread: bool = True) -> None:
        """Switch deferred writes on or off (what is pending is written first). With
        `thread`, a writer thread stores pending blocks; without, the host calls
        `write_pending` when it is idle: no second Python thread to hand the GIL to and
        from, which costs scheduler latency on a loaded machine."""
        if self.deferred:
            self.flush()
            self._stop_writer()
        self.deferred = on
        if not on:
            return
        if thread:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"ledger-writer:{self.path.parent.name}", daemon=True
            )
            self._writer.start()
        if not self._at_exit:
            self._at_exit = True
            atexit.register(_close_at_exit, weakref.ref(self))

    def _stop_writer(self) -> None:
        if self._writer is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._writer.join()
        self._writer = None
        self._closing = False

    def write_pending(self, max_blocks: int = BATCH_BLOCKS) -> int:
        """Without a writer thread: write up to `max_blocks` pending blocks now, in one
        transaction; returns how many (0 with a writer thread). Raises StoreError if the
        write fails (then every later append and flush does too)."""
        if self._writer is not None:
            return 0
        with self._cv:
            if self._write_error is not None:
                raise StoreError(f"deferred write failed: {self._write_error}")
            batch = self._pending[:max_blocks]
            if not batch:
                return 0
            self._writing = len(batch)
        try:
            with self._lock:
                _write_batch(self._db, batch)
        except BaseException as exc:
            with self._cv:
                self._write_error = exc
                self._writing = 0
                self._cv.notify_all()
            raise StoreError(f"deferred write failed: {exc}") from exc
        with self._cv:
            self._settle(batch)
            self.batches += 1
            self._cv.notify_all()
        return len(batch)

    def durable_height(self) -> int:
        """The height of the head block in the database (what survives a kill -9)."""
        with self._lock:
            return _height(self._db)

    def pending_blocks(self) -> int:
        """Blocks appended but not yet written."""
        with self._cv:
            return len(self._pending)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every appended block is written (without a writer thread: write them
        now); raises StoreError if a write failed or `timeout_s` passed first."""
        if self._writer is None:
            while self.write_pending():
                pass
        with self._cv:
            done = self._cv.wait_for(
                lambda: not self._pending or self._write_error is not None, timeout_s
            )
            if self._write_error is not None:
                raise StoreError(f"deferred write failed: {self._write_error}")
            if not done:
                raise StoreError(f"{len(self._pending)} blocks still pending after {timeout_s} s")

    def _write_loop(self) -> None:
        """The writer thread: store pending blocks in order, a batch per transaction."""
        conn = _connect(self.path, self.synchronous, self.cache_kib)
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: len(self._pending) > self._writing or self._closing)
                    if self._closing and len(self._pending) <= self._writing:
                        return
                    batch = self._pending[:BATCH_BLOCKS]
                    self._writing = len(batch)
                try:
                    _write_batch(conn, batch)
                except BaseException as exc:  # kept; the next append/flush raises it
                    logger.error("chain store %s: writing blocks failed: %s", self.path, exc)
                    with self._cv:
                        self._write_error = exc
                        self._writing = 0
                        self._cv.notify_all()
                    return
                with self._cv:
                    self._settle(batch)
                    self.batches += 1
                    self._cv.notify_all()
        finally:
            conn.close()

    def _settle(self, batch: list[_Pending]) -> None:
        """Drop a committed batch from the overlay (caller holds _cv)."""
        del self._pending[: len(batch)]
        self._writing = 0
        top = batch[-1].block.height
        for p in batch:
            self._p_blocks.pop(p.block.height, None)
            for tx in p.block.txs:
                if self._p_txs.get(tx.hash, (top + 1,))[0] <= top:
                    del self._p_txs[tx.hash]
        self._p_state = {k: v for k, v in self._p_state.items() if v[0] > top}

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------

    def height(self) -> int:
        """The height of the head block (written or pending); -1 if the store is empty."""
        with self._cv:
            if self._pending:
                return self._pending[-1].block.height
        return self.durable_height()

    def block_bytes(self, height: int) -> bytes | None:
        """The stored bytes of the block at `height`, or None."""
        with self._cv:
            pending = self._p_blocks.get(height)
        if pending is not None:
            return pending[1]
        with self._lock:
            row = self._db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def block(self, height: int) -> Block | None:
        """The block at `height`, or None; raises StoreError if its bytes do not parse."""
        data = self.block_bytes(height)
        if data is None:
            return None
        try:
            return Block.from_bytes(data)
        except BlockError as exc:
            raise StoreError(f"stored block {height} is corrupt: {exc}") from exc

    def stored_hash(self, height: int) -> bytes | None:
        """The ``blocks.hash`` column at `height` (written by `append`), or None."""
        with self._cv:
            pending = self._p_blocks.get(height)
        if pending is not None:
            return pending[0]
        with self._lock:
            row = self._db.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def head(self) -> Block | None:
        """The highest block, or None if the store is empty."""
        height = self.height()
        return None if height < 0 else self.block(height)

    def blocks(self, start: int = 0) -> Iterator[Block]:
        """Blocks from `start` up to the head, in order."""
        height = max(start, 0)
        while (block := self.block(height)) is not None:
            yield block
            height += 1

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index) of the transaction with `tx_hash`, or None."""
        with self._cv:
            pending = self._p_txs.get(tx_hash)
        if pending is not None:
            return pending
        with self._lock:
            row = self._db.execute(
                "SELECT height, idx FROM txs WHERE hash = ?", (tx_hash,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def state_get(self, ns: str, key: str) -> bytes | None:
        """One state value, or None."""
        with self._cv:
            pending = self._p_state.get((ns, key))
        if pending is not None:
            return pending[1]
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE ns = ? AND key = ?", (ns, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def state_rows(self) -> list[tuple[str, str, bytes]]:
        """Every state row as (ns, key, value), sorted by (ns, key)."""
        with self._cv:  # taken before the read: the database can only catch up with it
            overlay = dict(self._p_state)
        with self._lock:
            rows = self._db.execute("SELECT ns, key, value FROM state").fetchall()
        merged = {(str(ns), str(key)): bytes(value) for ns, key, value in rows}
        for k, (_, value) in overlay.items():
            if value is None:
                merged.pop(k, None)
            else:
                merged[k] = value
        return sorted((ns, key, value) for (ns, key), value in merged.items())

    def block_times(self, start: int = 0) -> list[BlockTime]:
        """The timing rows of the blocks from height `start` on (written or pending), by
        height (none for genesis, nor for blocks a store of an earlier version wrote)."""
        with self._cv:  # taken before the read: the database can only catch up with it
            pending = [p.time for p in self._pending if p.time is not None]
        with self._lock:
            rows = self._db.execute(
                BLOCK_TIMES_SELECT + " WHERE height >= ? ORDER BY height", (start,)
            ).fetchall()
        merged = {t.height: t for t in map(BlockTime.from_row, rows)}
        merged.update((t.height, t) for t in pending if t.height >= start)
        return [merged[h] for h in sorted(merged)]

    def proposals(self) -> dict[bytes, tuple[int, float, float]]:
        """The proposals this node recorded (`record_proposal`): block hash -> (height,
        proposed_ms, certified_ms)."""
        with self._lock:
            rows = self._db.execute(BLOCK_PROPOSALS_SELECT).fetchall()
        return {bytes(h): (int(n), float(p), float(c)) for h, n, p, c in rows}

    def meta_get(self, key: str) -> bytes | None:
        """A metadata value, or None."""
        if key == HEAD_HASH_KEY:
            with self._cv:
                if self._pending:
                    return self._pending[-1].block.hash
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- writes ---------------------------------------------------------------------------

    def meta_set(self, key: str, value: bytes) -> None:
        """Set a metadata value."""
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise StoreError("meta keys are str and values bytes")
        self.flush()
        self._transaction(lambda conn: _set_meta(conn, key, value))

    def record_proposal(
        self, block_hash: bytes, height: int, proposed_ms: float, certified_ms: float
    ) -> None:
        """Record, durably, when this node proposed the block `block_hash` and when it became
        final (wall-clock ms), where its header's timestamp does not say (a PoW miner: when
        it started mining it and when it found it). The block need not be stored (yet, or
        ever: a block that lost a fork race)."""
        if not isinstance(block_hash, bytes) or len(block_hash) != 32:
            raise StoreError("a proposal's block hash is 32 bytes")
        row = (block_hash, int(height), float(proposed_ms), float(certified_ms))
        self._transaction(lambda conn: conn.execute(BLOCK_PROPOSALS_UPSERT, row))

    def append(
        self,
        block: Block,
        state_writes: Mapping[tuple[str, str], bytes | None],
        received_ms: float | None = None,
    ) -> None:
        """Store `block` as the new head with its state writes, all or nothing (deferred: in
        the overlay now, in the database when the writer gets to it). Above genesis the
        append takes at least `storage_time_ms` and records a `BlockTime` (`received_ms`:
        when the node received the block, wall-clock ms; None: now)."""
        clock = self.clock
        started = clock.monotonic()
        validated_ms = clock.wall_ms()
        data = block.to_bytes()

        def stored() -> BlockTime | None:
            """Wait out the storage time; the block's timing row (None for genesis)."""
            if block.height <= 0:
                return None
            clock.wait_until(started + self.storage_time_ms / 1000.0)
            stored_ms = clock.wall_ms()
            return BlockTime(
                height=block.height,
                proposed_ms=block.header.timestamp_ms,
                received_ms=validated_ms if received_ms is None else float(received_ms),
                validated_ms=validated_ms,
                stored_ms=stored_ms,
                storage_ms=(clock.monotonic() - started) * 1000.0,
                t_ms=self.storage_time_ms,
            )

        if self.deferred:
            rows = tuple((tx.hash, block.height, idx) for idx, tx in enumerate(block.txs))
            writes = _check_writes(state_writes)
            self._append_deferred(_Pending(block, data, writes, rows, stored()))
            return

        def body(conn: sqlite3.Connection) -> None:
            _write_block(conn, block, data, state_writes)
            timing = stored()
            if timing is not None:
                conn.execute(BLOCK_TIMES_INSERT, timing.row())

        self._transaction(body)
        logger.debug("appended block %d (%s)", block.height, block.hash.hex()[:16])

    @staticmethod
    def _insert_block(conn: sqlite3.Connection, block: Block, data: bytes) -> None:
        conn.execute(
            "INSERT INTO blocks (height, hash, data) VALUES (?, ?, ?)",
            (block.height, block.hash, data),
        )

    @staticmethod
    def _insert_txs(conn: sqlite3.Connection, block: Block) -> None:
        conn.executemany(
            "INSERT INTO txs (hash, height, idx) VALUES (?, ?, ?)",
            [(tx.hash, block.height, idx) for idx, tx in enumerate(block.txs)],
        )

    @staticmethod
    def _apply_state(
        conn: sqlite3.Connection, writes: Mapping[tuple[str, str], bytes | None]
    ) -> None:
        checked = _check_writes(writes)  # distinct keys: the order of the two kinds is free
        deletes = [k for k, value in checked if value is None]
        upserts = [(ns, key, value) for (ns, key), value in checked if value is not None]
        if deletes:
            conn.executemany("DELETE FROM state WHERE ns = ? AND key = ?", deletes)
        if upserts:
            conn.executemany(
                "INSERT INTO state (ns, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                upserts,
            )

    def _append_deferred(self, p: _Pending) -> None:
        height = p.block.height
        with self._cv:
            if self._write_error is not None:
                raise StoreError(f"deferred write failed: {self._write_error}")
            top = self._pending[-1].block.height if self._pending else None
        expected = (top if top is not None else self.durable_height()) + 1
        if height != expected:
            raise StoreError(f"block at height {height}, expected {expected}")
        with self._cv:
            self._pending.append(p)
            self._p_blocks[height] = (p.block.hash, p.data)
            for idx, tx in enumerate(p.block.txs):
                self._p_txs[tx.hash] = (height, idx)
            for k, value in p.state_writes:
                self._p_state[k] = (height, value)
            self._cv.notify_all()
        logger.debug("appended block %d (%s), write deferred", height, p.block.hash.hex()[:16])

    def reset(self) -> None:
        """Delete every block, transaction, state row and metadata value."""
        self.flush()

        def body(conn: sqlite3.Connection) -> None:
            for table in ("block_times", "block_proposals", "txs", "blocks", "state", "meta"):
                conn.execute(f"DELETE FROM {table}")

        self._transaction(body)
        logger.info("reset chain store %s", self.path)


def _connect(path: Path, synchronous: str, cache_kib: int | None = None) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL, `synchronous` and foreign keys on, and a
    page cache of `cache_kib` (None: SQLite's default)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        journal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(journal).lower() != "wal":
            raise StoreError(f"could not enable WAL on {path} (got {journal})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB, not pages
    except BaseException:
        conn.close()
        raise
    return conn


def _check_writes(
    writes: Mapping[tuple[str, str], bytes | None],
) -> tuple[tuple[tuple[str, str], bytes | None], ...]:
    """The state writes as a tuple; raises StoreError on a wrong key or value type."""
    for (ns, key), value in writes.items():
        if not isinstance(ns, str) or not isinstance(key, str):
            raise StoreError(f"state key ({ns!r}, {key!r}) must be two strings")
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"state value for ({ns!r}, {key!r}) must be bytes or None")
    return tuple(writes.items())


def _write_block(
    conn: sqlite3.Connection,
    block: Block,
    data: bytes,
    writes: Mapping[tuple[str, str], bytes | None],
) -> None:
    """Insert `block` as the next head with its transactions and state writes (inside the
    caller's transaction)."""
    expected = _height(conn) + 1
    if block.height != expected:
        raise StoreError(f"block at height {block.height}, expected {expected}")
    ChainStore._insert_block(conn, block, data)
    ChainStore._insert_txs(conn, block)
    ChainStore._apply_state(conn, writes)
    _set_meta(conn, HEAD_HASH_KEY, block.hash)


def _write_batch(conn: sqlite3.Connection, batch: list[_Pending]) -> None:
    """Write pending blocks in one BEGIN IMMEDIATE ... COMMIT (all or none of them).

    A handful of `executemany` calls for the whole batch: the writer thread runs little
    Python, so it seldom holds the GIL the commit path needs."""
    blocks = [(p.block.height, p.block.hash, p.data) for p in batch]
    txs = [row for p in batch for row in p.tx_rows]
    state: dict[tuple[str, str], bytes | None] = {}
    for p in batch:
        state.update(p.state_writes)  # later blocks win
    deletes = [k for k, v in state.items() if v is None]
    upserts = [(ns, key, v) for (ns, key), v in state.items() if v is not None]
    conn.execute("BEGIN IMMEDIATE")
    try:
        expected = _height(conn) + 1
        if batch[0].block.height != expected:
            raise StoreError(f"block at height {batch[0].block.height}, expected {expected}")
        conn.executemany("INSERT INTO blocks (height, hash, data) VALUES (?, ?, ?)", blocks)
        conn.executemany("INSERT INTO txs (hash, height, idx) VALUES (?, ?, ?)", txs)
        conn.executemany("DELETE FROM state WHERE ns = ? AND key = ?", deletes)
        conn.executemany(
            "INSERT INTO state (ns, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            upserts,
        )
        conn.executemany(BLOCK_TIMES_INSERT, [p.time.row() for p in batch if p.time is not None])
        _set_meta(conn, HEAD_HASH_KEY, batch[-1].block.hash)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _close_at_exit(ref: weakref.ref[ChainStore]) -> None:
    """At interpreter exit, write what a still-open deferred store holds."""
    store = ref()
    if store is not None:
        store.close()


def _height(conn: sqlite3.Connection) -> int:
    """MAX(height) as seen by `conn`; -1 if empty."""
    row = conn.execute("SELECT MAX(height) FROM blocks").fetchone()
    return -1 if row[0] is None else int(row[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: bytes) -> None:
    """Upsert one meta row."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create missing tables, statement by statement (executescript would COMMIT)."""
    for statement in [*SCHEMA.split(";"), BLOCK_TIMES_SCHEMA, BLOCK_PROPOSALS_SCHEMA]:
        if statement.strip():
            conn.execute(statement)


def open_store(
    node_dir: Path,
    synchronous: str = "NORMAL",
    template: Path | None = None,
    storage_time_ms: float = 0.0,
    cache_kib: int | None = None,
) -> ChainStore:
    """The node's chain store at node_dir/ledger.sqlite (the directory is created). Where
    there is no store yet and `template` names a database (`write_template`), the store
    starts as a copy of it (`from_template` is then True). `storage_time_ms`: the emulated
    block storage time t, `cache_kib` the page cache (see `ChainStore`)."""
    node_dir = Path(node_dir)
    node_dir.mkdir(parents=True, exist_ok=True)
    path = node_dir / DB_NAME
    copied = False
    if template is not None and not path.exists():
        tmp = path.with_name(f"{DB_NAME}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        os.replace(tmp, path)  # whole or absent, whatever happens during the copy
        copied = True
    store = ChainStore(
        path, synchronous=synchronous, storage_time_ms=storage_time_ms, cache_kib=cache_kib
    )
    store.from_template = copied
    return store


def write_template(path: Path, fill: Callable[[ChainStore], None]) -> None:
    """Write a database at `path` that `fill(store)` filled (a run's genesis, once, for every
    node's `open_store(..., template=path)`), atomically: a reader sees all of it or none."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    store = ChainStore(tmp)
    try:
        fill(store)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    finally:
        store.close()
    for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(tmp, path)
