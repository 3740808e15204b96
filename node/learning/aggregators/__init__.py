"""Robust and selective aggregators over `Update`s, with a validated registry.

Every aggregator is a pure function `(updates: Sequence[Update], **params) -> Weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from node.learning.aggregators.accuracy_threshold import (
    AccuracyThresholdParams,
    NoAcceptedUpdatesError,
    accepted,
    accuracy_threshold,
)
from node.learning.aggregators.fedavg import FedAvgParams, fedavg
from node.learning.aggregators.krum import KrumParams, krum, krum_scores
from node.learning.aggregators.median import MedianParams, median
from node.learning.aggregators.multi_krum import MultiKrumParams, multi_krum
from node.learning.aggregators.top_k_accuracy import TopKParams, select_top_k, top_k_accuracy
from node.learning.aggregators.trimmed_mean import TrimmedMeanParams, trimmed_mean
from node.learning.aggregators.update import Update, as_updates
from node.learning.weights import Weights

__all__ = [
    "AGGREGATORS",
    "AccuracyThresholdParams",
    "AggregatorSpec",
    "FedAvgParams",
    "KrumParams",
    "MedianParams",
    "MultiKrumParams",
    "NoAcceptedUpdatesError",
    "TopKParams",
    "TrimmedMeanParams",
    "Update",
    "accepted",
    "accuracy_threshold",
    "as_updates",
    "fedavg",
    "krum",
    "krum_scores",
    "make_aggregator",
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


def make_aggregator(name: str, params: Mapping[str, Any] | None = None) -> Aggregator:
    """The aggregator `name` bound to `params`, validated now (ValueError naming what is wrong)."""
    spec = AGGREGATORS.get(name)
    if spec is None:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {tuple(AGGREGATORS)}")
    given = dict(params or {})
    fields = set(spec.params_cls.__dataclass_fields__)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"aggregator {name!r} has no parameter {unknown[0]!r}")
    try:
        validated = spec.params_cls(**given)
    except TypeError as exc:
        raise ValueError(f"aggregator {name!r}: {exc}") from exc
    return partial(spec.fn, **asdict(validated))
