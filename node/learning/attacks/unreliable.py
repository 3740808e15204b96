"""Unreliable devices: label-skewed local data at a chosen EMD from the population (SFL).

EMD is SFL's L1 distance between class distributions (see node.learning.emd), in [0, 2].
The target distribution is p(t) = (1 - t) * q' + t * e_c: q' is the population distribution q
restricted to the classes the candidate pool holds (renormalised), e_c puts all mass on one
dominant class c drawn by `rng` among the classes for which the target is reachable, and t is
found by bisection so that EMD(p(t), q) equals the target. Then the largest subset of the pool
with class counts proportional to p (largest-remainder rounding) is drawn without replacement;
its EMD differs from the target only by that rounding (about num_classes / size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import integer, number
from node.learning.emd import MAX_EMD, emd, label_distribution

_SEARCH_STEPS = 100


@dataclass(frozen=True)
class UnreliableParams:
    """Target EMD in [0, 2) and optional subset size (default: the largest achievable)."""

    target_emd: float
    size: int | None = None

    def __post_init__(self) -> None:
        """Validate target_emd and size."""
        if not 0.0 <= number("target_emd", self.target_emd) < MAX_EMD:
            raise ValueError(f"target_emd must be in [0, {MAX_EMD}), got {self.target_emd}")
        if self.size is not None and integer("size", self.size) < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


def _mixture(q_pool: np.ndarray, dominant: int, t: float) -> np.ndarray:
    """p(t) = (1 - t) * q_pool + t * e_dominant."""
    p = (1.0 - t) * q_pool
    p[dominant] += t
    return p


def _min_t(q_pool: np.ndarray, q: np.ndarray, dominant: int) -> float:
    """argmin over t in [0, 1] of the (convex) EMD(p(t), q), by ternary search."""
    lo, hi = 0.0, 1.0
    for _ in range(_SEARCH_STEPS):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if emd(_mixture(q_pool, dominant, a), q) <= emd(_mixture(q_pool, dominant, b), q):
            hi = b
        else:
            lo = a
    return lo


def _solve_t(q_pool: np.ndarray, q: np.ndarray, dominant: int, target: float, lo: float) -> float:
    """t in [lo, 1] with EMD(p(t), q) = target, where EMD is non-decreasing (bisection)."""
    hi = 1.0
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        if emd(_mixture(q_pool, dominant, mid), q) < target:
            lo = mid
        else:
            hi = mid
    return hi


def _counts(p: np.ndarray, avail: np.ndarray, size: int | None) -> np.ndarray:
    """Per-class counts proportional to p within availability (largest-remainder rounding)."""
    support = p > 0
    n_max = float(np.min(avail[support] / p[support]))
    n = max(1, int(np.floor(n_max + 1e-9))) if size is None else size
    if n > n_max + 1e-9:
        raise ValueError(f"size={size} exceeds the {int(n_max)} samples achievable from the pool")
    exact = n * p
    counts = np.minimum(np.floor(exact + 1e-9).astype(np.int64), avail)
    remainder = exact - counts
    room = support & (counts < avail)
    for cls in sorted(np.flatnonzero(room), key=lambda c: (-remainder[c], c)):
        if counts.sum() >= n:
            break
        counts[cls] += 1
    return counts


def skew_to_emd(
    labels: np.ndarray,
    indices: np.ndarray,
    target_emd: float,
    num_classes: int,
    rng: np.random.Generator,
    size: int | None = None,
) -> np.ndarray:
    """Sorted subset of `indices` whose label distribution is at ~target_emd from all `labels`.

    Pass a device's own indices to subsample its data, or np.arange(len(labels)) with `size`
    to reselect an unreliable device's data from the whole population.
    """
    params = UnreliableParams(target_emd, size)
    labels = np.asarray(labels)
    q = label_distribution(labels, num_classes)
    pool = np.unique(np.asarray(indices, dtype=np.int64))
    if pool.size == 0:
        raise ValueError("indices is empty")
    avail = np.bincount(labels[pool], minlength=num_classes)
    q_pool = np.where(avail > 0, q, 0.0)
    q_pool /= q_pool.sum()
    reachable: list[tuple[int, float]] = []
    for cls in np.flatnonzero(avail > 0):
        t_min = _min_t(q_pool, q, int(cls))
        low, high = emd(_mixture(q_pool, int(cls), t_min), q), emd(_mixture(q_pool, int(cls), 1), q)
        if low - 1e-12 <= params.target_emd <= high + 1e-12:
            reachable.append((int(cls), t_min))
    if not reachable:
        raise ValueError(f"target_emd={target_emd} is not reachable from the given indices")
    dominant, t_min = reachable[int(rng.integers(len(reachable)))]
    t = _solve_t(q_pool, q, dominant, params.target_emd, t_min)
    counts = _counts(_mixture(q_pool, dominant, t), avail, params.size)
    chosen = [
        rng.choice(pool[labels[pool] == cls], size=int(c), replace=False)
        for cls, c in enumerate(counts)
        if c > 0
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def unreliable(
    labels: np.ndarray,
    indices: np.ndarray,
    params: UnreliableParams,
    rng: np.random.Generator,
    num_classes: int,
) -> np.ndarray:
    """Partition attack: `skew_to_emd` with the parameters in `params`."""
    return skew_to_emd(labels, indices, params.target_emd, num_classes, rng, params.size)
