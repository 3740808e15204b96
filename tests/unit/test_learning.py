"""Unit tests for node.learning: aggregation, partitioning, models, weights and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from node.learning.aggregate import combine_partials, fedavg, weighted_sum
from node.learning.datasets import load_dataset
from node.learning.models import MODELS, build_model, count_parameters
from node.learning.partition import PARTITIONS, partition
from node.learning.train import configure_torch_threads, evaluate, train_local
from node.learning.weights import get_weights, set_weights, weights_nbytes

configure_torch_threads(1)


# --- aggregate ---------------------------------------------------------------------------------


def test_fedavg_hand_computed() -> None:
    a: dict[str, np.ndarray] = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(0, np.int64)}
    b: dict[str, np.ndarray] = {"w": np.array([5.0, -2.0], np.float32), "n": np.array(4, np.int64)}
    out = fedavg([(a, 1.0), (b, 3.0)])
    # (1*1 + 3*5)/4 = 4 ; (1*2 + 3*-2)/4 = -1 ; (0 + 12)/4 = 3
    np.testing.assert_array_equal(out["w"], np.array([4.0, -1.0], np.float32))
    assert out["w"].dtype == np.float32
    assert out["n"].dtype == np.int64 and int(out["n"]) == 3


def test_fedavg_rounds_integer_buffers() -> None:
    a = {"n": np.array([1], np.int64)}
    b = {"n": np.array([2], np.int64)}
    assert fedavg([(a, 1.0), (b, 3.0)])["n"].tolist() == [2]  # 1.75 -> 2


def test_fedavg_single_update_is_identity() -> None:
    w = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(fedavg([(w, 7.0)])["x"], w["x"])


@pytest.mark.parametrize(
    "other",
    [
        {"y": np.zeros(2, np.float32)},
        {"w": np.zeros(3, np.float32)},
        {"w": np.zeros(2, np.float64)},
        {"w": np.zeros(2, np.float32), "extra": np.zeros(1, np.float32)},
    ],
)
def test_fedavg_rejects_mismatched_updates(other: dict[str, np.ndarray]) -> None:
    base = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ValueError):
        fedavg([(base, 1.0), (other, 1.0)])


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_fedavg_rejects_bad_weights(weight: float) -> None:
    w = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ValueError):
        fedavg([(w, 1.0), (w, weight)])


def test_fedavg_rejects_empty() -> None:
    with pytest.raises(ValueError):
        fedavg([])
    with pytest.raises(ValueError):
        combine_partials([])


def test_partial_sums_equal_flat_fedavg() -> None:
    rng = np.random.default_rng(0)
    updates = [
        (
            {
                "a": rng.normal(size=(4, 3)).astype(np.float32),
                "b": rng.normal(size=5).astype(np.float32),
            },
            float(rng.integers(1, 100)),
        )
        for _ in range(7)
    ]
    flat = fedavg(updates)
    combined = combine_partials([weighted_sum(updates[:3]), weighted_sum(updates[3:])])
    for key in flat:
        assert combined[key].dtype == np.float32
        np.testing.assert_allclose(combined[key], flat[key], atol=1e-6)
    sums, total = weighted_sum(updates)
    assert total == sum(w for _, w in updates)
    assert sums["a"].dtype == np.float64


def test_combine_partials_respects_dtypes() -> None:
    part = ({"n": np.array([6.0]), "w": np.array([3.0])}, 4.0)
    out = combine_partials([part], dtypes={"n": np.dtype(np.int64), "w": np.dtype(np.float32)})
    assert out["n"].dtype == np.int64 and out["n"].tolist() == [2]
    assert out["w"].dtype == np.float32


# --- partition ---------------------------------------------------------------------------------


def _balanced_labels(classes: int = 10, per_class: int = 100) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def _entropy(labels: np.ndarray, classes: int) -> float:
    p = np.bincount(labels, minlength=classes) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("n_parts", [1, 7, 20])
def test_partition_disjoint_covering_sorted(scheme: str, n_parts: int) -> None:
    labels = np.random.default_rng(1).permutation(_balanced_labels())
    parts = partition(labels, n_parts, scheme, seed=3, alpha=0.1)
    assert len(parts) == n_parts
    assert all(len(p) >= 1 for p in parts)
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(labels)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(len(labels)))


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_partition_deterministic(scheme: str) -> None:
    labels = _balanced_labels()
    a = partition(labels, 10, scheme, seed=42)
    b = partition(labels, 10, scheme, seed=42)
    c = partition(labels, 10, scheme, seed=43)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_balanced() -> None:
    parts = partition(_balanced_labels(), 7, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shards_limit_labels_per_part() -> None:
    labels = _balanced_labels()  # 20 shards of 50 never straddle a class boundary
    for p in partition(labels, 10, "shards", seed=5, shards_per_part=2):
        assert len(np.unique(labels[p])) <= 2
    uneven = np.random.default_rng(2).integers(0, 10, size=997)
    for p in partition(uneven, 13, "shards", seed=5, shards_per_part=3):
        assert len(np.unique(uneven[p])) <= 2 * 3  # each shard spans at most 2 classes


def test_dirichlet_small_alpha_is_skewed() -> None:
    labels = _balanced_labels()
    iid = partition(labels, 10, "iid", seed=0)
    skewed = partition(labels, 10, "dirichlet", seed=0, alpha=0.05)
    iid_h = np.mean([_entropy(labels[p], 10) for p in iid])
    skew_h = np.mean([_entropy(labels[p], 10) for p in skewed])
    assert skew_h < 0.5 * iid_h


def test_dirichlet_fills_empty_parts() -> None:
    labels = np.zeros(12, dtype=np.int64)
    parts = partition(labels, 12, "dirichlet", seed=0, alpha=1e-3)
    assert sorted(len(p) for p in parts) == [1] * 12


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"n_parts": 0, "scheme": "iid"}, "n_parts"),
        ({"n_parts": 1001, "scheme": "iid"}, "n_parts"),
        ({"n_parts": 2, "scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"n_parts": 2, "scheme": "bogus"}, "scheme"),
        ({"n_parts": 2, "scheme": "shards", "shards_per_part": 0}, "shards_per_part"),
        ({"n_parts": 600, "scheme": "shards", "shards_per_part": 2}, "shards_per_part"),
    ],
)
def test_partition_errors(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        partition(_balanced_labels(), seed=0, **kwargs)  # type: ignore[arg-type]


# --- models ------------------------------------------------------------------------------------


def test_mcmahan_cnn_parameter_count() -> None:
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    assert count_parameters(model) == 1_663_370


def test_alexnet_layers_and_parameter_count() -> None:
    model = build_model("alexnet", (1, 28, 28), 10, seed=0)
    kinds = [type(m) for m in model.children()]
    assert kinds.count(torch.nn.Conv2d) == 5
    assert kinds.count(torch.nn.MaxPool2d) == 3
    assert kinds.count(torch.nn.Linear) == 3
    assert [m.p for m in model.children() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert count_parameters(model) == 428_682
    assert count_parameters(build_model("alexnet", (3, 32, 32), 10, seed=0)) == 543_946


@pytest.mark.parametrize("name", [n for n in MODELS if n != "alexnet"])
def test_only_alexnet_has_dropout(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10, seed=0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_alexnet_dropout_only_in_training_mode() -> None:
    model = build_model("alexnet", (1, 28, 28), 10, seed=0)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(1)
        assert not torch.equal(first, model(x))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_model_forward_shapes(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10, seed=0)
    out = model(torch.zeros(4, *shape))
    assert out.shape == (4, 10)


@pytest.mark.parametrize("name", MODELS)
def test_model_init_deterministic(name: str) -> None:
    a = get_weights(build_model(name, (1, 8, 8), 10, seed=7))
    b = get_weights(build_model(name, (1, 8, 8), 10, seed=7))
    c = get_weights(build_model(name, (1, 8, 8), 10, seed=8))
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_build_model_does_not_disturb_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("mlp", (1, 8, 8), 10, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_build_model_errors() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", (1, 8, 8), 10, seed=0)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn", (64,), 10, seed=0)


# --- weights -----------------------------------------------------------------------------------


def _model_with_buffers() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_weights_round_trip() -> None:
    src = build_model("small-cnn", (1, 8, 8), 10, seed=1)
    dst = build_model("small-cnn", (1, 8, 8), 10, seed=2)
    w = get_weights(src)
    assert list(w) == list(src.state_dict())
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in w.values())
    set_weights(dst, w)
    w2 = get_weights(dst)
    assert all(np.array_equal(w[k], w2[k]) for k in w)
    w["0.weight"][...] = 0.0  # copies: mutating them does not touch the model
    assert not np.all(get_weights(dst)["0.weight"] == 0.0)
    assert weights_nbytes(w) == 4 * count_parameters(src)


def test_weights_include_buffers() -> None:
    w = get_weights(_model_with_buffers())
    assert w["1.num_batches_tracked"].dtype == np.int64
    assert "1.running_mean" in w
    set_weights(_model_with_buffers(), w)


def test_set_weights_accepts_read_only_arrays() -> None:
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    w = get_weights(model)
    for a in w.values():
        a.flags.writeable = False
    set_weights(model, w)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda w: w.pop("1.weight"), "1.weight"),
        (lambda w: w.update({"bogus": np.zeros(1, np.float32)}), "bogus"),
        (lambda w: w.update({"3.weight": w["3.weight"].T.copy()}), "shape"),
        (lambda w: w.update({"1.bias": w["1.bias"].astype(np.float64)}), "dtype"),
        (lambda w: w.update({"1.bias": w["1.bias"].tolist()}), "numpy"),
    ],
)
def test_set_weights_rejects_bad_input(mutate: object, match: str) -> None:
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    before = get_weights(model)
    w = get_weights(model)
    mutate(w)  # type: ignore[operator]
    with pytest.raises(ValueError, match=match):
        set_weights(model, w)
    after = get_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


# --- training ----------------------------------------------------------------------------------


def test_train_mlp_on_digits_reaches_90_percent() -> None:
    ds = load_dataset("digits", seed=0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, seed=0)
    before = evaluate(model, ds.test_x, ds.test_y)
    result = train_local(model, ds.train_x, ds.train_y, epochs=5, batch_size=32, lr=0.1, seed=0)
    after = evaluate(model, ds.test_x, ds.test_y)
    assert result.samples == len(ds.train_y)
    assert result.steps == 5 * -(-len(ds.train_y) // 32)
    assert result.seconds >= 0 and np.isfinite(result.loss)
    assert after.samples == len(ds.test_y)
    assert before.accuracy < 0.5
    assert after.accuracy > 0.9
    assert after.loss < before.loss


def test_train_is_deterministic() -> None:
    ds = load_dataset("digits", seed=0)
    x, y = ds.train_x[:300], ds.train_y[:300]
    weights = []
    for _ in range(2):
        model = build_model("small-cnn", ds.input_shape, ds.num_classes, seed=3)
        train_local(model, x, y, epochs=1, batch_size=16, lr=0.05, seed=9, momentum=0.9)
        weights.append(get_weights(model))
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])


def _train_alexnet(seed: int, global_seed: int) -> dict[str, np.ndarray]:
    """Alexnet (dropout 0.5) trained on 24 random 28x28 samples, the global RNG set anywhere."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 24).astype(np.int64)
    model = build_model("alexnet", (1, 28, 28), 10, seed=1)
    torch.manual_seed(global_seed)  # what the caller's global generator holds must not matter
    train_local(model, x, y, epochs=2, batch_size=8, lr=0.05, seed=seed)
    return get_weights(model)


def test_train_with_dropout_is_reproducible_and_leaks_nothing() -> None:
    first = _train_alexnet(seed=5, global_seed=100)
    again = _train_alexnet(seed=5, global_seed=200)
    other = _train_alexnet(seed=6, global_seed=100)

    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


def test_train_restores_the_global_rng_state() -> None:
    model = build_model("alexnet", (1, 28, 28), 10, seed=1)
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8, dtype=np.int64)
    torch.manual_seed(42)
    before = torch.get_rng_state()

    train_local(model, x, y, epochs=1, batch_size=4, lr=0.05, seed=3)

    assert torch.equal(torch.get_rng_state(), before)


def test_train_and_evaluate_validate_inputs() -> None:
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x = np.zeros((4, 1, 8, 8), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError):
        train_local(model, x, y[:3], epochs=1, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(ValueError):
        train_local(model, x, y, epochs=0, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(ValueError):
        evaluate(model, x[:0], y[:0])


def test_configure_torch_threads_is_idempotent() -> None:
    configure_torch_threads(1)
    configure_torch_threads(1)
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        configure_torch_threads(0)
