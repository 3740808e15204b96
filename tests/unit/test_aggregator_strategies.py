"""Aggregation strategies (node.learning.aggregators.strategy): needs, select + aggregate equal
to the pure aggregator functions bit for bit, rejection reasons, parameter errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from node.learning import aggregate
from node.learning.aggregators import (
    AGGREGATOR_NAMES,
    AGGREGATORS,
    STRATEGIES,
    FedAvg,
    Needs,
    NoAcceptedUpdatesError,
    Strategy,
    TrimmedMeanParams,
    Update,
    make_aggregator,
    make_strategy,
)
from node.learning.weights import Weights

# Parameters per aggregator exercised below (several per rule where they change the selection).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("fedavg", {}),
    ("median", {}),
    ("trimmed_mean", {"beta": 0.0}),
    ("trimmed_mean", {"beta": 0.2}),
    ("krum", {"f": 0}),
    ("krum", {"f": 2}),
    ("multi_krum", {"f": 1}),
    ("multi_krum", {"f": 2, "m": 3}),
    ("top_k_accuracy", {"k": 1}),
    ("top_k_accuracy", {"k": 4}),
    ("top_k_accuracy", {"k": 50}),
    ("accuracy_threshold", {"threshold": 0.0}),
    ("accuracy_threshold", {"threshold": 0.5}),
]


def _random_updates(seed: int, n: int = 9) -> list[Update]:
    """n updates of a small model (float32 matrix and bias, float64 vector, int64 counter)
    with random sample counts and accuracies on a 0.05 grid (so ties occur)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        weights: Weights = {
            "fc.weight": rng.normal(0, 1, (4, 3)).astype(np.float32),
            "fc.bias": rng.normal(0, 1, 4).astype(np.float32),
            "scale": rng.normal(0, 10, 2),
            "bn.num_batches_tracked": np.array(rng.integers(0, 1000), np.int64),
        }
        samples = int(rng.integers(1, 200))
        accuracy = round(float(rng.integers(0, 21)) * 0.05, 2)
        out.append(Update(weights, samples, accuracy, f"dev{i}"))
    return out


def _bytes(weights: Weights) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return {k: (str(v.dtype), v.shape, v.tobytes()) for k, v in weights.items()}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("name", "params"), CASES)
def test_combine_is_bit_identical_to_the_function(
    name: str, params: dict[str, Any], seed: int
) -> None:
    updates = _random_updates(seed)
    strategy = make_strategy(name, params)
    expected = make_aggregator(name, params)(updates)

    selection = strategy.select(updates)
    combined = strategy.combine(updates)

    assert combined.weights is not None
    assert _bytes(strategy.aggregate(selection.kept)) == _bytes(expected)
    assert _bytes(combined.weights) == _bytes(expected)
    assert combined.selection == selection
    # every update is either kept or rejected, once
    seen = [u.sender for u in selection.kept] + [r.update.sender for r in selection.rejected]
    assert sorted(seen) == sorted(u.sender for u in updates)


def test_fedavg_over_partials_is_todays_publisher_average() -> None:
    """The hierarchical case: MECs pre-average with `partial`, the publisher combines the
    partials; bit-identical to the MEC's and the publisher's own `aggregate.fedavg` calls."""
    updates = _random_updates(5, n=12)
    groups = [updates[0:5], updates[5:6], updates[6:12]]
    strategy = make_strategy("fedavg")

    partials = [strategy.partial(g, sender=f"mec{i}") for i, g in enumerate(groups)]
    combined = strategy.combine(partials)

    for g, p in zip(groups, partials, strict=True):
        mec_average = aggregate.fedavg([(u.weights, u.samples) for u in g])
        assert _bytes(dict(p.weights)) == _bytes(mec_average)
        assert int(p.samples) == sum(int(u.samples) for u in g)
    publisher = aggregate.fedavg([(p.weights, float(p.samples)) for p in partials])
    assert combined.weights is not None
    assert _bytes(combined.weights) == _bytes(publisher)
    assert combined.selection.kept_senders == ["mec0", "mec1", "mec2"]
    assert combined.selection.rejected == ()


def test_needs() -> None:
    expected = {
        "fedavg": Needs(individual=False, accuracy=False),
        "median": Needs(individual=True, accuracy=False),
        "trimmed_mean": Needs(individual=True, accuracy=False),
        "krum": Needs(individual=True, accuracy=False),
        "multi_krum": Needs(individual=True, accuracy=False),
        "top_k_accuracy": Needs(individual=True, accuracy=True),
        "accuracy_threshold": Needs(individual=True, accuracy=True),
    }
    assert {name: cls.needs for name, cls in STRATEGIES.items()} == expected


def test_registry_names() -> None:
    assert AGGREGATOR_NAMES == tuple(AGGREGATORS) == tuple(STRATEGIES)
    assert all(STRATEGIES[n].name == n for n in AGGREGATOR_NAMES)


def _accurate() -> list[Update]:
    """Accuracies 0.5, 0.9, 0.7, 0.9 and samples 1, 1, 2, 3."""
    return [
        Update({"w": np.array([float(i)], np.float32)}, n, acc, f"d{i}")
        for i, (n, acc) in enumerate([(1, 0.5), (1, 0.9), (2, 0.7), (3, 0.9)])
    ]


def test_accuracy_threshold_rejects_with_reasons() -> None:
    selection = make_strategy("accuracy_threshold", {"threshold": 0.7}).select(_accurate())
    assert [u.sender for u in selection.kept] == ["d1", "d2", "d3"]  # >= is inclusive
    assert selection.reasons == {"d0": "below_threshold"}
    assert "0.5 < threshold 0.7" in selection.rejected[0].detail


def test_nothing_kept_leaves_the_weights_none_and_aggregate_raises() -> None:
    strategy = make_strategy("accuracy_threshold", {"threshold": 0.95})
    combined = strategy.combine(_accurate())
    assert combined.weights is None
    assert combined.selection.kept == ()
    assert combined.selection.reasons == {f"d{i}": "below_threshold" for i in range(4)}
    with pytest.raises(NoAcceptedUpdatesError, match="'accuracy_threshold' kept no update"):
        strategy.aggregate([])
    assert issubclass(NoAcceptedUpdatesError, ValueError)


def test_top_k_keeps_best_first_and_rejects_the_rest() -> None:
    selection = make_strategy("top_k_accuracy", {"k": 2}).select(_accurate())
    assert [u.sender for u in selection.kept] == ["d1", "d3"]  # ties: the earlier first
    assert selection.reasons == {"d0": "not_top_k", "d2": "not_top_k"}
    assert selection.kept_senders == ["d1", "d3"]


def test_accuracy_strategies_need_an_accuracy() -> None:
    ups = [Update({"w": np.zeros(1)}, 1, None, "d0")]
    for name, params in (("top_k_accuracy", {"k": 1}), ("accuracy_threshold", {"threshold": 0})):
        with pytest.raises(ValueError, match="'d0' has no accuracy"):
            make_strategy(name, params).select(ups)


def _scalars(values: list[float]) -> list[Update]:
    return [
        Update({"w": np.array([v], np.float32)}, 1, None, f"d{i}") for i, v in enumerate(values)
    ]


def test_krum_keeps_one_and_multi_krum_m_with_reasons() -> None:
    ups = _scalars([0, 1, 2, 10, 20])  # Krum scores (f=1): 5, 2, 5, 145, 424
    krum = make_strategy("krum", {"f": 1}).select(ups)
    assert [u.sender for u in krum.kept] == ["d1"]
    assert krum.reasons == {f"d{i}": "krum_score" for i in (0, 2, 3, 4)}
    assert krum.rejected[0].detail == "Krum score 5 > kept 2"

    multi = make_strategy("multi_krum", {"f": 1, "m": 3}).select(ups)
    assert [u.sender for u in multi.kept] == ["d1", "d0", "d2"]  # best first, stable on ties
    assert multi.reasons == {"d3": "krum_score", "d4": "krum_score"}
    with pytest.raises(ValueError, match="m must be <= n"):
        make_strategy("multi_krum", {"f": 1, "m": 6}).select(ups)
    with pytest.raises(ValueError, match="f=2 with n=5"):
        make_strategy("krum", {"f": 2}).select(ups)


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed_mean"])
def test_rules_that_use_every_update_reject_none(name: str) -> None:
    params = {"beta": 0.2} if name == "trimmed_mean" else {}
    ups = _scalars([0, 1, 2, 10, 20])
    selection = make_strategy(name, params).select(ups)
    assert selection.kept == tuple(ups) and selection.rejected == ()


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="no updates"):
        make_strategy("median").combine([])


def test_only_fedavg_makes_partials() -> None:
    assert isinstance(make_strategy("fedavg"), FedAvg)
    with pytest.raises(ValueError, match="'median' needs every update"):
        make_strategy("median").partial(_scalars([1, 2]))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mean", {}, r"unknown aggregator 'mean'; choose one of \('fedavg', "),
        ("median", {"alpha": 1}, "aggregator 'median' has no parameter 'alpha'"),
        ("trimmed_mean", {"beta": 0.7}, r"beta must be in \[0, 0.5\), got 0.7"),
        ("top_k_accuracy", {}, "aggregator 'top_k_accuracy': .*'k'"),
        ("top_k_accuracy", {"k": 0}, "k must be >= 1, got 0"),
        ("krum", {"f": 1.5}, "f must be an integer, got 1.5"),
        ("multi_krum", {"f": 1, "m": 0}, "m must be >= 1, got 0"),
        ("accuracy_threshold", {"threshold": "high"}, "threshold must be a number"),
    ],
)
def test_bad_params_same_one_line_errors_as_make_aggregator(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as strategy_error:
        make_strategy(name, params)
    with pytest.raises(ValueError) as function_error:
        make_aggregator(name, params)
    assert str(strategy_error.value) == str(function_error.value)
    assert "\n" not in str(strategy_error.value)


def test_strategies_and_params_are_frozen_and_typed() -> None:
    strategy = make_strategy("trimmed_mean", {"beta": 0.1})
    assert strategy.params == TrimmedMeanParams(0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.params = TrimmedMeanParams(0.2)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.params.beta = 0.3
    with pytest.raises(TypeError, match="'fedavg' takes FedAvgParams, not TrimmedMeanParams"):
        FedAvg(TrimmedMeanParams(0.1))  # type: ignore[arg-type]
    assert make_strategy("krum", {"f": 1}) == make_strategy("krum", {"f": 1})
    assert isinstance(strategy, Strategy)
