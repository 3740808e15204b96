"""Multi-Krum (Blanchard et al. 2017): the unweighted mean of the m updates with best Krum score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from node.learning.aggregators.krum import (
    KrumParams,
    krum_scores,
    ranked_selection,
    unweighted_mean,
)
from node.learning.aggregators.strategy import Selection, Strategy, UpdateLike
from node.learning.aggregators.update import Update, as_updates, cast_like, stack
from node.learning.attacks._common import integer
from node.learning.weights import Weights


@dataclass(frozen=True)
class MultiKrumParams:
    """f >= 0 Byzantine updates tolerated; m >= 1 updates averaged (default n - f)."""

    f: int
    m: int | None = None

    def __post_init__(self) -> None:
        """Validate f and m."""
        KrumParams(self.f)
        if self.m is not None and integer("m", self.m) < 1:
            raise ValueError(f"m must be >= 1, got {self.m}")


def multi_krum(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
    f: int,
    m: int | None = None,
) -> Weights:
    """Mean of the m lowest-scoring updates (stable order on ties); m = n - f when None."""
    MultiKrumParams(f, m)
    ups = as_updates(updates)
    scores = krum_scores(ups, f)
    count = len(ups) - f if m is None else m
    if count > len(ups):
        raise ValueError(f"m must be <= n, got m={m} with n={len(ups)} updates")
    chosen = [ups[i] for i in np.argsort(scores, kind="stable")[:count]]
    means = {k: stack(chosen, k).mean(axis=0) for k in ups[0].weights}
    return cast_like(means, ups[0].weights)


@dataclass(frozen=True)
class MultiKrum(Strategy[MultiKrumParams]):
    """Keeps the m updates with the lowest Krum scores (m = n - f by default)."""

    name: ClassVar[str] = "multi_krum"
    params_cls: ClassVar[type[MultiKrumParams]] = MultiKrumParams

    def min_updates(self) -> int:
        """Krum's scores need n > 2f + 2 updates, and m of them are kept."""
        return max(2 * self.params.f + 3, self.params.m or 1)

    def select(self, updates: Sequence[UpdateLike]) -> Selection:
        """The m best-scored updates, best first; ValueError unless n > 2f + 2 and m <= n."""
        ups = as_updates(updates)
        scores = krum_scores(ups, self.params.f)
        count = len(ups) - self.params.f if self.params.m is None else self.params.m
        if count > len(ups):
            raise ValueError(f"m must be <= n, got m={self.params.m} with n={len(ups)} updates")
        return ranked_selection(ups, scores, count)

    def _aggregate(self, kept: list[Update]) -> Weights:
        """The unweighted mean of the kept updates."""
        return unweighted_mean(kept)
