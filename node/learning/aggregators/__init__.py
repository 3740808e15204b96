"""Robust and selective aggregators over `Update`s, with a validated registry.

Every aggregator is a pure function `(updates: Sequence[Update], **params) -> Weights` and a
`Strategy` object (`make_strategy`) that says what it needs from the roles (`Needs`) and
splits its work into `select` (kept and rejected updates, with reasons) and `aggregate`
(see `strategy.py`). Adding an aggregator: one file with its params class, function and
strategy, and one line in `_STRATEGY_CLASSES` and `AGGREGATORS` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from node.learning.aggregators.accuracy_threshold import (
    AccuracyThreshold,
    AccuracyThresholdParams,
    accepted,
    accuracy_threshold,
)
from node.learning.aggregators.fedavg import FedAvg, FedAvgParams, fedavg
from node.learning.aggregators.krum import Krum, KrumParams, krum, krum_scores
from node.learning.aggregators.median import Median, MedianParams, median
from node.learning.aggregators.multi_krum import MultiKrum, MultiKrumParams, multi_krum
from node.learning.aggregators.strategy import (
    Combined,
    Needs,
    NoAcceptedUpdatesError,
    Rejection,
    Selection,
    Strategy,
)
from node.learning.aggregators.top_k_accuracy import (
    TopKAccuracy,
    TopKParams,
    select_top_k,
    top_k_accuracy,
)
from node.learning.aggregators.trimmed_mean import TrimmedMean, TrimmedMeanParams, trimmed_mean
from node.learning.aggregators.update import Update, as_updates
from node.learning.weights import Weights

__all__ = [
    "AGGREGATORS",
    "AGGREGATOR_NAMES",
    "STRATEGIES",
    "AccuracyThreshold",
    "AccuracyThresholdParams",
    "AggregatorSpec",
    "Combined",
    "FedAvg",
    "FedAvgParams",
    "Krum",
    "KrumParams",
    "Median",
    "MedianParams",
    "MultiKrum",
    "MultiKrumParams",
    "Needs",
    "NoAcceptedUpdatesError",
    "Rejection",
    "Selection",
    "Strategy",
    "TopKAccuracy",
    "TopKParams",
    "TrimmedMean",
    "TrimmedMeanParams",
    "Update",
    "accepted",
    "accuracy_threshold",
    "as_updates",
    "fedavg",
    "krum",
    "krum_scores",
    "make_aggregator",
    "make_strategy",
    "median",
    "multi_krum",
    "select_top_k",
    "top_k_accuracy",
    "trimmed_mean",
]

Aggregator = Callable[[Sequence[Update]], Weights]


@dataclass(frozen=True)
class AggregatorSpec:
    """A registered aggregator: its function and the frozen dataclass validating its params."""

    name: str
    fn: Callable[..., Weights]
    params_cls: type[Any]


AGGREGATORS: dict[str, AggregatorSpec] = {
    spec.name: spec
    for spec in (
        AggregatorSpec("fedavg", fedavg, FedAvgParams),
        AggregatorSpec("median", median, MedianParams),
        AggregatorSpec("trimmed_mean", trimmed_mean, TrimmedMeanParams),
        AggregatorSpec("krum", krum, KrumParams),
        AggregatorSpec("multi_krum", multi_krum, MultiKrumParams),
        AggregatorSpec("top_k_accuracy", top_k_accuracy, TopKParams),
        AggregatorSpec("accuracy_threshold", accuracy_threshold, AccuracyThresholdParams),
    )
}


_STRATEGY_CLASSES: tuple[type[Strategy[Any]], ...] = (
    FedAvg,
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    TopKAccuracy,
    AccuracyThreshold,
)
STRATEGIES: dict[str, type[Strategy[Any]]] = {cls.name: cls for cls in _STRATEGY_CLASSES}
# The registered names, in registry order (a scenario's `aggregator.name` Literal equals this).
AGGREGATOR_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def _validated_params(name: str, params: Mapping[str, Any] | None) -> Any:
    """The params object of aggregator `name`; ValueError naming what is wrong."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {AGGREGATOR_NAMES}")
    given = dict(params or {})
    fields = set(cls.params_cls.__dataclass_fields__)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"aggregator {name!r} has no parameter {unknown[0]!r}")
    try:
        return cls.params_cls(**given)
    except TypeError as exc:
        raise ValueError(f"aggregator {name!r}: {exc}") from exc


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy[Any]:
    """The strategy `name` with `params` validated now (ValueError naming what is wrong)."""
    validated = _validated_params(name, params)
    return STRATEGIES[name](validated)


def make_aggregator(name: str, params: Mapping[str, Any] | None = None) -> Aggregator:
    """The aggregator `name` bound to `params`, validated now (ValueError naming what is wrong)."""
    validated = _validated_params(name, params)
    return partial(AGGREGATORS[name].fn, **asdict(validated))
