"""Krum (Blanchard et al., NeurIPS 2017): pick the update closest to its n - f - 2 neighbours.

score(i) = sum of squared L2 distances (over all tensors, as one vector) from update i to its
n - f - 2 nearest other updates; Krum returns the update with the lowest score (ties: first).
Requires n > 2f + 2, the paper's condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.learning.aggregators.update import Update, as_updates, check_shapes, flatten
from node.learning.attacks._common import integer
from node.learning.weights import Weights


@dataclass(frozen=True)
class KrumParams:
    """f >= 0: the number of Byzantine updates tolerated."""

    f: int

    def __post_init__(self) -> None:
        """Validate f."""
        if integer("f", self.f) < 0:
            raise ValueError(f"f must be >= 0, got {self.f}")


def krum_scores(updates: Sequence[Update], f: int) -> np.ndarray:
    """Krum score of every update; ValueError naming f and n unless n > 2f + 2."""
    KrumParams(f)
    n = len(updates)
    if n <= 2 * f + 2:
        raise ValueError(f"Krum needs n > 2f + 2, got f={f} with n={n} updates")
    check_shapes(updates)
    vectors = np.stack([flatten(u) for u in updates])
    norms = np.einsum("ij,ij->i", vectors, vectors)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (vectors @ vectors.T), 0.0)
    scores = np.empty(n)
    for i in range(n):
        others = np.sort(np.delete(sq[i], i))
        scores[i] = others[: n - f - 2].sum()
    return scores


def krum(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
    f: int,
) -> Weights:
    """A copy of the weights of the update with the lowest Krum score."""
    ups = as_updates(updates)
    best = int(np.argmin(krum_scores(ups, f)))
    return {k: np.array(v, order="C", copy=True) for k, v in ups[best].weights.items()}
