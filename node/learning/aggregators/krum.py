"""Krum (Blanchard et al., NeurIPS 2017): pick the update closest to its n - f - 2 neighbours.

score(i) = sum of squared L2 distances (over all tensors, as one vector) from update i to its
n - f - 2 nearest other updates; Krum returns the update with the lowest score (ties: first).
Requires n > 2f + 2, the paper's condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from node.learning.aggregators.strategy import Rejection, Selection, Strategy, UpdateLike
from node.learning.aggregators.update import (
    Update,
    as_updates,
    cast_like,
    check_shapes,
    flatten,
    stack,
)
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


def unweighted_mean(chosen: Sequence[Update]) -> Weights:
    """The unweighted mean of `chosen` in their order, cast back to their dtypes."""
    check_shapes(chosen)
    means = {k: stack(chosen, k).mean(axis=0) for k in chosen[0].weights}
    return cast_like(means, chosen[0].weights)


def ranked_selection(ups: list[Update], scores: np.ndarray, count: int) -> Selection:
    """Keep the `count` lowest-scoring updates (best first, stable on ties); reject the rest."""
    order = [int(i) for i in np.argsort(scores, kind="stable")]
    cut = float(scores[order[count - 1]])
    rejected = tuple(
        Rejection(ups[i], "krum_score", f"Krum score {scores[i]:.6g} > kept {cut:.6g}")
        for i in sorted(order[count:])
    )
    return Selection(tuple(ups[i] for i in order[:count]), rejected)


@dataclass(frozen=True)
class Krum(Strategy[KrumParams]):
    """Keeps the update with the lowest Krum score and rejects the others."""

    name: ClassVar[str] = "krum"
    params_cls: ClassVar[type[KrumParams]] = KrumParams

    def min_updates(self) -> int:
        """Krum's scores need n > 2f + 2 updates."""
        return 2 * self.params.f + 3

    def select(self, updates: Sequence[UpdateLike]) -> Selection:
        """The one update Krum chooses; ValueError unless n > 2f + 2."""
        ups = as_updates(updates)
        return ranked_selection(ups, krum_scores(ups, self.params.f), 1)

    def _aggregate(self, kept: list[Update]) -> Weights:
        """A copy of the kept update (the unweighted mean where several are given)."""
        if len(kept) == 1:
            return {k: np.array(v, order="C", copy=True) for k, v in kept[0].weights.items()}
        return unweighted_mean(kept)
