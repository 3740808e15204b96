"""A run's data set, prepared once by the orchestrator and read by each node (no pickle).

How it works
------------
The orchestrator loads the data set once, partitions its training labels with
`node.learning.partition.partition` (the same function and seed a node would use) and writes:

- a run-level shared directory (``<run>/data/``): ``train_y.npy`` (every training label: the
  population the devices' label statistics refer to), ``test_x.npy`` and ``test_y.npy`` (what
  the publisher evaluates on), and ``meta.json``;
- one directory per learning node (``<run>/nodes/<id>/data/``): for a device ``x.npy``,
  ``y.npy`` and ``indices.npy`` (its samples and their indices into the training set), and
  for every such node a ``meta.json`` saying what the files are: the data set, the input
  shape, the number of classes, the seed and partition they were made with, the device's part
  (index, count) or null, the shared directory (relative to this one) and, for each file it
  uses, its shape, dtype and SHA-256.

Arrays are plain ``.npy`` files written by numpy and read with ``allow_pickle=False``. A node
reads its own part into memory, and maps the shared files copy-on-write (``mmap_mode="c"``:
the pages stay shared in the page cache among every node that reads them; writable, so torch
does not warn). Before using them it checks that the meta describes what its config asks
for and that each file it uses has the recorded size, shape, dtype and checksum; anything
else is one `DatasetError` naming the file.

This module imports neither torch nor scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from node.learning.idx import DatasetError

log = logging.getLogger(__name__)

FORMAT = 1
META = "meta.json"
SHARED_DIR = "data"  # under the run directory
NODE_DATA_DIR = "data"  # under a node's directory
SHARED_FILES = ("train_y", "test_x", "test_y")
PART_FILES = ("x", "y", "indices")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DataSpec:
    """What a node's config says its data must be: compared with the prepared meta."""

    dataset: str
    seed: int
    partition: str
    alpha: float
    shards_per_device: int
    part: tuple[int, int] | None  # (this device's index, number of devices); None: no part

    def recipe(self) -> dict[str, Any]:
        """The fields every meta.json records and every reader compares."""
        return {
            "dataset": self.dataset,
            "seed": self.seed,
            "partition": self.partition,
            "alpha": self.alpha,
            "shards_per_device": self.shards_per_device,
        }


@dataclass(frozen=True, eq=False)
class PreparedData:
    """One node's prepared data: its part (empty for a node without one), the training
    labels of the whole population and the test set (both memory-mapped, shared)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train_x: np.ndarray
    train_y: np.ndarray
    indices: np.ndarray
    population_labels: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _save(directory: Path, stem: str, array: np.ndarray) -> dict[str, Any]:
    """Write `array` as <stem>.npy; the entry meta.json records for it."""
    path = directory / f"{stem}.npy"
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return {
        "file": path.name,
        "shape": [int(d) for d in array.shape],
        "dtype": array.dtype.str,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / f"{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    tmp.replace(directory / META)


def write_shared(
    directory: Path,
    spec: DataSpec,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
) -> dict[str, dict[str, Any]]:
    """Write the run-level files; their entries (by array name) for the nodes' metas."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"train_y": train_y, "test_x": test_x, "test_y": test_y}
    files = {name: _save(directory, name, arrays[name]) for name in SHARED_FILES}
    _write_meta(
        directory,
        {
            "format": FORMAT,
            **spec.recipe(),
            "input_shape": [int(d) for d in test_x.shape[1:]],
            "num_classes": num_classes,
            "files": files,
        },
    )
    return files


def write_node(
    directory: Path,
    shared_dir: Path,
    shared_files: dict[str, dict[str, Any]],
    spec: DataSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    part: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write one node's data directory: its part (x, y, indices) if it has one, and meta.json."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    if part is not None:
        pairs = zip(PART_FILES, part, strict=True)
        files = {name: _save(directory, name, arr) for name, arr in pairs}
    _write_meta(
        directory,
        {
            "format": FORMAT,
            **spec.recipe(),
            "part": None if spec.part is None else list(spec.part),
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "shared": os.path.relpath(shared_dir, directory),
            "shared_files": shared_files,
            "files": files,
        },
    )


def _load(directory: Path, entry: object, mmap: bool) -> np.ndarray:
    """The array an entry of meta.json describes, after checking size, checksum, shape, dtype."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise DatasetError(f"{directory / META}: malformed file entry {entry!r}")
    path = directory / entry["file"]
    if not path.is_file():
        raise DatasetError(f"{path}: missing (prepared data; rerun to prepare it again)")
    if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
        raise DatasetError(f"{path}: corrupt (size or SHA-256 differs from {directory / META})")
    try:
        array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path}: not a plain .npy array ({exc})") from None
    if list(array.shape) != entry.get("shape") or array.dtype.str != entry.get("dtype"):
        raise DatasetError(
            f"{path}: shape {list(array.shape)} dtype {array.dtype.str} differ from "
            f"{directory / META} ({entry.get('shape')} {entry.get('dtype')})"
        )
    return array


def read_meta(directory: Path) -> dict[str, Any]:
    """A data directory's meta.json; DatasetError naming the file if missing or malformed."""
    path = directory / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (prepared data; rerun to prepare it again)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a prepared-data meta of format {FORMAT}")
    return meta


def read_prepared(data_dir: str | os.PathLike[str], spec: DataSpec) -> PreparedData:
    """The data a node with `spec` uses, from its prepared directory (see the module doc).

    A device (spec.part given) reads its part and maps the population's labels; a node without
    a part maps the test set. DatasetError, naming the file, if anything differs or is missing.
    """
    directory = Path(data_dir)
    meta = read_meta(directory)
    path = directory / META
    want = {**spec.recipe(), "part": None if spec.part is None else list(spec.part)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise DatasetError(
                f"{path}: prepared with {key}={meta.get(key)!r} but this node's config has "
                f"{key}={value!r}"
            )
    try:
        shape = tuple(int(d) for d in meta["input_shape"])
        classes = int(meta["num_classes"])
        shared = directory / str(meta["shared"])
        shared_files = dict(meta["shared_files"])
        files = dict(meta["files"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed ({exc!r})") from None
    empty_x = np.empty((0, *shape), np.float32)
    empty_y = np.empty(0, np.int64)
    if spec.part is None:
        test_x = _load(shared, shared_files.get("test_x"), mmap=True)
        test_y = _load(shared, shared_files.get("test_y"), mmap=True)
        train_x, train_y, indices, population = empty_x, empty_y, empty_y, empty_y
    else:
        train_x, train_y, indices = (_load(directory, files.get(n), mmap=False) for n in PART_FILES)
        population = _load(shared, shared_files.get("train_y"), mmap=True)
        test_x, test_y = empty_x, empty_y
    if train_x.shape[1:] != shape or not len(train_x) == len(train_y) == len(indices):
        raise DatasetError(f"{directory}: x, y and indices do not match {path}")
    if indices.size and (indices.min() < 0 or indices.max() >= len(population)):
        raise DatasetError(f"{directory / 'indices.npy'}: indices outside the training set")
    if spec.part is not None and not np.array_equal(population[indices], train_y):
        raise DatasetError(f"{directory / 'y.npy'}: labels differ from the shared train_y.npy")
    log.info("prepared data %s from %s: %d samples", meta["dataset"], directory, len(train_y))
    return PreparedData(
        name=str(meta["dataset"]),
        input_shape=shape,
        num_classes=classes,
        train_x=train_x,
        train_y=train_y,
        indices=indices,
        population_labels=population,
        test_x=test_x,
        test_y=test_y,
    )
