"""SFL's contract rule: FedAvg over the updates whose accuracy is at least a threshold.

If no update qualifies, `NoAcceptedUpdatesError` (a ValueError) is raised; the caller decides
what a round without a new global model means (SFL: the global model is left unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from node.learning.aggregators.fedavg import fedavg
from node.learning.aggregators.strategy import (
    Needs,
    NoAcceptedUpdatesError,
    Selection,
    Strategy,
    UpdateLike,
    keep_and_reject,
)
from node.learning.aggregators.update import Update, as_updates, check_shapes
from node.learning.attacks._common import number
from node.learning.weights import Weights


@dataclass(frozen=True)
class AccuracyThresholdParams:
    """Accuracy threshold (same scale as the updates' accuracies; SFL uses its AA value)."""

    threshold: float

    def __post_init__(self) -> None:
        """Validate the threshold."""
        number("threshold", self.threshold)


def accepted(updates: Sequence[Update], threshold: float) -> list[Update]:
    """The updates with accuracy >= threshold, in order; ValueError if one lacks an accuracy."""
    AccuracyThresholdParams(threshold)
    out = []
    for u in updates:
        if u.accuracy is None:
            raise ValueError(f"update from {u.sender!r} has no accuracy; the threshold needs it")
        if u.accuracy >= threshold:
            out.append(u)
    return out


def accuracy_threshold(updates: Sequence[Update], threshold: float) -> Weights:
    """Sample-weighted FedAvg of the accepted updates; NoAcceptedUpdatesError if there are none."""
    ups = as_updates(updates)
    check_shapes(ups)
    kept = accepted(ups, threshold)
    if not kept:
        best = max(float(u.accuracy or 0.0) for u in ups)
        raise NoAcceptedUpdatesError(
            f"no update reached accuracy threshold {threshold} (best was {best})"
        )
    return fedavg(kept)


@dataclass(frozen=True)
class AccuracyThreshold(Strategy[AccuracyThresholdParams]):
    """SFL: keeps the updates whose accuracy is at least the threshold, FedAvg over them."""

    name: ClassVar[str] = "accuracy_threshold"
    needs: ClassVar[Needs] = Needs(individual=True, accuracy=True)
    params_cls: ClassVar[type[AccuracyThresholdParams]] = AccuracyThresholdParams

    def select(self, updates: Sequence[UpdateLike]) -> Selection:
        """The updates with accuracy >= threshold, in order; ValueError if one lacks it."""
        ups = as_updates(updates)
        threshold = self.params.threshold
        return keep_and_reject(
            ups,
            accepted(ups, threshold),
            "below_threshold",
            lambda u: f"accuracy {u.accuracy} < threshold {threshold}",
        )

    def _aggregate(self, kept: list[Update]) -> Weights:
        return fedavg(kept)
