"""Deferred writes in node.ledger.store: reads see appended blocks at once, the database
catches up in order, one transaction per batch, and errors surface."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import node.ledger.store as store_mod
from node.core.block import Block
from node.ledger.store import ChainStore, StoreError
from tests.unit.test_ledger_store import _chain, _snapshot

WAIT_S = 60.0  # generous: the machine may be loaded


class Gate:
    """Holds the writer thread inside `_write_batch` until released; records batches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[int]] = []
        original = store_mod._write_batch

        def gated(conn: sqlite3.Connection, batch: list[store_mod._Pending]) -> None:
            self.entered.set()
            assert self.release.wait(WAIT_S), "test never released the writer"
            self.batches.append([p.block.height for p in batch])
            original(conn, batch)

        monkeypatch.setattr(store_mod, "_write_batch", gated)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def sync_store(tmp_path: Path) -> Iterator[ChainStore]:
    s = ChainStore(tmp_path / "sync.sqlite")
    yield s
    s.close()


def _fill(store: ChainStore, n: int, gate: Gate | None = None) -> list[Block]:
    """Append n blocks; with `gate`, the rest only once the writer holds block 0."""
    chain = _chain(n)
    for i, block in enumerate(chain):
        store.append(block, {("c", "n"): str(i).encode(), ("c", f"k{i}"): b"v"})
        if gate is not None and i == 0:
            assert gate.entered.wait(WAIT_S)
    return chain


def test_reads_see_pending_blocks_before_they_are_written(
    path: Path, sync_store: ChainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    store = ChainStore(path, deferred=True)
    try:
        chain = _fill(store, 4, gate)  # the writer holds block 0, the rest queue up
        _fill(sync_store, 4)

        assert store.durable_height() == -1
        assert store.pending_blocks() == 4
        assert _snapshot(store) == _snapshot(sync_store)
        assert store.tx_location(chain[3].txs[2].hash) == (3, 2)
        assert store.stored_hash(2) == chain[2].hash
        assert store.state_get("c", "n") == b"3"
        assert list(store.blocks()) == chain

        gate.release.set()
        store.flush(WAIT_S)
        assert store.durable_height() == 3 and store.pending_blocks() == 0
        assert _snapshot(store) == _snapshot(sync_store)
        assert gate.batches == [[0], [1, 2, 3]]  # what queued during a write goes in one batch
    finally:
        gate.release.set()
        store.close()
    with ChainStore(path) as reopened:
        assert _snapshot(reopened) == _snapshot(sync_store)


def test_deletes_and_overwrites_in_the_overlay(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(monkeypatch)
    store = ChainStore(path, deferred=True)
    try:
        a, b, c = _chain(3)
        store.append(a, {("s", "x"): b"1", ("s", "y"): b"1"})
        assert gate.entered.wait(WAIT_S)
        store.append(b, {("s", "x"): None})
        store.append(c, {("s", "y"): b"3"})
        assert store.state_get("s", "x") is None
        assert store.state_rows() == [("s", "y", b"3")]
        gate.release.set()
        store.flush(WAIT_S)
        assert store.state_rows() == [("s", "y", b"3")]
    finally:
        gate.release.set()
        store.close()


def test_wrong_height_is_refused_at_append(path: Path) -> None:
    chain = _chain(3)
    with ChainStore(path, deferred=True) as store:
        store.append(chain[0], {})
        with pytest.raises(StoreError, match="expected 1"):
            store.append(chain[2], {})
        with pytest.raises(StoreError, match="must be bytes"):
            store.append(chain[1], {("a", "b"): "text"})  # type: ignore[dict-item]
        store.append(chain[1], {})
        store.flush(WAIT_S)
        assert store.durable_height() == 1


def test_a_failed_write_is_raised_by_flush_and_the_next_append(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sqlite3.Connection, batch: list[store_mod._Pending]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_mod, "_write_batch", broken)
    chain = _chain(2)
    store = ChainStore(path, deferred=True)
    try:
        store.append(chain[0], {})
        with pytest.raises(StoreError, match="disk I/O error"):
            store.flush(WAIT_S)
        with pytest.raises(StoreError, match="deferred write failed"):
            store.append(chain[1], {})
    finally:
        store.close()  # logs, does not raise
    with ChainStore(path) as reopened:
        assert reopened.height() == -1


def test_switching_deferred_off_flushes(path: Path) -> None:
    chain = _chain(3)
    store = ChainStore(path)
    try:
        store.set_deferred(True)
        for block in chain[:2]:
            store.append(block, {})
        store.set_deferred(False)
        assert store.durable_height() == 1
        store.append(chain[2], {})  # synchronous again
        assert store.durable_height() == 2
        store.meta_set("k", b"v")
        assert store.meta_get("k") == b"v"
    finally:
        store.close()


def test_idle_mode_writes_only_when_the_host_asks(path: Path, sync_store: ChainStore) -> None:
    store = ChainStore(path)
    store.set_deferred(True, thread=False)
    try:
        chain = _fill(store, 5)
        _fill(sync_store, 5)
        assert store.durable_height() == -1 and store.pending_blocks() == 5
        assert _snapshot(store) == _snapshot(sync_store)

        assert store.write_pending(max_blocks=2) == 2
        assert store.durable_height() == 1 and store.pending_blocks() == 3
        assert _snapshot(store) == _snapshot(sync_store)
        assert store.tx_location(chain[4].txs[0].hash) == (4, 0)

        store.flush()
        assert store.durable_height() == 4 and store.write_pending() == 0
        assert store.batches == 2
    finally:
        store.close()
    with ChainStore(path) as reopened:
        assert _snapshot(reopened) == _snapshot(sync_store)


def test_idle_mode_write_error_is_kept(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: sqlite3.Connection, batch: list[store_mod._Pending]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store_mod, "_write_batch", broken)
    chain = _chain(2)
    store = ChainStore(path)
    store.set_deferred(True, thread=False)
    try:
        store.append(chain[0], {})
        with pytest.raises(StoreError, match="disk is full"):
            store.write_pending()
        with pytest.raises(StoreError, match="deferred write failed"):
            store.append(chain[1], {})
        assert store.height() == 0  # the in-memory view still has the block
    finally:
        store.close()


def test_close_writes_what_is_pending_in_both_modes(tmp_path: Path) -> None:
    chain = _chain(3)
    for thread in (True, False):
        path = tmp_path / f"t{thread}.sqlite"
        store = ChainStore(path)
        store.set_deferred(True, thread=thread)
        for block in chain:
            store.append(block, {})
        store.close()
        with ChainStore(path) as reopened:
            assert reopened.height() == 2
