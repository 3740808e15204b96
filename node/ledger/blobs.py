"""Content-addressed blob store for model weights and other large payloads.

How it works: a blob's key is the SHA-256 of its bytes; blocks only carry keys and sizes.
FileBlobStore keeps blob ``ab12...`` at ``root/ab/ab12...`` (full hex name). A put writes
a temp file in the same directory, fsyncs it, renames it over the final name with
os.replace (atomic) and fsyncs the directory, so a crash never leaves a partial blob under
its final name; stale temp files are swept when the store is opened. Every get re-hashes
the bytes: a blob that no longer matches its key is logged, deleted and reported absent,
so a node re-fetches it rather than training on corrupt weights. MemoryBlobStore is the
same interface over a dict, for tests.

``put_behind(key, data)`` is the put for the round's critical path: the caller hashed the
bytes itself (the key is not recomputed, nor an existing file re-read), the blob is written
to a temp file and renamed into place at once (so it is there for ``has``/``get`` and
survives the process being killed), and one writer thread per store does the two fsyncs
afterwards. ``flush`` waits for them. Only a power loss before that can cut such a blob
short; it then fails its hash on ``get``, is deleted and is fetched again like any corrupt
blob. ``put`` stays synchronous: durable when it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from node.core.encoding import sha256

logger = logging.getLogger(__name__)

KEY_BYTES = 32
TEMP_PREFIX = ".tmp-"
_HEX = frozenset("0123456789abcdef")


class BlobError(ValueError):
    """A blob key is malformed, or blob bytes do not hash to the expected key."""


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise BlobError(f"a blob key is {KEY_BYTES} bytes")


def _check_data(data: bytes) -> None:
    if not isinstance(data, bytes):
        raise BlobError("blob data must be bytes")


def _verified_key(key: bytes, data: bytes) -> None:
    _check_key(key)
    _check_data(data)
    actual = sha256(data)
    if actual != key:
        raise BlobError(f"blob hashes to {actual.hex()[:16]}, expected {key.hex()[:16]}")


@runtime_checkable
class BlobStore(Protocol):
    """What the ledger needs from a blob store."""

    def put(self, data: bytes) -> bytes:
        """Store `data`; returns its key (sha256). Idempotent."""
        ...

    def put_verified(self, key: bytes, data: bytes) -> None:
        """Store `data` fetched for `key`; raises BlobError if it does not hash to `key`."""
        ...

    def put_behind(self, key: bytes, data: bytes) -> None:
        """Store `data`, which the caller hashed to `key` itself, without waiting for fsync."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """The blob, or None if absent or corrupt (a corrupt blob is deleted)."""
        ...

    def has(self, key: bytes) -> bool:
        """True if a blob is stored under `key`."""
        ...

    def size(self, key: bytes) -> int | None:
        """The stored blob's size in bytes, or None if absent."""
        ...

    def keys(self) -> Iterator[bytes]:
        """Every stored key."""
        ...


class MemoryBlobStore:
    """A blob store in a dict."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> bytes:
        """Store `data`; returns its key."""
        _check_data(data)
        key = sha256(data)
        self._blobs[key] = bytes(data)
        return key

    def put_verified(self, key: bytes, data: bytes) -> None:
        """Store `data` if it hashes to `key`; raises BlobError otherwise."""
        _verified_key(key, data)
        self._blobs[key] = bytes(data)

    def put_behind(self, key: bytes, data: bytes) -> None:
        """Store `data` under `key` (the caller's hash of it)."""
        _check_key(key)
        _check_data(data)
        self._blobs[key] = bytes(data)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Nothing waits for a disk here; True."""
        return True

    def get(self, key: bytes) -> bytes | None:
        """The blob, or None if absent or corrupt."""
        _check_key(key)
        data = self._blobs.get(key)
        if data is not None and sha256(data) != key:
            logger.warning("blob %s is corrupt; dropping it", key.hex())
            del self._blobs[key]
            return None
        return data

    def has(self, key: bytes) -> bool:
        """True if a blob is stored under `key`."""
        _check_key(key)
        return key in self._blobs

    def size(self, key: bytes) -> int | None:
        """The blob's size, or None if absent."""
        _check_key(key)
        data = self._blobs.get(key)
        return None if data is None else len(data)

    def keys(self) -> Iterator[bytes]:
        """Every stored key."""
        return iter(list(self._blobs))


def blob_path(root: Path, key: bytes) -> Path:
    """Where a FileBlobStore rooted at `root` keeps the blob for `key`."""
    _check_key(key)
    name = key.hex()
    return Path(root) / name[:2] / name


class FileBlobStore:
    """A blob store in a directory tree, one file per blob, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_temp_files()
        # put_behind's fsyncs: paths (or a flush's event) for one writer thread, started lazily
        self._fsyncs: queue.Queue[Path | threading.Event] = queue.Queue()
        self._writer: threading.Thread | None = None

    def path_for(self, key: bytes) -> Path:
        """Where the blob for `key` lives."""
        return blob_path(self.root, key)

    def put(self, data: bytes) -> bytes:
        """Store `data` atomically; returns its key. Idempotent."""
        _check_data(data)
        key = sha256(data)
        self._write(key, data)
        return key

    def put_verified(self, key: bytes, data: bytes) -> None:
        """Store `data` fetched for `key`; raises BlobError if it does not hash to `key`."""
        _verified_key(key, data)
        self._write(key, data)

    def put_behind(self, key: bytes, data: bytes) -> None:
        """Store `data`, which the caller hashed to `key` itself (it is not hashed again):
        written and renamed into place now, fsynced by the writer thread later."""
        _check_key(key)
        _check_data(data)
        path = self.path_for(key)
        if path.is_file():
            return
        self._write(key, data, sync=False)
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._sync_behind, name="blob-fsync", daemon=True
            )
            self._writer.start()
        self._fsyncs.put(path)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every put_behind blob is fsynced (at most `timeout_s`); True if so."""
        if self._writer is None:
            return True
        done = threading.Event()
        self._fsyncs.put(done)  # set by the writer once everything queued before it is done
        return done.wait(timeout_s)

    def _sync_behind(self) -> None:
        while True:
            item = self._fsyncs.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                fd = os.open(item, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._fsync_dir(item.parent)
            except OSError as exc:  # deleted since (found corrupt): nothing left to sync
                logger.warning("could not fsync blob %s: %s", item.name, exc)

    def get(self, key: bytes) -> bytes | None:
        """The blob, or None if absent or corrupt (a corrupt file is deleted)."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) != key:
            logger.warning("blob %s is corrupt on disk; deleting %s", key.hex(), path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return data

    def has(self, key: bytes) -> bool:
        """True if a blob file exists for `key` (its contents are checked on get)."""
        return self.path_for(key).is_file()

    def size(self, key: bytes) -> int | None:
        """The blob file's size, or None if absent."""
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            return None

    def keys(self) -> Iterator[bytes]:
        """Every stored key (temp files and stray names are skipped)."""
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for path in sorted(sub.iterdir()):
                name = path.name
                if len(name) == 2 * KEY_BYTES and set(name) <= _HEX and name[:2] == sub.name:
                    yield bytes.fromhex(name)

    def _write(self, key: bytes, data: bytes, sync: bool = True) -> None:
        """Write atomically (temp file, rename); with `sync`, fsync the file before the
        rename and the directory after it (put_behind leaves both to the writer thread)."""
        path = self.path_for(key)
        if sync and self._intact(path, key):
            return
        path.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        if sync:
            self._fsync_dir(path.parent)

    @staticmethod
    def _intact(path: Path, key: bytes) -> bool:
        try:
            return sha256(path.read_bytes()) == key
        except FileNotFoundError:
            return False

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sweep_temp_files(self) -> None:
        for tmp in self.root.glob(f"*/{TEMP_PREFIX}*"):
            logger.info("removing stale temp blob %s", tmp)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def open_blobs(node_dir: Path) -> FileBlobStore:
    """The node's blob store at node_dir/blobs."""
    return FileBlobStore(Path(node_dir) / "blobs")
