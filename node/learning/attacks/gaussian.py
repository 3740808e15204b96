"""Gaussian (noise) attack on the floating-point tensors of a trained model.

`replace`: the update is replaced by pure noise, w' = g + xi (the training result is discarded).
`additive`: noise is added to the honest result, w' = w + xi.
In both, xi ~ N(0, sigma^2) i.i.d. per coordinate, drawn in float64 in the key order of `weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import apply_update, choice, number, update_of
from node.learning.weights import Weights

GAUSSIAN_MODES: tuple[str, ...] = ("replace", "additive")


@dataclass(frozen=True)
class GaussianParams:
    """Noise standard deviation sigma >= 0 and mode replace|additive."""

    sigma: float
    mode: str = "replace"

    def __post_init__(self) -> None:
        """Validate sigma and mode."""
        if not number("sigma", self.sigma) >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        choice("mode", self.mode, GAUSSIAN_MODES)


def gaussian(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    params: GaussianParams,
    rng: np.random.Generator,
    previous_update: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Update attack: g + xi (replace) or w + xi (additive); non-floating tensors copied from w."""
    del previous_update
    delta = update_of(weights, global_weights)
    noisy: Weights = {}
    for key, d in delta.items():
        noise = rng.normal(0.0, params.sigma, size=d.shape) if params.sigma > 0 else 0.0 * d
        noisy[key] = noise if params.mode == "replace" else d + noise
    return apply_update(weights, global_weights, noisy)
