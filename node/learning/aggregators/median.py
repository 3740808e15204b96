"""Coordinate-wise median (Yin et al. 2018): unweighted; even counts average the middle two."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from node.learning.aggregators.strategy import Strategy
from node.learning.aggregators.update import Update, as_updates, coordinatewise
from node.learning.weights import Weights


@dataclass(frozen=True)
class MedianParams:
    """The median takes no parameters."""


def median(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
) -> Weights:
    """Per-coordinate median of the updates, cast back to each tensor's dtype."""
    return coordinatewise(as_updates(updates), "median")


@dataclass(frozen=True)
class Median(Strategy[MedianParams]):
    """Coordinate-wise median of every update (nothing is rejected as a whole)."""

    name: ClassVar[str] = "median"
    params_cls: ClassVar[type[MedianParams]] = MedianParams

    def _aggregate(self, kept: list[Update]) -> Weights:
        return median(kept)
