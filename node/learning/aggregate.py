"""Federated averaging on numpy weight dicts, with partial sums for hierarchical aggregation."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from node.learning.weights import Weights

logger = logging.getLogger(__name__)

# (weights, sample count) from one client, or (weighted_sum arrays, total weight) for partials.
Update = tuple[Mapping[str, np.ndarray], float]


def _check_factor(factor: float, what: str, index: int) -> float:
    """A weight/total must be a finite, strictly positive number."""
    value = float(factor)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} {index} must be finite and > 0, got {factor}")
    return value


def _check_compatible(
    reference: Mapping[str, np.ndarray],
    other: Mapping[str, np.ndarray],
    index: int,
    check_dtype: bool = True,
) -> None:
    """Raise ValueError unless other has the reference's keys, shapes (and dtypes)."""
    if set(other) != set(reference):
        diff = sorted(set(other) ^ set(reference))
        raise ValueError(f"update {index} has mismatched keys, e.g. {diff[0]!r}")
    for key, ref in reference.items():
        arr = np.asarray(other[key])
        if arr.shape != ref.shape:
            raise ValueError(
                f"update {index} key {key!r} has shape {arr.shape}, expected {ref.shape}"
            )
        if check_dtype and arr.dtype != ref.dtype:
            raise ValueError(
                f"update {index} key {key!r} has dtype {arr.dtype}, expected {ref.dtype}"
            )


def weighted_sum(updates: Sequence[Update]) -> tuple[Weights, float]:
    """Return (sum of w_i * x_i as float64 arrays, sum of w_i) for pre-aggregation."""
    if not updates:
        raise ValueError("no updates to aggregate")
    reference = {k: np.asarray(v) for k, v in updates[0][0].items()}
    sums: Weights = {k: np.zeros(v.shape, dtype=np.float64) for k, v in reference.items()}
    total = 0.0
    for i, (weights, factor) in enumerate(updates):
        value = _check_factor(factor, "update weight", i)
        _check_compatible(reference, weights, i)
        for key, acc in sums.items():
            acc += value * np.asarray(weights[key], dtype=np.float64)
        total += value
    return sums, total


def _cast(average: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float64 average to dtype, rounding for integer and boolean dtypes."""
    if np.issubdtype(dtype, np.inexact):
        return average.astype(dtype)
    return np.rint(average).astype(dtype)


def fedavg(updates: Sequence[Update]) -> Weights:
    """Sample-weighted average of updates, computed in float64 and cast back to each dtype."""
    sums, total = weighted_sum(updates)
    dtypes = {k: np.asarray(v).dtype for k, v in updates[0][0].items()}
    result = {k: _cast(s / total, dtypes[k]) for k, s in sums.items()}
    logger.debug("fedavg over %d updates, total weight %s", len(updates), total)
    return result


def combine_partials(
    partials: Sequence[Update],
    dtypes: Mapping[str, np.dtype] | None = None,
) -> Weights:
    """Average (weighted_sum arrays, total weight) pairs; cast to float32 unless dtypes given."""
    if not partials:
        raise ValueError("no partial sums to combine")
    reference = {k: np.asarray(v) for k, v in partials[0][0].items()}
    sums: Weights = {k: np.zeros(v.shape, dtype=np.float64) for k, v in reference.items()}
    total = 0.0
    for i, (arrays, weight) in enumerate(partials):
        total += _check_factor(weight, "partial total weight", i)
        _check_compatible(reference, arrays, i, check_dtype=False)
        for key, acc in sums.items():
            acc += np.asarray(arrays[key], dtype=np.float64)
    if dtypes is not None and set(dtypes) != set(sums):
        raise ValueError("dtypes keys do not match the partial sums' keys")
    return {
        k: _cast(s / total, np.dtype(dtypes[k]) if dtypes is not None else np.dtype(np.float32))
        for k, s in sums.items()
    }
