"""Lazy device: trains on only a fraction of its local data (a uniform subset, order kept)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import number, round_half_up


@dataclass(frozen=True)
class LazyParams:
    """Fraction in (0, 1] of the device's samples it actually trains on."""

    fraction: float

    def __post_init__(self) -> None:
        """Validate the fraction."""
        fraction = number("fraction", self.fraction)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")


def lazy_indices(n: int, params: LazyParams, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the max(1, round(fraction * n)) samples kept out of n (none if n == 0)."""
    if n == 0:
        return np.empty(0, np.int64)
    k = max(1, round_half_up(params.fraction * n))
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def lazy(
    x: np.ndarray,
    y: np.ndarray,
    params: LazyParams,
    rng: np.random.Generator,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Data attack: the kept rows of x and y (copies), in their original order."""
    del num_classes
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    keep = lazy_indices(len(y), params, rng)
    return x[keep], y[keep]
