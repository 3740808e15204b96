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
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from node.ledger.blobs import FileBlobStore, open_blobs
from node.ledger.block import Block, BlockError

__all__ = ["ChainStore", "FileBlobStore", "StoreError", "open_blobs", "open_store"]

logger = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
DB_NAME = "ledger.sqlite"
HEAD_HASH_KEY = "head_hash"

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


class ChainStore:
    """A node's chain on disk; thread-safe, one writer at a time."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA busy_timeout=5000")
            journal = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(journal).lower() != "wal":
                raise StoreError(f"could not enable WAL on {self.path} (got {journal})")
            self._conn.execute(f"PRAGMA synchronous={mode}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._transaction(_create_schema)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
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
        """Close the database; further calls raise StoreError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------

    def height(self) -> int:
        """The height of the head block; -1 if the store is empty."""
        with self._lock:
            return _height(self._db)

    def block_bytes(self, height: int) -> bytes | None:
        """The stored bytes of the block at `height`, or None."""
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
        with self._lock:
            row = self._db.execute(
                "SELECT height, idx FROM txs WHERE hash = ?", (tx_hash,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def state_get(self, ns: str, key: str) -> bytes | None:
        """One state value, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE ns = ? AND key = ?", (ns, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def state_rows(self) -> list[tuple[str, str, bytes]]:
        """Every state row as (ns, key, value), sorted by (ns, key)."""
        with self._lock:
            rows = self._db.execute("SELECT ns, key, value FROM state").fetchall()
        return sorted((str(ns), str(key), bytes(value)) for ns, key, value in rows)

    def meta_get(self, key: str) -> bytes | None:
        """A metadata value, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- writes ---------------------------------------------------------------------------

    def meta_set(self, key: str, value: bytes) -> None:
        """Set a metadata value."""
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise StoreError("meta keys are str and values bytes")
        self._transaction(lambda conn: _set_meta(conn, key, value))

    def append(self, block: Block, state_writes: Mapping[tuple[str, str], bytes | None]) -> None:
        """Store `block` as the new head with its state writes, all or nothing."""

        def body(conn: sqlite3.Connection) -> None:
            expected = _height(conn) + 1
            if block.height != expected:
                raise StoreError(f"block at height {block.height}, expected {expected}")
            self._insert_block(conn, block, data)
            self._insert_txs(conn, block)
            self._apply_state(conn, state_writes)
            _set_meta(conn, HEAD_HASH_KEY, block.hash)

        data = block.to_bytes()
        self._transaction(body)
        logger.debug("appended block %d (%s)", block.height, block.hash.hex()[:16])

    def reset(self) -> None:
        """Delete every block, transaction, state row and metadata value."""

        def body(conn: sqlite3.Connection) -> None:
            for table in ("txs", "blocks", "state", "meta"):
                conn.execute(f"DELETE FROM {table}")

        self._transaction(body)
        logger.info("reset chain store %s", self.path)

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
        for (ns, key), value in writes.items():
            if not isinstance(ns, str) or not isinstance(key, str):
                raise StoreError(f"state key ({ns!r}, {key!r}) must be two strings")
            if value is None:
                conn.execute("DELETE FROM state WHERE ns = ? AND key = ?", (ns, key))
            elif isinstance(value, bytes):
                conn.execute(
                    "INSERT INTO state (ns, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                    (ns, key, value),
                )
            else:
                raise StoreError(f"state value for ({ns!r}, {key!r}) must be bytes or None")


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
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def open_store(node_dir: Path, synchronous: str = "NORMAL") -> ChainStore:
    """The node's chain store at node_dir/ledger.sqlite (the directory is created)."""
    node_dir = Path(node_dir)
    node_dir.mkdir(parents=True, exist_ok=True)
    return ChainStore(node_dir / DB_NAME, synchronous=synchronous)
