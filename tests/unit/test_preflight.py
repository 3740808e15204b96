"""Unit tests for orchestrator.preflight: what `run` needs is checked before anything starts."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.learning.settings import PrivacySettings
from orchestrator import preflight
from orchestrator.cli import main
from orchestrator.preflight import DataFacts, check, data_facts, parameters
from orchestrator.scenario import Scenario, ScenarioError, parse_scenario
from topologies import NodeKind, TopologySpec, build_hierarchy

REPO = Path(__file__).resolve().parents[2]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"
NEEDS_MNIST = pytest.mark.skipif(
    not (SHARED_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
    reason=f"real MNIST not at {SHARED_MNIST}",
)

# The three scenarios of issue 11, item 3: `validate` accepted each, `run` could not start it.
ISSUE_EXAMPLES = {
    "privacy": (
        "privacy: {epsilon: 1.0e+300, delta: 0.1, mechanism: analytic}\n",
        "privacy.epsilon: 1e+300 is invalid; allowed: less than or equal to 700",
    ),
    "shards": (
        "partition: {scheme: shards, shards_per_device: 1000000}\n",
        "partition.shards_per_device: 1000000 is invalid; allowed: at most 143 "
        "(10 devices × shards ≤ 1437 training samples of digits)",
    ),
    "root": (
        "dataset: {name: mnist, root: /nonexistent}\n",
        "dataset.root: '/nonexistent' is invalid; allowed: a directory holding",
    ),
}


def _scenario(**sections: Any) -> tuple[Scenario, TopologySpec]:
    s = parse_scenario(sections)
    return s, build_hierarchy(s.topology.to_params(), s.seed)


def _error(s: Scenario, topology: TopologySpec, available: float | None = None) -> str:
    with pytest.raises(ScenarioError) as info:
        check(s, topology, available=available)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _write_idx(path: Path, dims: tuple[int, ...], gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    body = header + bytes(int(np.prod(dims)))
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(body)
    else:
        path.write_bytes(body)


def _idx_dir(root: Path, train: int = 50, test: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte", (train, 28, 28))
    _write_idx(root / "train-labels-idx1-ubyte", (train,))
    _write_idx(root / "t10k-images-idx3-ubyte", (test, 28, 28), gz=False)
    _write_idx(root / "t10k-labels-idx1-ubyte", (test,), gz=False)
    return root


# --- the issue's three examples -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ISSUE_EXAMPLES))
def test_validate_refuses_what_run_cannot_start(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = ISSUE_EXAMPLES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)

    code = main(["validate", str(path)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith(f"bcfl: error: {path}: {expected}")


@pytest.mark.parametrize("name", sorted(ISSUE_EXAMPLES))
def test_run_refuses_them_before_creating_anything(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(ISSUE_EXAMPLES[name][0])
    out_dir = tmp_path / "run"

    code = main(["run", str(path), "--out", str(out_dir), "--quiet"])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("bcfl: error: ")
    assert not out_dir.exists()


def test_run_init_calls_the_preflight(tmp_path: Path) -> None:
    from orchestrator.runner import Run

    s = parse_scenario({"partition": {"scheme": "shards", "shards_per_device": 1000}})

    with pytest.raises(ScenarioError, match=r"^partition\.shards_per_device: 1000 is invalid"):
        Run(s, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- data sets ------------------------------------------------------------------------------


def test_digits_and_mnist_5k_sizes_match_what_the_loader_gives() -> None:
    from node.learning.datasets import load_dataset

    for name in ("digits", "mnist-5k"):
        facts = data_facts(name, None)
        loaded = load_dataset(name)
        assert (facts.train, facts.test) == (len(loaded.train_y), len(loaded.test_y)), name
        assert facts.pixels == int(np.prod(loaded.input_shape))


@NEEDS_MNIST
def test_real_mnist_from_root_is_read_from_its_headers() -> None:
    facts = data_facts("mnist", str(SHARED_MNIST))

    assert (facts.train, facts.test, facts.pixels) == (60_000, 10_000, 784)
    assert facts.source == str(SHARED_MNIST)


@NEEDS_MNIST
def test_mnist_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCFL_MNIST", str(SHARED_MNIST))

    assert data_facts("mnist", None).train == 60_000


def test_mnist_without_root_or_variable_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCFL_MNIST", raising=False)
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(ScenarioError) as info:
        data_facts("mnist", None)

    msg = str(info.value)
    assert msg.startswith("dataset.name: 'mnist' is invalid; allowed: ")
    assert "dataset.root or $BCFL_MNIST" in msg


def test_fashion_mnist_root_with_idx_files(tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm", train=50, test=20)

    facts = data_facts("fashion-mnist", str(root))

    assert (facts.train, facts.test, facts.source) == (50, 20, str(root))


def test_root_missing_one_file_names_it(tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte").unlink()

    with pytest.raises(ScenarioError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        data_facts("fashion-mnist", str(root))


def test_root_with_a_corrupt_header(tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")

    with pytest.raises(ScenarioError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        data_facts("fashion-mnist", str(root))


def test_root_whose_images_and_labels_differ(tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm", train=50)
    _write_idx(root / "train-labels-idx1-ubyte", (49,))

    with pytest.raises(ScenarioError, match=r"train images \(50\) and labels \(49\) differ"):
        data_facts("fashion-mnist", str(root))


def test_fashion_mnist_default_places_say_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCFL_FASHION_MNIST", str(tmp_path / "none"))
    monkeypatch.setattr(preflight.ds, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "system"))

    with pytest.raises(ScenarioError) as info:
        data_facts("fashion-mnist", None)

    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def _cifar_files(directory: Path, train: int = 20, test: int = 10) -> Path:
    """CIFAR-10 binary files of the right sizes (preflight reads sizes only)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (directory / f"data_batch_{i}.bin").write_bytes(bytes(3073 * train))
    (directory / "test_batch.bin").write_bytes(bytes(3073 * test))
    return directory


def test_cifar10_sizes_from_its_files(tmp_path: Path) -> None:
    root = _cifar_files(tmp_path / "c")

    facts = data_facts("cifar10", str(root))

    assert (facts.train, facts.test, facts.source) == (100, 10, str(root))
    assert (facts.pixels, facts.channels, facts.classes) == (3072, 3, 10)


def test_cifar10_in_the_unpacked_subdirectory(tmp_path: Path) -> None:
    _cifar_files(tmp_path / "c" / "cifar-10-batches-bin", train=3)

    facts = data_facts("cifar10", str(tmp_path / "c"))

    assert facts.train == 15 and facts.source == str(tmp_path / "c" / "cifar-10-batches-bin")


def test_cifar10_truncated_file_is_refused(tmp_path: Path) -> None:
    root = _cifar_files(tmp_path / "c")
    (root / "data_batch_4.bin").write_bytes(bytes(3073 * 20 - 1))

    with pytest.raises(ScenarioError, match=r"^dataset\.root: .*data_batch_4\.bin: .*whole number"):
        data_facts("cifar10", str(root))


def test_cifar10_missing_root_is_reported_like_mnist(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        data_facts("cifar10", str(tmp_path / "none"))

    msg = str(info.value)
    assert msg.startswith(f"dataset.root: '{tmp_path / 'none'}' is invalid; allowed: a directory ")
    assert "data_batch_1.bin..data_batch_5.bin and test_batch.bin" in msg
    assert "binary version of CIFAR-10" in msg and "no such directory" in msg


def test_cifar10_without_root_or_variable_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCFL_CIFAR10", raising=False)

    with pytest.raises(ScenarioError) as info:
        data_facts("cifar10", None)

    msg = str(info.value)
    assert msg.startswith("dataset.name: 'cifar10' is invalid; allowed: ")
    assert "dataset.root or $BCFL_CIFAR10" in msg


def test_digits_needs_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(ScenarioError, match="pip install scikit-learn"):
        data_facts("digits", None)


# --- partition ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spd", "ok"), [(143, True), (144, False)])
def test_shards_boundary(spd: int, ok: bool) -> None:
    s, topo = _scenario(partition={"scheme": "shards", "shards_per_device": spd})

    if ok:
        check(s, topo, available=None)
    else:
        assert _error(s, topo).startswith("partition.shards_per_device: 144 is invalid")


def test_shards_boundary_matches_the_partition_function() -> None:
    from node.learning.partition import partition

    labels = np.arange(1437) % 10
    parts = partition(labels, 10, "shards", seed=0, shards_per_part=143)
    assert min(len(p) for p in parts) >= 1
    with pytest.raises(ValueError):
        partition(labels, 10, "shards", seed=0, shards_per_part=144)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_more_devices_than_samples(scheme: str, tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm", train=12, test=5)
    s, topo = _scenario(
        dataset={"name": "fashion-mnist", "root": str(root)},
        partition={"scheme": scheme},
        topology={"mecs_per_bs": 2, "devices_per_mec": 7},
    )

    msg = _error(s, topo)

    assert msg == (
        "topology: '14 devices' is invalid; allowed: at most 12 devices, one per training "
        "sample of fashion-mnist"
    )


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_as_many_devices_as_samples_is_feasible(scheme: str) -> None:
    from node.learning.partition import partition

    facts = DataFacts("test", train=12, test=5, pixels=784)
    s, _ = _scenario(
        partition={"scheme": scheme, "shards_per_device": 1},
        topology={"mecs_per_bs": 2, "devices_per_mec": 6},
    )

    preflight.check_partition(s, 12, facts)
    parts = partition(np.arange(12) % 3, 12, scheme, seed=0, shards_per_part=1)
    assert min(len(p) for p in parts) == 1


# --- privacy --------------------------------------------------------------------------------


def test_privacy_the_mechanism_refuses_names_the_field() -> None:
    s, topo = _scenario()
    bad = PrivacySettings.model_construct(
        epsilon=1e300, delta=0.1, clip_norm=1.0, mechanism="analytic"
    )
    s = s.model_copy(update={"privacy": bad})

    msg = _error(s, topo)

    assert msg.startswith("privacy.epsilon: 1e+300 is invalid; allowed: epsilon must be <= 700")
    assert msg.endswith("(analytic mechanism)")


def test_privacy_accepted_values_pass() -> None:
    s, topo = _scenario(privacy={"epsilon": 700, "delta": 1e-300, "mechanism": "analytic"})

    check(s, topo, available=None)


# --- memory ---------------------------------------------------------------------------------


def test_memory_that_does_not_fit_is_refused() -> None:
    s, topo = _scenario()

    msg = _error(s, topo, available=300.0)  # the fork server and 13 daemons: about 500 MB

    assert msg.startswith("topology: '13 node processes' is invalid; allowed: what fits in the")
    assert "300 MB available now" in msg


def test_memory_estimate_grows_with_the_data_set(tmp_path: Path) -> None:
    root = _idx_dir(tmp_path / "fm", train=60_000, test=10_000)
    small, topo = _scenario()
    big, _ = _scenario(dataset={"name": "fashion-mnist", "root": str(root)})

    a = check(small, topo, available=None).memory_mb
    b = check(big, topo, available=None).memory_mb

    base = preflight.FORK_SERVER_MB["local"] + 13 * preflight.BASE_MB["local"]
    assert base <= a < base + 13 * 10
    # the devices hold their parts twice (2 x 60,000 x 784 floats in all), the publisher
    # the test set (10,000 x 784 floats): far less than each loading the whole set
    parts, test_set = 2 * 60_000 * 784 * 4 / 2**20, 10_000 * 784 * 4 / 2**20
    assert a + parts + test_set <= b < a + parts + test_set + 13 * 10


def test_container_memory_limit_below_one_node(tmp_path: Path) -> None:
    s, topo = _scenario(backend="containernet", containers={"device": {"memory_mb": 128}})

    msg = _error(s, topo)

    assert msg.startswith("containers.device.memory_mb: 128 is invalid; allowed: at least 28")


def test_available_memory_is_read_from_this_machine() -> None:
    free = preflight.available_mb()

    if os.path.exists("/proc/meminfo"):
        assert free is not None and free > 0


# --- references -----------------------------------------------------------------------------


def test_capture_of_an_unknown_node() -> None:
    s, topo = _scenario(capture=["mec0", "nope"])

    assert _error(s, topo) == "capture[1]: 'nope' is invalid; allowed: node ids of the topology"


def test_fault_on_an_unknown_node_is_refused_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("faults: [{at_round: 2, action: crash, nodes: [dev9-9]}]\n")

    code = main(["validate", str(path)])

    assert code == 2
    assert "faults[0].nodes" in capsys.readouterr().err


def test_aggregator_params_are_checked_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("aggregator: {name: krum, params: {nope: 1}}\n")

    code = main(["validate", str(path)])

    assert code == 2
    assert "aggregator.params: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("aggregator", "need"),
    [("{name: krum, params: {f: 4}}", 11), ("{name: multi_krum, params: {f: 1, m: 12}}", 12)],
)
def test_an_aggregator_that_cannot_use_every_devices_update_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], aggregator: str, need: int
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(f"aggregator: {aggregator}\n")  # 10 devices by default

    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "aggregator.params: " in err and f"10 device updates (these need at least {need})" in err


# --- the torch-free parameter count agrees with the models ---------------------------------


@pytest.mark.parametrize("model", ["mlp", "cnn", "small-cnn"])
@pytest.mark.parametrize("side", [8, 28])
def test_parameter_count_matches_the_model(model: str, side: int) -> None:
    from node.learning.models import build_model, count_parameters

    built = build_model(model, (1, side, side), 10, seed=0)

    assert parameters(model, side * side) == count_parameters(built)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_alexnet_parameter_count_matches_the_model(shape: tuple[int, int, int]) -> None:
    from node.learning.models import build_model, count_parameters

    built = build_model("alexnet", shape, 10, seed=0)

    assert preflight.model_parameters("alexnet", shape, 10) == count_parameters(built)
    assert parameters("alexnet", int(np.prod(shape)), 10, shape[0]) == count_parameters(built)


@pytest.mark.parametrize("model", ["mlp", "cnn", "small-cnn", "alexnet"])
def test_parameter_count_for_colour_and_odd_shapes(model: str) -> None:
    from node.learning.models import build_model, count_parameters

    for shape in [(3, 32, 32), (3, 17, 23)]:
        built = build_model(model, shape, 7, seed=0)
        assert preflight.model_parameters(model, shape, 7) == count_parameters(built)


def test_kinds_cover_every_daemon() -> None:
    _, topo = _scenario()
    kinds = {n.kind for n in topo.daemons()}

    assert kinds == {NodeKind.MEC, NodeKind.DEVICE, NodeKind.PUBLISHER}


# --- scheme-specific data needs --------------------------------------------------------------


def test_sfl_test_groups_must_fit_in_the_test_set() -> None:
    # digits has 360 test samples: 4 groups of 90 fit, 4 of 100 do not
    topology = {"base_stations": 1, "mecs_per_bs": 1, "devices_per_mec": 3, "d2d": "off"}
    fits, topo = _scenario(
        scheme={"name": "sfl", "test_groups": 4, "group_size": 90}, topology=topology
    )
    check(fits, topo, available=None)
    s, topo = _scenario(
        scheme={"name": "sfl", "test_groups": 4, "group_size": 100}, topology=topology
    )

    msg = _error(s, topo)

    assert msg.startswith("scheme.group_size: 100 is invalid; allowed: test_groups x group_size")
    assert "<= 360 test samples" in msg and "at most 90" in msg and "(digits)" in msg
