"""Coordinate-wise trimmed mean (Yin et al. 2018): drop floor(beta*n) values at each end."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from node.learning.aggregators.strategy import Strategy
from node.learning.aggregators.update import Update, as_updates, coordinatewise
from node.learning.attacks._common import number
from node.learning.weights import Weights


@dataclass(frozen=True)
class TrimmedMeanParams:
    """beta in [0, 0.5): fraction of values trimmed from each end of every coordinate."""

    beta: float

    def __post_init__(self) -> None:
        """Validate beta."""
        if not 0.0 <= number("beta", self.beta) < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {self.beta}")


def trimmed_mean(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
    beta: float,
) -> Weights:
    """Unweighted per-coordinate mean of the values left after trimming floor(beta*n) per end."""
    TrimmedMeanParams(beta)
    ups = as_updates(updates)
    return coordinatewise(ups, "trimmed", trim=math.floor(beta * len(ups)))


@dataclass(frozen=True)
class TrimmedMean(Strategy[TrimmedMeanParams]):
    """Coordinate-wise trimmed mean of every update (trimming is per coordinate, so no
    update is rejected as a whole)."""

    name: ClassVar[str] = "trimmed_mean"
    params_cls: ClassVar[type[TrimmedMeanParams]] = TrimmedMeanParams

    def _aggregate(self, kept: list[Update]) -> Weights:
        return trimmed_mean(kept, self.params.beta)
