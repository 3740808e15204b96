"""FedAvg: the sample-weighted mean of all updates (delegates to node.learning.aggregate.fedavg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from node.learning import aggregate
from node.learning.aggregators.strategy import Needs, Strategy, UpdateLike
from node.learning.aggregators.update import Update, as_updates, check_shapes
from node.learning.weights import Weights


@dataclass(frozen=True)
class FedAvgParams:
    """FedAvg takes no parameters."""


def fedavg(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
) -> Weights:
    """Sum_i n_i * w_i / sum_i n_i in float64, cast back to each tensor's dtype."""
    ups = as_updates(updates)
    check_shapes(ups)
    return aggregate.fedavg([(u.weights, float(u.samples)) for u in ups])


@dataclass(frozen=True)
class FedAvg(Strategy[FedAvgParams]):
    """FedAvg of every update; works on MECs' partials (hierarchical FedAvg is exact)."""

    name: ClassVar[str] = "fedavg"
    needs: ClassVar[Needs] = Needs(individual=False, accuracy=False)
    params_cls: ClassVar[type[FedAvgParams]] = FedAvgParams

    def _aggregate(self, kept: list[Update]) -> Weights:
        return fedavg(kept)

    def partial(self, updates: Sequence[UpdateLike], sender: str = "") -> Update:
        """The sample-weighted average of `updates` with their summed sample count."""
        ups = as_updates(updates)
        return Update(fedavg(ups), sum(float(u.samples) for u in ups), None, sender)
