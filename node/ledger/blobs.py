"""Content-addressed blob store for model weights and other large payloads.

How it works: a blob's key is the SHA-256 of its bytes; blocks only carry keys and sizes.
FileBlobStore keeps blob ``ab12...`` at ``root/ab/ab12...`` (full hex name). A put writes
a temp file in the same directory, fsyncs it, renames it over the final name with
os.replace (atomic) and fsyncs the directory, so a crash never leaves a partial blob under
its final name; stale temp files are swept when the store is opened. Every get re-hashes
the bytes: a blob that no longer matches its key is logged, deleted and reported absent,
so a node re-fetches it rather than training on corrupt weights. MemoryBlobStore is the
same interface over a dict, for tests.

``put_behind(key, data)`` is the write-behind put for the round's critical path: the caller
has hashed the bytes itself (the key is not recomputed), the blob is visible at once to
``has``/``get``/``size``/``keys`` (from memory), and one writer thread per store writes it
with the same temp-file/fsync/rename steps. ``flush`` waits for the writer; a process killed
before its blob reached the disk has lost it as if it had never been put (a replicated blob
is fetched again from a peer). ``put`` stays synchronous: durable when it returns.
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

from node.ledger.encoding import sha256

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
        """Store `data`, which the caller hashed to `key` itself, without waiting for the disk."""
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
        """Nothing is pending in memory; True."""
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
        # write-behind: blobs put_behind() has not written yet, and the writer's queue
        self._pending: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[bytes | threading.Event] = queue.Queue()
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
        """Store `data`, which the caller hashed to `key` itself (it is not hashed again),
        in the background: visible at once, on disk once the writer thread reaches it."""
        _check_key(key)
        _check_data(data)
        with self._lock:
            if key in self._pending:
                return
            self._pending[key] = data
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_behind, name="blob-writer", daemon=True
                )
                self._writer.start()
        self._queue.put(key)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every put_behind blob is on disk (at most `timeout_s`); True if so."""
        if self._writer is None:
            return True
        done = threading.Event()
        self._queue.put(done)  # set by the writer once everything queued before it is written
        return done.wait(timeout_s)

    def _write_behind(self) -> None:
        while True:
            key = self._queue.get()
            if isinstance(key, threading.Event):
                key.set()
                continue
            with self._lock:
                data = self._pending.get(key)
            if data is None:
                continue
            try:
                self._write(key, data, check_existing=False)
            except OSError:
                logger.exception("could not write blob %s", key.hex())
            with self._lock:
                self._pending.pop(key, None)

    def get(self, key: bytes) -> bytes | None:
        """The blob, or None if absent or corrupt (a corrupt file is deleted)."""
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return pending
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
        with self._lock:
            if key in self._pending:
                return True
        return self.path_for(key).is_file()

    def size(self, key: bytes) -> int | None:
        """The blob file's size, or None if absent."""
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return len(pending)
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            return None

    def keys(self) -> Iterator[bytes]:
        """Every stored key (temp files and stray names are skipped), then those still
        being written behind."""
        with self._lock:
            pending = set(self._pending)
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for path in sorted(sub.iterdir()):
                name = path.name
                if len(name) == 2 * KEY_BYTES and set(name) <= _HEX and name[:2] == sub.name:
                    key = bytes.fromhex(name)
                    pending.discard(key)
                    yield key
        yield from sorted(pending)

    def _write(self, key: bytes, data: bytes, check_existing: bool = True) -> None:
        path = self.path_for(key)
        if check_existing and self._intact(path, key):
            return
        path.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
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
