"""Coordinate-wise median (Yin et al. 2018): unweighted; even counts average the middle two."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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
