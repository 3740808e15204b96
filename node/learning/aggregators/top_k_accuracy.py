"""BEES: FedAvg over the k updates with the highest reported accuracy (ties: earlier first)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from node.learning.aggregators.fedavg import fedavg
from node.learning.aggregators.strategy import (
    Needs,
    Selection,
    Strategy,
    UpdateLike,
    keep_and_reject,
)
from node.learning.aggregators.update import Update, as_updates, check_shapes
from node.learning.attacks._common import integer
from node.learning.weights import Weights


@dataclass(frozen=True)
class TopKParams:
    """k >= 1 updates kept (all of them when fewer than k arrive)."""

    k: int

    def __post_init__(self) -> None:
        """Validate k."""
        if integer("k", self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


def select_top_k(updates: Sequence[Update], k: int) -> list[Update]:
    """The min(k, n) updates with the highest accuracy, best first; ValueError if one lacks it."""
    TopKParams(k)
    for u in updates:
        if u.accuracy is None:
            raise ValueError(f"update from {u.sender!r} has no accuracy; top_k_accuracy needs it")
    order = sorted(range(len(updates)), key=lambda i: (-float(updates[i].accuracy or 0.0), i))
    return [updates[i] for i in order[:k]]


def top_k_accuracy(updates: Sequence[Update], k: int) -> Weights:
    """Sample-weighted FedAvg of the k most accurate updates."""
    ups = as_updates(updates)
    check_shapes(ups)
    return fedavg(select_top_k(ups, k))


@dataclass(frozen=True)
class TopKAccuracy(Strategy[TopKParams]):
    """BEES: keeps the k most accurate updates (best first), FedAvg over them."""

    name: ClassVar[str] = "top_k_accuracy"
    needs: ClassVar[Needs] = Needs(individual=True, accuracy=True)
    params_cls: ClassVar[type[TopKParams]] = TopKParams

    def select(self, updates: Sequence[UpdateLike]) -> Selection:
        """The min(k, n) most accurate updates; ValueError if one lacks an accuracy."""
        ups = as_updates(updates)
        k = self.params.k
        kept = select_top_k(ups, k)
        worst = float(kept[-1].accuracy or 0.0)
        return keep_and_reject(
            ups,
            kept,
            "not_top_k",
            lambda u: f"accuracy {u.accuracy} below the k={k} best (the k-th has {worst})",
        )

    def _aggregate(self, kept: list[Update]) -> Weights:
        return fedavg(kept)
