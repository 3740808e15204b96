"""Sign flipping: the update delta = w - g is replaced by -s * delta (w' = g - s * delta)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import apply_update, number, update_of
from node.learning.weights import Weights


@dataclass(frozen=True)
class SignFlipParams:
    """Scale s > 0 applied to the negated update."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        """Validate the scale."""
        if not number("scale", self.scale) > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


def sign_flip(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    params: SignFlipParams,
    rng: np.random.Generator,
    previous_update: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Update attack: g - s * (w - g) on floating tensors; non-floating tensors copied from w."""
    del rng, previous_update
    delta = update_of(weights, global_weights)
    return apply_update(weights, global_weights, {k: -params.scale * d for k, d in delta.items()})
