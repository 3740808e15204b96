"""Unit tests for node.ledger.blobs: the content-addressed blob stores."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.ledger.blobs import (
    TEMP_PREFIX,
    BlobError,
    BlobStore,
    FileBlobStore,
    MemoryBlobStore,
    open_blobs,
)

Factory = Callable[[Path], BlobStore]
FACTORIES: dict[str, Factory] = {
    "file": lambda root: FileBlobStore(root / "blobs"),
    "memory": lambda root: MemoryBlobStore(),
}


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture(params=sorted(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each blob store implementation."""
    return FACTORIES[request.param](tmp_path)


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(FileBlobStore(tmp_path), BlobStore)
    assert isinstance(MemoryBlobStore(), BlobStore)


def test_put_get_has_size_keys(store: BlobStore) -> None:
    data = b"model weights" * 100
    missing = hashlib.sha256(b"nothing").digest()

    key = store.put(data)

    assert key == hashlib.sha256(data).digest()
    assert store.get(key) == data
    assert store.has(key)
    assert store.size(key) == len(data)
    assert list(store.keys()) == [key]
    assert store.get(missing) is None
    assert not store.has(missing)
    assert store.size(missing) is None


def test_put_is_idempotent_and_empty_blobs_work(store: BlobStore) -> None:
    assert store.put(b"x") == store.put(b"x")
    empty = store.put(b"")

    assert store.get(empty) == b""
    assert sorted(store.keys()) == sorted([empty, hashlib.sha256(b"x").digest()])


def test_put_verified_accepts_matching_and_rejects_wrong_hash(store: BlobStore) -> None:
    data = b"fetched from a peer"
    good = hashlib.sha256(data).digest()

    store.put_verified(good, data)
    with pytest.raises(BlobError):
        store.put_verified(hashlib.sha256(b"other").digest(), data)
    with pytest.raises(BlobError):
        store.put_verified(good[:31], data)

    assert store.get(good) == data
    assert list(store.keys()) == [good]


def test_malformed_keys_are_refused(store: BlobStore) -> None:
    for bad in (b"", b"\x00" * 31, b"\x00" * 33, "00" * 32):
        with pytest.raises(BlobError):
            store.get(bad)  # type: ignore[arg-type]
        with pytest.raises(BlobError):
            store.has(bad)  # type: ignore[arg-type]
    with pytest.raises(BlobError):
        store.put("text")  # type: ignore[arg-type]


def test_file_layout_is_two_hex_chars_then_full_hex(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"abc")
    name = key.hex()

    assert (tmp_path / name[:2] / name).read_bytes() == b"abc"
    assert blobs.path_for(key) == tmp_path / name[:2] / name


def test_corrupt_file_is_reported_absent_and_removed(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"good weights")
    path = blobs.path_for(key)
    path.write_bytes(b"bad weights!")

    assert blobs.has(key)
    assert blobs.get(key) is None
    assert not path.exists()
    assert not blobs.has(key)
    assert blobs.put(b"good weights") == key
    assert blobs.get(key) == b"good weights"


def test_put_repairs_a_corrupt_file_of_the_same_size(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"0123456789")
    blobs.path_for(key).write_bytes(b"9876543210")

    blobs.put(b"0123456789")

    assert blobs.path_for(key).read_bytes() == b"0123456789"


def test_memory_store_drops_corrupt_blobs() -> None:
    blobs = MemoryBlobStore()
    key = blobs.put(b"abc")
    blobs._blobs[key] = b"abd"

    assert blobs.get(key) is None
    assert not blobs.has(key)


def test_no_temp_files_left_after_puts(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    for i in range(50):
        blobs.put(bytes([i]) * (i * 100))
        blobs.put(bytes([i]) * (i * 100))

    assert _temp_files(tmp_path) == []
    assert len(list(blobs.keys())) == 50


def test_failed_write_leaves_neither_temp_nor_final_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = FileBlobStore(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        blobs.put(b"never lands")

    key = hashlib.sha256(b"never lands").digest()
    assert not blobs.path_for(key).exists()
    assert _temp_files(tmp_path) == []


def test_stale_temp_files_are_swept_on_open_and_not_listed(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"kept")
    stale = blobs.path_for(key).parent / f"{TEMP_PREFIX}crashed"
    stale.write_bytes(b"half a bl")
    (tmp_path / "README").write_text("not a blob")

    assert list(blobs.keys()) == [key]
    FileBlobStore(tmp_path)

    assert not stale.exists()
    assert blobs.get(key) == b"kept"


def test_open_blobs_uses_node_dir_blobs(tmp_path: Path) -> None:
    blobs = open_blobs(tmp_path / "node-3")
    key = blobs.put(b"w")

    assert blobs.root == tmp_path / "node-3" / "blobs"
    assert open_blobs(tmp_path / "node-3").get(key) == b"w"


@settings(derandomize=True, database=None, deadline=None, max_examples=50)
@given(st.lists(st.binary(max_size=2000), max_size=8))
def test_file_store_matches_memory_store(items: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        on_disk, in_memory = FileBlobStore(Path(tmp)), MemoryBlobStore()
        for data in items:
            assert on_disk.put(data) == in_memory.put(data)

        assert sorted(on_disk.keys()) == sorted(in_memory.keys())
        for k in sorted(in_memory.keys()):
            assert on_disk.get(k) == in_memory.get(k)
            assert on_disk.size(k) == in_memory.size(k)
        assert _temp_files(Path(tmp)) == []
