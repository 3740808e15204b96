"""Unit tests for node.learning.attacks: device data and update attacks and their registry."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning.attacks import (
    DEVICE_ATTACKS,
    FreeRiderParams,
    GaussianParams,
    LabelFlipParams,
    LazyParams,
    ScaleParams,
    SignFlipParams,
    apply_data_attack,
    apply_update_attack,
    flip_labels,
    free_rider,
    gaussian,
    label_flip,
    lazy,
    make_params,
    scale,
    sign_flip,
)
from node.learning.weights import Weights


def _data(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features and labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 2)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    return x, y


def _models() -> tuple[Weights, Weights]:
    """(trained w, global g) with a float tensor, a float64 tensor and an integer buffer."""
    g: Weights = {
        "a": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        "b": np.array([0.5, -0.5], np.float64),
        "n": np.array(7, np.int64),
    }
    w: Weights = {
        "a": np.array([[2.0, 2.0], [1.0, 5.0]], np.float32),
        "b": np.array([1.5, -1.0], np.float64),
        "n": np.array(9, np.int64),
    }
    return w, g


def _snapshot(weights: Weights) -> dict[str, bytes]:
    """Bytes of each array, to prove inputs are not mutated."""
    return {k: v.tobytes() for k, v in weights.items()}


# --- label flipping ----------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.0, 0.05, 0.1, 0.15, 0.2, 0.333, 1.0])
def test_random_flip_changes_exactly_round_lambda_n(strength: float) -> None:
    x, y = _data()
    y_before, x_before = y.tobytes(), x.tobytes()
    new_y, flipped = flip_labels(y, LabelFlipParams(strength), np.random.default_rng(1), 10)
    k = int(np.floor(strength * len(y) + 0.5))
    assert len(flipped) == k == len(np.unique(flipped))
    changed = np.flatnonzero(new_y != y)
    np.testing.assert_array_equal(changed, flipped)  # every chosen label changed, no other
    assert new_y.dtype == y.dtype and y.tobytes() == y_before and x.tobytes() == x_before
    assert new_y.min() >= 0 and new_y.max() < 10


def test_random_flip_rounds_half_up_and_covers_other_classes() -> None:
    y = np.zeros(10, np.int64)
    new_y, flipped = flip_labels(y, LabelFlipParams(0.05), np.random.default_rng(0), 10)
    assert len(flipped) == 1  # 0.05 * 10 = 0.5 -> 1
    y = np.zeros(5000, np.int64)
    new_y, _ = flip_labels(y, LabelFlipParams(1.0), np.random.default_rng(0), 4)
    assert set(np.unique(new_y).tolist()) == {1, 2, 3}


def test_targeted_flip_counts_source_samples_only() -> None:
    y = np.array([0, 1, 1, 2, 1, 1, 3, 1, 1, 1, 1, 0], np.int64)  # eight 1s
    params = LabelFlipParams(0.25, mode="targeted", source=1, target=7)
    new_y, flipped = flip_labels(y, params, np.random.default_rng(3), 10)
    assert len(flipped) == 2 and np.all(y[flipped] == 1) and np.all(new_y[flipped] == 7)
    untouched = np.setdiff1d(np.arange(len(y)), flipped)
    np.testing.assert_array_equal(new_y[untouched], y[untouched])


def test_label_flip_returns_x_unchanged_and_is_seeded() -> None:
    x, y = _data()
    x1, y1 = label_flip(x, y, LabelFlipParams(0.2), np.random.default_rng(5), 10)
    x2, y2 = label_flip(x, y, LabelFlipParams(0.2), np.random.default_rng(5), 10)
    assert x1 is x and x2 is x
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"strength": 1.5}, "strength"),
        ({"strength": -0.1}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"strength": 0.1, "mode": "odd"}, "mode"),
        ({"strength": 0.1, "mode": "targeted", "source": 1}, "target"),
        ({"strength": 0.1, "mode": "targeted", "source": 2, "target": 2}, "source"),
        ({"strength": 0.1, "source": 2}, "source"),
    ],
)
def test_label_flip_params_validated(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LabelFlipParams(**kwargs)  # type: ignore[arg-type]


def test_flip_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        flip_labels(np.array([0, 10]), LabelFlipParams(0.5), np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="num_classes"):
        params = LabelFlipParams(0.5, mode="targeted", source=1, target=12)
        flip_labels(np.array([0, 1]), params, np.random.default_rng(0), 10)


# --- lazy --------------------------------------------------------------------------------------


def test_lazy_keeps_a_fraction_in_order() -> None:
    x, y = _data(n=101)
    x_before = x.tobytes()
    lx, ly = lazy(x, y, LazyParams(0.3), np.random.default_rng(0), 10)
    assert len(lx) == len(ly) == 30  # round(30.3)
    rows = [int(np.flatnonzero((x == r).all(axis=(1, 2)))[0]) for r in lx]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(ly, y[rows])
    assert x.tobytes() == x_before
    with pytest.raises(ValueError, match="fraction"):
        LazyParams(0.0)


# --- update attacks ----------------------------------------------------------------------------


def test_sign_flip_hand_computed() -> None:
    w, g = _models()
    before = _snapshot(w), _snapshot(g)
    out = sign_flip(w, g, SignFlipParams(2.0), np.random.default_rng(0))
    # g - 2 (w - g) = 3g - 2w
    np.testing.assert_array_equal(out["a"], np.array([[-1.0, 2.0], [7.0, 2.0]], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([-1.5, 0.5]))
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.float64
    assert out["n"].tobytes() == w["n"].tobytes()  # non-float buffer untouched
    assert (_snapshot(w), _snapshot(g)) == before


def test_scale_is_model_replacement() -> None:
    w, g = _models()
    out = scale(w, g, ScaleParams(3.0), np.random.default_rng(0))
    np.testing.assert_array_equal(out["a"], np.array([[4.0, 2.0], [-3.0, 7.0]], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([3.5, -2.0]))
    assert out["n"].tobytes() == w["n"].tobytes()
    same = scale(w, g, ScaleParams(1.0), np.random.default_rng(0))
    assert _snapshot(same) == _snapshot(w)


def test_gaussian_replace_ignores_training_and_additive_keeps_it() -> None:
    w, g = _models()
    w2 = {**w, "a": w["a"] + 100.0}
    r1 = gaussian(w, g, GaussianParams(0.1), np.random.default_rng(4))
    r2 = gaussian(w2, g, GaussianParams(0.1), np.random.default_rng(4))
    assert _snapshot(r1) == _snapshot({**r2, "n": w["n"]})  # replace: g + noise, whatever w is
    add = gaussian(w, g, GaussianParams(0.1, mode="additive"), np.random.default_rng(4))
    noise_b = r1["b"] - g["b"]
    np.testing.assert_allclose(add["b"] - w["b"], noise_b, atol=1e-12)
    assert add["n"].tobytes() == w["n"].tobytes()
    zero = gaussian(w, g, GaussianParams(0.0, mode="additive"), np.random.default_rng(4))
    assert _snapshot(zero) == _snapshot(w)


def test_gaussian_noise_std() -> None:
    g = {"a": np.zeros(200_000, np.float64)}
    out = gaussian(g, g, GaussianParams(0.5), np.random.default_rng(0))
    assert abs(out["a"].std() - 0.5) < 0.01


def test_free_rider_global_and_stale() -> None:
    w, g = _models()
    out = free_rider(w, g, FreeRiderParams(), np.random.default_rng(0))
    assert _snapshot(out) == _snapshot(g)
    prev = {"a": np.full((2, 2), 0.5, np.float32), "b": np.array([1.0, 2.0])}
    stale = free_rider(w, g, FreeRiderParams("stale"), np.random.default_rng(0), prev)
    np.testing.assert_array_equal(stale["a"], g["a"] + np.float32(0.5))
    np.testing.assert_array_equal(stale["b"], np.array([1.5, 1.5]))
    assert stale["n"].tobytes() == g["n"].tobytes()
    first = free_rider(w, g, FreeRiderParams("stale"), np.random.default_rng(0), None)
    assert _snapshot(first) == _snapshot(g)


def test_update_attacks_reject_mismatched_models() -> None:
    w, g = _models()
    with pytest.raises(ValueError, match="'b'"):
        sign_flip(w, {**g, "b": np.zeros(3)}, SignFlipParams(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        SignFlipParams(0.0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianParams(-1.0)
    with pytest.raises(ValueError, match="mode"):
        FreeRiderParams("sometimes")


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_kinds() -> None:
    kinds = {name: spec.kind for name, spec in DEVICE_ATTACKS.items()}
    assert kinds == {
        "label_flip": "data",
        "lazy": "data",
        "unreliable": "partition",
        "sign_flip": "update",
        "scale": "update",
        "gaussian": "update",
        "free_rider": "update",
    }


def test_apply_by_name_validates() -> None:
    x, y = _data()
    _, new_y = apply_data_attack(
        "label_flip", {"strength": 0.1}, x, y, np.random.default_rng(0), 10
    )
    assert int((new_y != y).sum()) == 20
    w, g = _models()
    out = apply_update_attack("scale", {"factor": 3.0}, w, g, np.random.default_rng(0))
    assert float(out["b"][0]) == 3.5
    with pytest.raises(ValueError, match="no parameter 'lam'"):
        make_params(DEVICE_ATTACKS, "label_flip", {"lam": 0.1})
    with pytest.raises(ValueError, match="unknown attack"):
        make_params(DEVICE_ATTACKS, "nope", {})
    with pytest.raises(ValueError, match="not a data attack"):
        apply_data_attack("scale", {"factor": 2.0}, x, y, np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="strength"):
        apply_data_attack("label_flip", {}, x, y, np.random.default_rng(0), 10)
