"""Unit tests for node.learning.aggregators, against hand-computed tiny cases."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning import aggregate
from node.learning.aggregators import (
    AGGREGATORS,
    NoAcceptedUpdatesError,
    Update,
    accuracy_threshold,
    fedavg,
    krum,
    krum_scores,
    make_aggregator,
    median,
    multi_krum,
    top_k_accuracy,
    trimmed_mean,
)
from node.learning.weights import Weights


def _scalars(values: list[float], samples: list[float] | None = None) -> list[Update]:
    """One update per value: a 1-element float32 tensor 'w'."""
    counts = samples or [1.0] * len(values)
    return [
        Update({"w": np.array([v], np.float32)}, n, None, f"d{i}")
        for i, (v, n) in enumerate(zip(values, counts, strict=True))
    ]


def _w(weights: dict[str, np.ndarray]) -> float:
    """The single value of tensor 'w'."""
    return float(weights["w"][0])


def test_fedavg_matches_existing_and_accepts_pairs() -> None:
    a: Weights = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(0, np.int64)}
    b: Weights = {"w": np.array([5.0, -2.0], np.float32), "n": np.array(4, np.int64)}
    out = fedavg([Update(a, 1.0), Update(b, 3.0)])
    np.testing.assert_array_equal(out["w"], np.array([4.0, -1.0], np.float32))
    assert int(out["n"]) == 3 and out["n"].dtype == np.int64
    pairs = fedavg([(a, 1.0), (b, 3.0)])
    reference = aggregate.fedavg([(a, 1.0), (b, 3.0)])
    assert {k: v.tobytes() for k, v in pairs.items()} == {
        k: v.tobytes() for k, v in reference.items()
    }


def test_median_odd_even_and_per_coordinate() -> None:
    assert _w(median(_scalars([0, 1, 2, 10, 20]))) == 2.0
    assert _w(median(_scalars([1, 2, 3, 100]))) == 2.5
    ups = [
        Update({"w": np.array([1.0, 5.0], np.float32)}, 1),
        Update({"w": np.array([2.0, 4.0], np.float32)}, 100),  # sample counts are ignored
        Update({"w": np.array([9.0, 0.0], np.float32)}, 1),
    ]
    out = median(ups)
    np.testing.assert_array_equal(out["w"], np.array([2.0, 4.0], np.float32))
    assert out["w"].dtype == np.float32


def test_trimmed_mean_hand_computed() -> None:
    # beta 0.2 of 5 -> drop one each end: mean(1, 2, 10) = 13/3
    assert _w(trimmed_mean(_scalars([20, 1, 10, 0, 2]), beta=0.2)) == pytest.approx(13 / 3)
    assert _w(trimmed_mean(_scalars([1, 2, 3, 100]), beta=0.25)) == 2.5
    assert _w(trimmed_mean(_scalars([1, 2, 3, 100]), beta=0.0)) == 26.5  # plain mean
    assert _w(trimmed_mean(_scalars([1, 2, 3, 100]), beta=0.2)) == 26.5  # floor(0.8) = 0
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean(_scalars([1, 2]), beta=0.5)


def test_krum_scores_and_choice_hand_computed() -> None:
    ups = _scalars([0, 1, 2, 10, 20])
    # n - f - 2 = 2 nearest squared distances: 0:{1,4} 1:{1,1} 2:{1,4} 10:{64,81} 20:{100,324}
    np.testing.assert_array_equal(krum_scores(ups, f=1), [5.0, 2.0, 5.0, 145.0, 424.0])
    out = krum(ups, f=1)
    assert _w(out) == 1.0 and out["w"] is not ups[1].weights["w"]


def test_krum_uses_all_tensors_as_one_vector() -> None:
    ups = [
        Update({"a": np.array([0.0]), "b": np.array([0.0])}, 1),
        Update({"a": np.array([0.0]), "b": np.array([3.0])}, 1),
        Update({"a": np.array([4.0]), "b": np.array([0.0])}, 1),
        Update({"a": np.array([4.0]), "b": np.array([3.0])}, 1),
    ]
    # f = 0, 2 nearest; squared distances 9, 16, 25 -> every score is 9 + 16 = 25
    np.testing.assert_array_equal(krum_scores(ups, f=0), [25.0] * 4)


def test_multi_krum_hand_computed() -> None:
    ups = _scalars([0, 1, 2, 10, 20])
    assert _w(multi_krum(ups, f=1, m=3)) == 1.0  # mean of 1, 0, 2
    assert _w(multi_krum(ups, f=1)) == 3.25  # m = n - f = 4: mean of 1, 0, 2, 10
    assert _w(multi_krum(ups, f=1, m=1)) == _w(krum(ups, f=1))
    with pytest.raises(ValueError, match="m must be <= n"):
        multi_krum(ups, f=1, m=6)


@pytest.mark.parametrize(("f", "n"), [(1, 4), (2, 6), (3, 5)])
def test_krum_f_too_large(f: int, n: int) -> None:
    ups = _scalars([float(i) for i in range(n)])
    with pytest.raises(ValueError, match=rf"f={f} with n={n}"):
        krum(ups, f=f)
    with pytest.raises(ValueError, match=rf"f={f} with n={n}"):
        multi_krum(ups, f=f)


def _accurate() -> list[Update]:
    """Four updates with accuracies 0.5, 0.9, 0.7, 0.9 and samples 1, 1, 2, 3."""
    return [
        Update({"w": np.array([float(i)], np.float32)}, n, acc, f"d{i}")
        for i, (n, acc) in enumerate([(1, 0.5), (1, 0.9), (2, 0.7), (3, 0.9)])
    ]


def test_top_k_accuracy_hand_computed() -> None:
    ups = _accurate()
    assert _w(top_k_accuracy(ups, k=2)) == 2.5  # d1, d3: (1*1 + 3*3) / 4
    assert _w(top_k_accuracy(ups, k=3)) == pytest.approx(14 / 6)  # + d2: (1 + 9 + 4) / 6
    assert _w(top_k_accuracy(ups, k=1)) == 1.0  # tie 0.9: the earlier, d1
    assert _w(top_k_accuracy(ups, k=10)) == _w(fedavg(ups))
    with pytest.raises(ValueError, match="'d0' has no accuracy"):
        top_k_accuracy([Update({"w": np.zeros(1)}, 1, None, "d0")], k=1)


def test_accuracy_threshold_hand_computed() -> None:
    ups = _accurate()
    assert _w(accuracy_threshold(ups, threshold=0.7)) == pytest.approx(14 / 6)  # >= is inclusive
    assert _w(accuracy_threshold(ups, threshold=0.0)) == _w(fedavg(ups))
    with pytest.raises(NoAcceptedUpdatesError, match=r"threshold 0\.95"):
        accuracy_threshold(ups, threshold=0.95)
    assert issubclass(NoAcceptedUpdatesError, ValueError)


def test_integer_buffers_are_rounded_back() -> None:
    ups = [Update({"n": np.array([v], np.int64)}, 1) for v in (1, 2, 4, 5)]
    out = median(ups)
    assert out["n"].dtype == np.int64 and out["n"].tolist() == [3]  # median 3.0


def test_update_validation() -> None:
    with pytest.raises(ValueError, match="samples"):
        Update({"w": np.zeros(1)}, 0)
    with pytest.raises(ValueError, match="no updates"):
        median([])
    mixed = [Update({"w": np.zeros(2)}, 1, sender="a"), Update({"w": np.zeros(3)}, 1, sender="b")]
    with pytest.raises(ValueError, match="'b'"):
        median(mixed)


def test_registry_and_make_aggregator() -> None:
    assert set(AGGREGATORS) == {
        "fedavg",
        "median",
        "trimmed_mean",
        "krum",
        "multi_krum",
        "top_k_accuracy",
        "accuracy_threshold",
    }
    agg = make_aggregator("multi_krum", {"f": 1, "m": 3})
    assert _w(agg(_scalars([0, 1, 2, 10, 20]))) == 1.0
    assert _w(make_aggregator("fedavg")(_scalars([1, 3]))) == 2.0
    with pytest.raises(ValueError, match="unknown aggregator"):
        make_aggregator("mean")
    with pytest.raises(ValueError, match="no parameter 'alpha'"):
        make_aggregator("median", {"alpha": 1})
    with pytest.raises(ValueError, match="beta"):
        make_aggregator("trimmed_mean", {"beta": 0.7})
    with pytest.raises(ValueError, match="'k'"):
        make_aggregator("top_k_accuracy", {})
    with pytest.raises(ValueError, match="f must be an integer"):
        make_aggregator("krum", {"f": 1.5})
