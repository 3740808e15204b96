"""CIFAR-10 from its binary files (synthetic ones here): shapes, normalisation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.learning import datasets as ds
from node.learning.datasets import DatasetError, load_dataset

TRAIN_PER_FILE = 20
TEST_RECORDS = 10


def _records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random records: labels 0..9 and (n, 3072) pixel bytes."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8)
    return labels, pixels


def _write(path: Path, labels: np.ndarray, pixels: np.ndarray) -> None:
    np.concatenate([labels[:, None], pixels], axis=1).tofile(path)


def _cifar_dir(directory: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the six binary files into directory; return what each holds."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in ds.CIFAR10_TRAIN_FILES:
        written[name] = _records(rng, TRAIN_PER_FILE)
    written[ds.CIFAR10_TEST_FILE] = _records(rng, TEST_RECORDS)
    for name, (labels, pixels) in written.items():
        _write(directory / name, labels, pixels)
    return written


def test_loads_train_and_test_in_file_order(tmp_path: Path) -> None:
    written = _cifar_dir(tmp_path)

    data = load_dataset("cifar10", str(tmp_path))

    assert data.name == "cifar10" and data.num_classes == 10
    assert data.input_shape == (3, 32, 32)
    assert data.train_x.shape == (5 * TRAIN_PER_FILE, 3, 32, 32)
    assert data.test_x.shape == (TEST_RECORDS, 3, 32, 32)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    expected_y = np.concatenate([written[n][0] for n in ds.CIFAR10_TRAIN_FILES])
    np.testing.assert_array_equal(data.train_y, expected_y)
    np.testing.assert_array_equal(data.test_y, written[ds.CIFAR10_TEST_FILE][0])


def test_pixels_are_scaled_and_standardised_per_channel(tmp_path: Path) -> None:
    written = _cifar_dir(tmp_path)
    raw = written[ds.CIFAR10_TEST_FILE][1][3].reshape(3, 32, 32)  # 4th test record

    data = load_dataset("cifar10", str(tmp_path))

    for c in range(3):  # red, green, blue planes in that order, rows of 32
        expected = (raw[c] / 255.0 - ds.CIFAR10_MEAN[c]) / ds.CIFAR10_STD[c]
        np.testing.assert_allclose(data.test_x[3, c], expected, rtol=1e-5, atol=1e-6)
    assert data.test_x[3, 0, 0, 1] == pytest.approx(
        (raw[0, 0, 1] / 255.0 - ds.CIFAR10_MEAN[0]) / ds.CIFAR10_STD[0], rel=1e-5
    )


def test_root_may_be_the_parent_of_the_unpacked_directory(tmp_path: Path) -> None:
    _cifar_dir(tmp_path / ds.CIFAR10_SUBDIR)

    data = load_dataset("cifar10", str(tmp_path))

    assert len(data.train_y) == 5 * TRAIN_PER_FILE


def test_environment_variable_when_no_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cifar_dir(tmp_path)
    monkeypatch.setenv(ds.CIFAR10_ENV, str(tmp_path))

    assert len(load_dataset("cifar10").test_y) == TEST_RECORDS


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    _cifar_dir(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(ValueError, match=r"data_batch_3\.bin: .* not a whole number"):
        load_dataset("cifar10", str(tmp_path))


def test_a_label_out_of_range_is_refused(tmp_path: Path) -> None:
    _cifar_dir(tmp_path)
    labels, pixels = _records(np.random.default_rng(1), TEST_RECORDS)
    labels[2] = 10
    _write(tmp_path / ds.CIFAR10_TEST_FILE, labels, pixels)

    with pytest.raises(DatasetError, match="label 10 out of range"):
        load_dataset("cifar10", str(tmp_path))


def test_a_missing_directory_names_the_files_where_and_how(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", str(missing))

    msg = str(info.value)
    assert "data_batch_1.bin" in msg and "data_batch_5.bin" in msg and "test_batch.bin" in msg
    assert f"{missing} (no such directory)" in msg
    assert str(missing / ds.CIFAR10_SUBDIR) in msg
    assert "binary version of CIFAR-10" in msg


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    _cifar_dir(tmp_path)
    (tmp_path / "data_batch_2.bin").unlink()

    with pytest.raises(DatasetError, match=rf"{tmp_path} \(missing data_batch_2\.bin\)"):
        load_dataset("cifar10", str(tmp_path))


def test_no_root_and_no_variable_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ds.CIFAR10_ENV, raising=False)

    with pytest.raises(DatasetError, match=r"neither root nor \$BCFL_CIFAR10 is set"):
        load_dataset("cifar10")


def test_cifar10_is_a_known_dataset_name() -> None:
    from node.learning.names import DATASETS

    assert "cifar10" in DATASETS
    assert ds.PIXELS["cifar10"] == 3 * 32 * 32 and ds.CHANNELS["cifar10"] == 3


def test_prepared_data_keeps_three_channels(tmp_path: Path) -> None:
    from node.learning.prepared import read_prepared
    from orchestrator.dataprep import prepare_data, spec_of
    from tests.unit.node_configs import learning_config

    _cifar_dir(tmp_path / "cifar")
    cfg = learning_config("cifar10", dataset_root=str(tmp_path / "cifar"), model="alexnet")
    data = load_dataset("cifar10", str(tmp_path / "cifar"))
    ids = ["dev0", "dev1"]

    prep = prepare_data(cfg, 3, tmp_path / "data", ids, ["publisher"], lambda n: tmp_path / n)

    parts = [read_prepared(prep.dirs[d], spec_of(cfg, 3, (i, 2))) for i, d in enumerate(ids)]
    assert sum(len(p.train_y) for p in parts) == len(data.train_y)
    for part in parts:
        assert part.input_shape == (3, 32, 32) and part.train_x.shape[1:] == (3, 32, 32)
        np.testing.assert_array_equal(part.train_x, data.train_x[part.indices])
    publisher = read_prepared(prep.dirs["publisher"], spec_of(cfg, 3, None))
    np.testing.assert_array_equal(publisher.test_x, data.test_x)
