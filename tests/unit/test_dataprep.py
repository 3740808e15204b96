"""A run's data prepared once by the orchestrator: identical parts, plain files, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.config import LearningConfig, NodeConfig
from node.learning.datasets import Dataset, DatasetError, load_dataset
from node.learning.partition import partition
from node.learning.prepared import DataSpec, read_prepared
from node.roles.learner import Learner
from node.roles.threats import DeviceThreats
from orchestrator.dataprep import DataPrep, prepare_data, spec_of
from tests.unit.node_configs import learning_config, node_config

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
SEED = 7
DEVICES = 9


def learning(dataset: str = "digits", scheme: str = "iid", **extra: Any) -> LearningConfig:
    return learning_config(
        dataset=dataset,
        dataset_root=str(MNIST) if dataset == "mnist" else None,
        model="mlp",
        partition=scheme,
        alpha=0.3,
        shards_per_device=3,
        rounds=2,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.05,
        round_deadline_s=10,
        **extra,
    )


def prepare(tmp: Path, cfg: LearningConfig, devices: int = DEVICES) -> DataPrep:
    ids = [f"dev{i}" for i in range(devices)]
    return prepare_data(cfg, SEED, tmp / "data", ids, ["publisher"], lambda n: tmp / n / "data")


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    out = {"digits": load_dataset("digits", seed=SEED)}
    if (MNIST / "train-images-idx3-ubyte.gz").is_file():
        out["mnist"] = load_dataset("mnist", str(MNIST), seed=SEED)
    return out


@pytest.mark.parametrize("name", ["digits", "mnist"])
@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_prepared_parts_equal_load_and_partition(
    tmp_path: Path, datasets: dict[str, Dataset], name: str, scheme: str
) -> None:
    if name not in datasets:
        pytest.skip(f"full MNIST not found in {MNIST}")
    cfg = learning(name, scheme)
    ds = datasets[name]
    old = partition(ds.train_y, DEVICES, scheme, SEED, alpha=0.3, shards_per_part=3)

    prep = prepare(tmp_path, cfg)

    for i in range(DEVICES):
        got = read_prepared(prep.dirs[f"dev{i}"], spec_of(cfg, SEED, (i, DEVICES)))
        assert np.array_equal(got.indices, old[i])
        assert np.array_equal(got.train_x, ds.train_x[old[i]])
        assert np.array_equal(got.train_y, ds.train_y[old[i]])
        assert got.train_x.dtype == np.float32 and got.train_y.dtype == np.int64
        assert np.array_equal(got.population_labels, ds.train_y)
        assert (got.name, got.input_shape, got.num_classes) == (name, ds.input_shape, 10)
        assert len(got.test_y) == 0  # a device holds no test set
    pub = read_prepared(prep.dirs["publisher"], spec_of(cfg, SEED, None))
    assert np.array_equal(pub.test_x, ds.test_x) and np.array_equal(pub.test_y, ds.test_y)
    assert isinstance(pub.test_x, np.memmap)  # shared page cache among readers
    assert len(pub.train_y) == 0  # the publisher holds no training set


def test_files_are_plain_npy_and_json(tmp_path: Path) -> None:
    prep = prepare(tmp_path, learning())
    dev = prep.dirs["dev0"]
    assert sorted(p.name for p in dev.iterdir()) == ["indices.npy", "meta.json", "x.npy", "y.npy"]
    for p in dev.glob("*.npy"):
        np.load(p, allow_pickle=False)
    meta = json.loads((dev / "meta.json").read_text())
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert meta["dataset"] == "digits" and meta["part"] == [0, DEVICES]
    assert (dev / meta["shared"]).resolve() == (tmp_path / "data").resolve()


def test_learner_from_prepared_data_trains_like_the_old_path(tmp_path: Path) -> None:
    cfg = learning("digits", "dirichlet")
    prep = prepare(tmp_path, cfg)
    old = Learner(cfg, SEED, (4, DEVICES))
    new = Learner(cfg.model_copy(update={"data_dir": str(prep.dirs["dev4"])}), SEED, (4, DEVICES))

    assert np.array_equal(new.indices, old.indices)
    assert np.array_equal(new.train_x, old.train_x)
    r_old, r_new = old.train(1), new.train(1)
    assert r_old.loss == r_new.loss
    for k, v in old.weights().items():
        assert np.array_equal(v, new.weights()[k])


def test_publisher_from_prepared_data_evaluates_like_the_old_path(tmp_path: Path) -> None:
    cfg = learning()
    prep = prepare(tmp_path, cfg)
    old = Learner(cfg, SEED)
    new = Learner(cfg.model_copy(update={"data_dir": str(prep.dirs["publisher"])}), SEED)

    assert new.evaluate() == old.evaluate()
    assert len(new.train_y) == 0
    assert np.array_equal(new.test_x[:50], old.test_x[:50])  # top-k's validation


def device_config(cfg: LearningConfig, behaviour: dict[str, Any]) -> NodeConfig:
    return node_config(cfg, node_id="dev2", seed=SEED, behaviours=[behaviour])


def test_unreliable_device_and_label_emd_same_from_prepared_data(tmp_path: Path) -> None:
    cfg = learning("digits", "iid")
    prep = prepare(tmp_path, cfg, devices=3)
    unreliable = {
        "from_round": 1,
        "until_round": None,
        "name": "unreliable",
        "params": {"target_emd": 1.0},
    }
    old = Learner(cfg, SEED, (2, 3))
    new = Learner(cfg.model_copy(update={"data_dir": str(prep.dirs["dev2"])}), SEED, (2, 3))

    x_old, y_old, _ = DeviceThreats(device_config(cfg, unreliable), old).training_data(1)
    threats = DeviceThreats(device_config(cfg, unreliable), new)
    x_new, y_new, name = threats.training_data(1)

    assert name == "unreliable" and len(y_new) < len(new.train_y)
    assert np.array_equal(x_new, x_old) and np.array_equal(y_new, y_old)
    assert threats.label_emd(y_new) == pytest.approx(1.0, abs=0.1)


def test_samples_maps_global_indices_to_the_part(tmp_path: Path) -> None:
    cfg = learning()
    prep = prepare(tmp_path, cfg, devices=3)
    new = Learner(cfg.model_copy(update={"data_dir": str(prep.dirs["dev1"])}), SEED, (1, 3))
    pick = new.indices[[0, 5, 9]]

    x, y = new.samples(pick)

    assert np.array_equal(x, new.train_x[[0, 5, 9]]) and np.array_equal(y, new.train_y[[0, 5, 9]])
    with pytest.raises(IndexError):
        new.samples(np.array([next(i for i in range(10**6) if i not in set(new.indices))]))


def expect_error(directory: Path, spec: DataSpec, words: str) -> None:
    with pytest.raises(DatasetError, match=words):
        read_prepared(directory, spec)


def test_missing_corrupt_or_mismatched_files_are_one_error_naming_the_file(
    tmp_path: Path,
) -> None:
    cfg = learning()
    prep = prepare(tmp_path, cfg, devices=3)
    d = prep.dirs["dev1"]
    spec = spec_of(cfg, SEED, (1, 3))

    expect_error(d, spec_of(cfg, SEED + 1, (1, 3)), r"meta\.json: prepared with seed=7 but")
    expect_error(d, spec_of(cfg, SEED, (0, 3)), r"meta\.json: prepared with part=\[1, 3\]")
    other = cfg.model_copy(
        update={"partition": cfg.partition.model_copy(update={"scheme": "shards"})}
    )
    expect_error(d, spec_of(other, SEED, (1, 3)), "partition='iid' but this node's config")

    raw = bytearray((d / "x.npy").read_bytes())
    raw[-1] ^= 0xFF
    (d / "x.npy").write_bytes(bytes(raw))
    expect_error(d, spec, r"x\.npy: corrupt")

    (d / "x.npy").unlink()
    expect_error(d, spec, r"x\.npy: missing")

    (d / "meta.json").write_text("{not json")
    expect_error(d, spec, r"meta\.json: unreadable")
    (d / "meta.json").unlink()
    expect_error(d, spec, r"dev1/data/meta\.json: missing")

    shared = tmp_path / "data" / "train_y.npy"
    shared.write_bytes(shared.read_bytes()[:-8])
    expect_error(prep.dirs["dev2"], spec_of(cfg, SEED, (2, 3)), r"train_y\.npy: corrupt")


def test_pickled_array_is_refused(tmp_path: Path) -> None:
    cfg = learning()
    prep = prepare(tmp_path, cfg, devices=2)
    d = prep.dirs["dev0"]
    path = d / "y.npy"
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((d / "meta.json").read_text())
    from node.learning.prepared import sha256_file

    meta["files"]["y"] |= {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    (d / "meta.json").write_text(json.dumps(meta))

    expect_error(d, spec_of(cfg, SEED, (0, 2)), r"y\.npy: not a plain \.npy array")


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import orchestrator.cli",
        "import orchestrator.runner",
        "import node.__main__",
        "import node.schemes.vanilla.mec",
        "import node.roles.learner",
    ],
)
def test_cli_and_node_modules_import_neither_torch_nor_sklearn(statement: str) -> None:
    mods = imported_after(statement)
    assert "torch" not in mods and "sklearn" not in mods


def test_reading_prepared_digits_imports_no_sklearn(tmp_path: Path) -> None:
    cfg = learning()
    prep = prepare(tmp_path, cfg, devices=2)
    spec = f"DataSpec('digits', {SEED}, 'iid', 0.3, 3, (1, 2))"
    mods = imported_after(
        "from node.learning.prepared import DataSpec, read_prepared; "
        f"read_prepared({str(prep.dirs['dev1'])!r}, {spec})"
    )
    assert "sklearn" not in mods and "torch" not in mods
