"""`FileBlobStore.put_behind`: the write-behind put the round's critical path uses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from node.core.encoding import sha256
from node.ledger import blobs as blobs_module
from node.ledger.blobs import TEMP_PREFIX, BlobError, FileBlobStore, MemoryBlobStore


def test_put_behind_is_in_place_at_once_and_fsynced_by_flush(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    blobs = {sha256(bytes([i]) * 1000): bytes([i]) * 1000 for i in range(20)}
    for key, data in blobs.items():
        store.put_behind(key, data)
        # already under its final name: a process killed now (kill -9) has it on restart
        assert store.path_for(key).read_bytes() == data
        assert store.has(key) and store.get(key) == data and store.size(key) == len(data)
    reopened = FileBlobStore(tmp_path / "blobs")  # what a restarted node finds
    assert sorted(reopened.keys()) == sorted(blobs)
    assert all(reopened.get(key) == data for key, data in blobs.items())
    assert store.flush(30.0)
    store.put_behind(next(iter(blobs)), b"ignored: that key is stored already")
    assert store.flush(30.0)
    assert all(store.get(key) == data for key, data in blobs.items())
    assert not list((tmp_path / "blobs").glob("*/.tmp-*")), "no temp file left"


def test_put_behind_takes_the_callers_hash_and_checks_the_form(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    with pytest.raises(BlobError):
        store.put_behind(b"short", b"data")
    with pytest.raises(BlobError):
        store.put_behind(sha256(b"data"), "data")  # type: ignore[arg-type]
    # the key is the caller's (it hashed the bytes where it made or checked them); a wrong
    # one is caught when the blob is read back from disk, like any corrupt file
    wrong = sha256(b"other")
    store.put_behind(wrong, b"data")
    assert store.flush(30.0)
    assert FileBlobStore(tmp_path / "blobs").get(wrong) is None


def test_flush_without_writes_and_the_memory_store() -> None:
    memory = MemoryBlobStore()
    key = sha256(b"m")
    memory.put_behind(key, b"m")
    assert memory.get(key) == b"m" and memory.flush(0.0)


def test_put_behind_recreates_a_directory_removed_behind_its_back(tmp_path: Path) -> None:
    """The store remembers the directories it made; one removed since is made again."""
    store = FileBlobStore(tmp_path / "blobs")
    key = sha256(b"first")
    store.put_behind(key, b"first")
    assert store.flush(30.0)
    shutil.rmtree(store.path_for(key).parent)
    assert not store.has(key)
    store.put_behind(key, b"first")
    assert store.get(key) == b"first" and store.flush(30.0)


def test_put_behind_skips_a_temp_name_left_by_a_dead_process(tmp_path: Path) -> None:
    """Temp names are the pid and a counter: a file of that name (from a dead process that
    had the same pid) is skipped, not overwritten or failed on; the sweep removes it."""
    store = FileBlobStore(tmp_path / "blobs")
    key = sha256(b"blob")
    directory = store.path_for(key).parent
    directory.mkdir(parents=True)
    upcoming = next(blobs_module._temp_names) + 1
    stale = directory / f"{TEMP_PREFIX}{os.getpid()}-{upcoming}"
    stale.write_bytes(b"left by a crash")
    store.put_behind(key, b"blob")
    assert store.get(key) == b"blob" and stale.read_bytes() == b"left by a crash"
    assert store.flush(30.0)
    FileBlobStore(tmp_path / "blobs")  # opening sweeps temp files
    assert not stale.exists() and store.get(key) == b"blob"


def test_flush_waits_for_every_blob_queued_before_it(tmp_path: Path) -> None:
    """The writer thread takes what is queued in batches; a flush still returns only once
    every earlier put_behind is synced (and a flush from a later batch too)."""
    store = FileBlobStore(tmp_path / "blobs")
    for i in range(50):
        store.put_behind(sha256(bytes([i])), bytes([i]))
        if i % 10 == 0:
            assert store.flush(30.0)
    assert store.flush(30.0) and store._fsyncs.empty()
