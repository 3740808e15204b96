"""Model replacement / boosting: the update is scaled, w' = g + s * (w - g)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import apply_update, number, update_of
from node.learning.weights import Weights


@dataclass(frozen=True)
class ScaleParams:
    """Boost factor s (finite; e.g. the number of devices for Bagdasaryan-style replacement)."""

    factor: float

    def __post_init__(self) -> None:
        """Validate the factor."""
        number("factor", self.factor)


def scale(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    params: ScaleParams,
    rng: np.random.Generator,
    previous_update: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Update attack: g + s * (w - g) on floating tensors; non-floating tensors copied from w."""
    del rng, previous_update
    delta = update_of(weights, global_weights)
    return apply_update(weights, global_weights, {k: params.factor * d for k, d in delta.items()})
