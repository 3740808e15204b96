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
survives the process being killed), and one writer thread per store does the fsyncs
afterwards (each file, then each directory once for the files queued together). ``flush``
waits for them. Only a power loss before that can cut such a blob
short; it then fails its hash on ``get``, is deleted and is fetched again like any corrupt
blob. ``put`` stays synchronous: durable when it returns.
"""

from __future__ import annotations

import contextlib
import itertools
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


_temp_names = itertools.count()


class FileBlobStore:
    """A blob store in a directory tree, one file per blob, written atomically.

    Paths are handled as strings with `os` calls (a `pathlib.Path` per call cost more than
    the write of a model's bytes into the page cache), and the two-hex-digit directories
    known to exist are remembered, so a put on the round's critical path is a stat, an
    open, a write and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._dirs: set[str] = set()
        self._sweep_temp_files()
        # put_behind's fsyncs: paths (or a flush's event) for one writer thread, started lazily
        self._fsyncs: queue.Queue[str | threading.Event] = queue.Queue()
        self._writer: threading.Thread | None = None

    def path_for(self, key: bytes) -> Path:
        """Where the blob for `key` lives."""
        return Path(self._path(key))

    def _path(self, key: bytes) -> str:
        _check_key(key)
        name = key.hex()
        return f"{self._root}/{name[:2]}/{name}"

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
        _check_data(data)
        path = self._path(key)
        if os.path.isfile(path):
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
        """The writer thread: fsync each queued blob, then each of their directories once
        for all the blobs queued together (a flush's event is set once everything queued
        before it is synced)."""
        while True:
            batch = [self._fsyncs.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._fsyncs.get_nowait())
            dirs: dict[str, None] = {}
            events: list[threading.Event] = []
            for item in batch:
                if isinstance(item, threading.Event):
                    events.append(item)
                    continue
                try:
                    _fsync_path(item)
                    dirs[os.path.dirname(item)] = None
                except OSError as exc:  # deleted since (found corrupt): nothing left to sync
                    logger.warning("could not fsync blob %s: %s", os.path.basename(item), exc)
            for directory in dirs:
                try:
                    _fsync_path(directory)
                except OSError as exc:
                    logger.warning("could not fsync blob directory %s: %s", directory, exc)
            for event in events:
                event.set()

    def get(self, key: bytes) -> bytes | None:
        """The blob, or None if absent or corrupt (a corrupt file is deleted)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if sha256(data) != key:
            logger.warning("blob %s is corrupt on disk; deleting %s", key.hex(), path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return None
        return data

    def has(self, key: bytes) -> bool:
        """True if a blob file exists for `key` (its contents are checked on get)."""
        return os.path.isfile(self._path(key))

    def size(self, key: bytes) -> int | None:
        """The blob file's size, or None if absent."""
        try:
            return os.stat(self._path(key)).st_size
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
        path = self._path(key)
        if sync and self._intact(path, key):
            return
        directory = os.path.dirname(path)
        if directory not in self._dirs:
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)
        try:
            fd, tmp_name = _create_temp(directory)
        except FileNotFoundError:  # the directory was removed behind the store's back
            os.makedirs(directory, exist_ok=True)
            fd, tmp_name = _create_temp(directory)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        if sync:
            _fsync_path(directory)

    @staticmethod
    def _intact(path: str, key: bytes) -> bool:
        try:
            with open(path, "rb") as f:
                return sha256(f.read()) == key
        except FileNotFoundError:
            return False

    def _sweep_temp_files(self) -> None:
        for tmp in self.root.glob(f"*/{TEMP_PREFIX}*"):
            logger.info("removing stale temp blob %s", tmp)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _create_temp(directory: str) -> tuple[int, str]:
    """A new temp file (O_EXCL, mode 0600, like `tempfile.mkstemp`) in `directory`, named
    TEMP_PREFIX + pid + a counter: unique among the processes forked from one server, and
    a name left by a dead process with the same pid is skipped."""
    pid = os.getpid()
    for _ in range(tempfile.TMP_MAX):
        name = f"{directory}/{TEMP_PREFIX}{pid}-{next(_temp_names)}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, name
    raise FileExistsError(f"no free temp file name in {directory}")


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blobs(node_dir: Path) -> FileBlobStore:
    """The node's blob store at node_dir/blobs."""
    return FileBlobStore(Path(node_dir) / "blobs")
