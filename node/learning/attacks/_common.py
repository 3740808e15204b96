"""Shared validation and array helpers for the attack modules."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from node.learning.weights import Weights


def number(name: str, value: object) -> float:
    """`value` as a finite float; ValueError naming `name` otherwise (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def integer(name: str, value: object) -> int:
    """`value` as an int; ValueError naming `name` unless it is an integer (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`; ValueError naming `name` otherwise."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def round_half_up(value: float) -> int:
    """Round a non-negative float to the nearest integer, halves upwards (0.5 -> 1)."""
    return math.floor(value + 0.5)


def is_float(array: np.ndarray) -> bool:
    """True for floating-point arrays: the only tensors weight attacks and faults alter."""
    return bool(np.issubdtype(np.asarray(array).dtype, np.floating))


def check_like(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], what: str
) -> None:
    """ValueError unless `other` has exactly the keys and shapes of `reference`."""
    if set(other) != set(reference):
        diff = sorted(set(other) ^ set(reference))
        raise ValueError(f"{what} has mismatched keys, e.g. {diff[0]!r}")
    for key, ref in reference.items():
        if np.shape(other[key]) != np.shape(ref):
            raise ValueError(
                f"{what}[{key!r}] has shape {np.shape(other[key])}, expected {np.shape(ref)}"
            )


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous copy of float64 `values` in `dtype`."""
    return np.ascontiguousarray(values, dtype=dtype).copy()


def copy_weights(weights: Mapping[str, np.ndarray]) -> Weights:
    """Independent C-contiguous copies of every array."""
    return {k: np.array(v, order="C", copy=True) for k, v in weights.items()}


def update_of(
    weights: Mapping[str, np.ndarray], global_weights: Mapping[str, np.ndarray]
) -> Weights:
    """Delta = w - g in float64 for the floating-point tensors of `weights`."""
    check_like(weights, global_weights, "global_weights")
    return {
        k: np.asarray(w, np.float64) - np.asarray(global_weights[k], np.float64)
        for k, w in weights.items()
        if is_float(w)
    }


def apply_update(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    delta: Mapping[str, np.ndarray],
) -> Weights:
    """g + delta on floating tensors, in the dtypes of `weights`; other tensors copied from w."""
    out: Weights = {}
    for key, w in weights.items():
        arr = np.asarray(w)
        if key in delta:
            out[key] = cast_to(np.asarray(global_weights[key], np.float64) + delta[key], arr.dtype)
        else:
            out[key] = np.array(arr, order="C", copy=True)
    return out
