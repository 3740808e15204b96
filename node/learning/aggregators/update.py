"""The `Update` record every aggregator consumes, and helpers shared by the aggregators."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.learning.weights import Weights


@dataclass(frozen=True, eq=False)
class Update:
    """One device's submission: weights, sample count, reported accuracy (or None), sender id."""

    weights: Mapping[str, np.ndarray]
    samples: float
    accuracy: float | None = None
    sender: str = ""

    def __post_init__(self) -> None:
        """Validate samples (finite, > 0) and accuracy (finite when given)."""
        if isinstance(self.samples, bool) or not math.isfinite(float(self.samples)):
            raise ValueError(f"samples of update from {self.sender!r} must be finite")
        if float(self.samples) <= 0:
            raise ValueError(f"samples of update from {self.sender!r} must be > 0")
        if self.accuracy is not None and not math.isfinite(float(self.accuracy)):
            raise ValueError(f"accuracy of update from {self.sender!r} must be finite")


def as_updates(
    updates: Sequence[Update | tuple[Mapping[str, np.ndarray], float]],
) -> list[Update]:
    """Updates as a non-empty list of `Update`; (weights, samples) pairs become anonymous ones."""
    out: list[Update] = []
    for i, item in enumerate(updates):
        if isinstance(item, Update):
            out.append(item)
        else:
            weights, samples = item
            out.append(Update(weights=weights, samples=float(samples), sender=f"#{i}"))
    if not out:
        raise ValueError("no updates to aggregate")
    return out


def check_shapes(updates: Sequence[Update]) -> None:
    """ValueError unless every update has the first one's keys, shapes and dtypes."""
    ref = updates[0].weights
    for i, u in enumerate(updates[1:], start=1):
        if set(u.weights) != set(ref):
            diff = sorted(set(u.weights) ^ set(ref))
            raise ValueError(f"update {i} ({u.sender!r}) has mismatched keys, e.g. {diff[0]!r}")
        for key, arr in ref.items():
            other = np.asarray(u.weights[key])
            if other.shape != np.shape(arr) or other.dtype != np.asarray(arr).dtype:
                raise ValueError(
                    f"update {i} ({u.sender!r}) key {key!r} is {other.dtype}{other.shape}, "
                    f"expected {np.asarray(arr).dtype}{np.shape(arr)}"
                )


def stack(updates: Sequence[Update], key: str) -> np.ndarray:
    """The updates' arrays for `key` stacked along a new first axis, in float64."""
    return np.stack([np.asarray(u.weights[key], dtype=np.float64) for u in updates])


def flatten(update: Update) -> np.ndarray:
    """All of an update's tensors as one float64 vector (keys in sorted order)."""
    return np.concatenate(
        [np.asarray(update.weights[k], np.float64).ravel() for k in sorted(update.weights)]
    )


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float64 values to dtype, rounding for integer and boolean dtypes."""
    if np.issubdtype(dtype, np.inexact):
        return np.ascontiguousarray(values, dtype=dtype)
    return np.ascontiguousarray(np.rint(values), dtype=dtype)


def cast_like(values: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Weights:
    """Cast float64 results back to the reference dtypes (integers rounded), as fedavg does."""
    return {k: _cast(np.asarray(values[k]), np.asarray(reference[k]).dtype) for k in reference}


def coordinatewise(updates: Sequence[Update], reducer: str, trim: int = 0) -> Weights:
    """Unweighted per-coordinate median, or mean after trimming `trim` values from each end."""
    check_shapes(updates)
    out: dict[str, np.ndarray] = {}
    for key in updates[0].weights:
        stacked = stack(updates, key)
        if reducer == "median":
            out[key] = np.median(stacked, axis=0)
        else:
            ordered = np.sort(stacked, axis=0)
            out[key] = ordered[trim : len(updates) - trim].mean(axis=0)
    return cast_like(out, updates[0].weights)
