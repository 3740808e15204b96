"""FedAvg: the sample-weighted mean of all updates (delegates to node.learning.aggregate.fedavg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.learning import aggregate
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
