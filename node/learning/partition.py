"""Splitting a labelled training set across clients: IID, Dirichlet and McMahan shards."""

from __future__ import annotations

import logging

import numpy as np

from node.learning.names import PARTITIONS

logger = logging.getLogger(__name__)

# Dirichlet draws that leave a part empty are redrawn at most this many times (or N if smaller).
MAX_DIRICHLET_REDRAWS = 100


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Return the parts as sorted int64 index arrays."""
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _iid(n: int, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Seeded permutation split into near-equal parts (sizes differ by at most one)."""
    return _finish(np.array_split(rng.permutation(n), n_parts))


def _dirichlet_draw(
    labels: np.ndarray, n_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw: for each class, split its samples by proportions ~ Dir(alpha)."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        props = rng.dirichlet(np.full(n_parts, alpha))
        if not np.all(np.isfinite(props)) or props.sum() <= 0:
            props = np.zeros(n_parts)
            props[rng.integers(n_parts)] = 1.0
        cuts = np.round(np.cumsum(props)[:-1] * len(members)).astype(np.int64)
        for part, chunk in enumerate(np.split(members, cuts)):
            buckets[part].append(chunk)
    return [np.concatenate(b) if b else np.empty(0, np.int64) for b in buckets]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Move one sample from the largest part into each empty part (deterministically)."""
    parts = [np.sort(p) for p in parts]
    for i, part in enumerate(parts):
        if len(part) == 0:
            donor = max(range(len(parts)), key=lambda j: (len(parts[j]), -j))
            parts[i] = parts[donor][-1:]
            parts[donor] = parts[donor][:-1]
    return parts


def _dirichlet(
    labels: np.ndarray, n_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-skewed split; every part gets at least one sample."""
    parts = _dirichlet_draw(labels, n_parts, alpha, rng)
    redraws = 0
    while min(len(p) for p in parts) == 0 and redraws < min(len(labels), MAX_DIRICHLET_REDRAWS):
        parts = _dirichlet_draw(labels, n_parts, alpha, rng)
        redraws += 1
    if min(len(p) for p in parts) == 0:
        logger.debug("dirichlet: moving samples into empty parts after %d redraws", redraws)
        parts = _fill_empty(parts)
    return _finish(parts)


def _shards(
    labels: np.ndarray, n_parts: int, shards_per_part: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """McMahan et al. pathological non-IID: sort by label, deal out random shards."""
    n_shards = n_parts * shards_per_part
    if n_shards > len(labels):
        raise ValueError(
            f"shards_per_part={shards_per_part} with n_parts={n_parts} needs {n_shards} shards "
            f"but there are only {len(labels)} samples"
        )
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(order, n_shards)
    dealt = rng.permutation(n_shards).reshape(n_parts, shards_per_part)
    return _finish([np.concatenate([shards[s] for s in row]) for row in dealt])


def partition(
    labels: np.ndarray,
    n_parts: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    shards_per_part: int = 2,
) -> list[np.ndarray]:
    """Split sample indices into n_parts disjoint, sorted int64 arrays covering every sample."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    n = len(labels)
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    if n_parts > n:
        raise ValueError(f"n_parts={n_parts} exceeds the number of samples ({n})")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(n, n_parts, rng)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        parts = _dirichlet(labels, n_parts, alpha, rng)
    elif scheme == "shards":
        if shards_per_part < 1:
            raise ValueError(f"shards_per_part must be >= 1, got {shards_per_part}")
        parts = _shards(labels, n_parts, shards_per_part, rng)
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {PARTITIONS}")
    logger.debug(
        "partition %s: %d samples into %d parts, sizes %s",
        scheme,
        n,
        n_parts,
        [len(p) for p in parts],
    )
    return parts
