"""Local differential privacy for model updates: L2 clipping, then Gaussian noise (SFL).

A device clips its update delta = w - g (all floating-point tensors taken as one vector) to L2
norm at most S = clip_norm, adds i.i.d. N(0, sigma^2) noise to every coordinate of the clipped
update and submits g + clipped delta + noise. The sensitivity defaults to S (SFL's "sensitivity
S", after Geyer et al. 2017); under replace-one-input local DP two clipped updates can differ
by up to 2S, so pass sensitivity=2*clip_norm for that stricter reading.

sigma comes from (epsilon, delta) by one of two mechanisms:
- `classic`: sigma = S * sqrt(2 ln(1.25 / delta)) / epsilon (Dwork & Roth 2014, Thm A.1). Its
  proof only holds for epsilon < 1; SFL nevertheless uses epsilon = 8 with delta in
  {e^-1, e^-3, e^-5, e^-6}, so at those settings it is a reproduction of the paper, not a proven
  (epsilon, delta) guarantee (and delta >= e^-6 ~ 2.5e-3 is itself a weak guarantee).
- `analytic`: the smallest sigma with Phi(S/(2 sigma) - epsilon sigma/S)
  - e^epsilon Phi(-S/(2 sigma) - epsilon sigma/S) <= delta (Balle & Wang, ICML 2018, Thm 8),
  which is exact for every epsilon > 0; found by bisection with math.erfc.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from node.learning.names import MECHANISMS

if TYPE_CHECKING:  # weights.py imports torch; the sigma formulas here need none
    from node.learning.weights import Weights

MAX_ANALYTIC_EPSILON = 700.0  # e^epsilon must stay finite in float64
_BISECTION_STEPS = 200


def _check(epsilon: float, delta: float, sensitivity: float) -> None:
    """ValueError naming the first invalid privacy parameter."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be finite and > 0, got {sensitivity}")


def _phi(t: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def classic_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Dwork & Roth (Thm A.1): S * sqrt(2 ln(1.25/delta)) / epsilon (proven for epsilon < 1)."""
    _check(epsilon, delta, sensitivity)
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def analytic_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """Balle & Wang's exact delta of the Gaussian mechanism with noise sigma at epsilon."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    tail = _phi(-a - b)
    return _phi(a - b) - (math.exp(epsilon) * tail if tail > 0 else 0.0)


def analytic_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma (to ~1e-12 relative) with analytic_delta(sigma) <= delta (bisection)."""
    _check(epsilon, delta, sensitivity)
    if epsilon > MAX_ANALYTIC_EPSILON:
        raise ValueError(f"epsilon must be <= {MAX_ANALYTIC_EPSILON} for the analytic mechanism")
    hi = sensitivity
    while analytic_delta(hi, epsilon, sensitivity) > delta:
        hi *= 2.0
    lo = hi / 2.0
    while analytic_delta(lo, epsilon, sensitivity) <= delta:
        hi, lo = lo, lo / 2.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if analytic_delta(mid, epsilon, sensitivity) <= delta:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    return hi


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float, mechanism: str) -> float:
    """Noise std for (epsilon, delta) by `mechanism` ("classic" or "analytic")."""
    if mechanism == "classic":
        return classic_sigma(epsilon, delta, sensitivity)
    if mechanism == "analytic":
        return analytic_sigma(epsilon, delta, sensitivity)
    raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


def clip_update(
    weights: Mapping[str, np.ndarray], global_weights: Mapping[str, np.ndarray], clip_norm: float
) -> tuple[Weights, float]:
    """(delta = w - g on floating tensors scaled to L2 norm <= clip_norm, in float64; its norm)."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be finite and > 0, got {clip_norm}")
    if set(weights) != set(global_weights):
        raise ValueError("weights and global_weights have different keys")
    delta: Weights = {}
    for key, w in weights.items():
        arr = np.asarray(w)
        if np.issubdtype(arr.dtype, np.floating):
            if np.shape(global_weights[key]) != arr.shape:
                raise ValueError(f"global_weights[{key!r}] has a different shape")
            delta[key] = arr.astype(np.float64) - np.asarray(global_weights[key], np.float64)
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
    if norm > clip_norm:
        delta = {k: d * clip_norm / norm for k, d in delta.items()}
    return delta, norm


def privatize(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    *,
    clip_norm: float,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    mechanism: str = "classic",
    sensitivity: float | None = None,
    noise_divisor: float = 1.0,
) -> tuple[Weights, dict[str, float | str | bool]]:
    """(g + clipped update + N(0, sigma^2) noise on floating tensors, record for meta.json).

    Non-floating tensors are copied from `weights`; outputs keep the dtypes of `weights`.
    `noise_divisor` D >= 1 divides sigma (SFL's "dividing the GNM's output by D").
    """
    if not (math.isfinite(noise_divisor) and noise_divisor >= 1.0):
        raise ValueError(f"noise_divisor must be finite and >= 1, got {noise_divisor}")
    sens = clip_norm if sensitivity is None else sensitivity
    sigma = gaussian_sigma(epsilon, delta, sens, mechanism) / noise_divisor
    clipped, norm = clip_update(weights, global_weights, clip_norm)
    out: Weights = {}
    for key, w in weights.items():
        arr = np.asarray(w)
        if key in clipped:
            noisy = np.asarray(global_weights[key], np.float64) + clipped[key]
            noisy = noisy + rng.normal(0.0, sigma, size=arr.shape)
            out[key] = np.ascontiguousarray(noisy, dtype=arr.dtype)
        else:
            out[key] = np.array(arr, order="C", copy=True)
    record: dict[str, float | str | bool] = {
        "mechanism": mechanism,
        "epsilon": float(epsilon),
        "delta": float(delta),
        "clip_norm": float(clip_norm),
        "sensitivity": float(sens),
        "sigma": float(sigma),
        "noise_divisor": float(noise_divisor),
        "pre_clip_norm": float(norm),
        "clipped": bool(norm > clip_norm),
    }
    return out, record
