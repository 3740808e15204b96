"""Unit tests for node.learning.privacy: Gaussian-mechanism sigma, clipping and noise."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from node.learning.privacy import (
    analytic_delta,
    analytic_sigma,
    classic_sigma,
    clip_update,
    gaussian_sigma,
    privatize,
)
from node.learning.weights import Weights

SFL_DELTAS = [math.exp(-1), math.exp(-3), math.exp(-5), math.exp(-6)]

# sigma = sqrt(2 (ln 1.25 + k)) / 8 with ln 1.25 = 0.2231435513142098 and delta = e^-k:
# k=1: sqrt(2.4462871026) / 8 = 1.5640610930 / 8 ; k=3: sqrt(6.4462871026) / 8 = 2.5389539387 / 8
# k=5: sqrt(10.446287103) / 8 = 3.2320716425 / 8 ; k=6: sqrt(12.446287103) / 8 = 3.5279295773 / 8
CLASSIC_SFL = [0.19550763662, 0.31736924233, 0.40400895532, 0.44099119717]


@pytest.mark.parametrize(("delta", "expected"), list(zip(SFL_DELTAS, CLASSIC_SFL, strict=True)))
def test_classic_sigma_sfl_settings(delta: float, expected: float) -> None:
    assert classic_sigma(8.0, delta, 1.0) == pytest.approx(expected, rel=1e-10)
    assert classic_sigma(8.0, delta, 2.5) == pytest.approx(2.5 * expected, rel=1e-10)


def _balle_wang_delta(sigma: float, epsilon: float, sens: float) -> float:
    """Balle & Wang Thm 8, evaluated independently with statistics.NormalDist."""
    phi = NormalDist().cdf
    a, b = sens / (2 * sigma), epsilon * sigma / sens
    return phi(a - b) - math.exp(epsilon) * phi(-a - b)


@pytest.mark.parametrize("delta", [*SFL_DELTAS, 1e-5])
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 8.0])
def test_analytic_sigma_is_the_tight_balle_wang_solution(epsilon: float, delta: float) -> None:
    sigma = analytic_sigma(epsilon, delta, 1.0)
    assert _balle_wang_delta(sigma, epsilon, 1.0) <= delta + 1e-12
    assert _balle_wang_delta(sigma * (1 - 1e-6), epsilon, 1.0) > delta
    assert analytic_delta(sigma, epsilon, 1.0) <= delta
    assert analytic_sigma(epsilon, delta, 3.0) == pytest.approx(3.0 * sigma, rel=1e-9)


def test_analytic_beats_classic_where_classic_is_valid_but_not_at_eps_8() -> None:
    assert analytic_sigma(0.5, 1e-5, 1.0) < classic_sigma(0.5, 1e-5, 1.0)
    # at SFL's epsilon = 8 the classic formula under-noises: it is not a valid (8, delta) bound
    for delta in SFL_DELTAS:
        assert analytic_sigma(8.0, delta, 1.0) > classic_sigma(8.0, delta, 1.0)
        assert _balle_wang_delta(classic_sigma(8.0, delta, 1.0), 8.0, 1.0) > delta


def test_sigma_validation() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        classic_sigma(0.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="delta"):
        analytic_sigma(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="sensitivity"):
        classic_sigma(1.0, 0.1, -1.0)
    with pytest.raises(ValueError, match="mechanism"):
        gaussian_sigma(1.0, 0.1, 1.0, "laplace")


def test_clipping_is_exact() -> None:
    g: Weights = {"a": np.zeros(1, np.float32), "b": np.zeros(1), "n": np.array(1)}
    w: Weights = {"a": np.array([3.0], np.float32), "b": np.array([4.0]), "n": np.array(2)}
    clipped, norm = clip_update(w, g, 1.0)
    assert norm == 5.0 and set(clipped) == {"a", "b"}
    assert clipped["a"].tolist() == [0.6] and clipped["b"].tolist() == [0.8]
    big: Weights = {"a": np.arange(1.0, 1001.0), "b": np.array([-7.0])}
    zero: Weights = {"a": np.zeros(1000), "b": np.zeros(1)}
    clipped, norm = clip_update(big, zero, 0.5)
    post = math.sqrt(sum(float(np.sum(v * v)) for v in clipped.values()))
    assert post == pytest.approx(0.5, rel=1e-14)
    np.testing.assert_allclose(clipped["a"], big["a"] * 0.5 / norm, rtol=1e-15)
    unclipped, norm = clip_update(w, g, 10.0)
    assert norm == 5.0 and unclipped["a"].tolist() == [3.0] and unclipped["b"].tolist() == [4.0]


def test_privatize_noise_std_and_record() -> None:
    size = 400_000
    g: Weights = {"w": np.full(size, 0.25, np.float32), "n": np.array(3, np.int64)}
    w: Weights = {"w": np.full(size, 0.25, np.float32), "n": np.array(5, np.int64)}
    w["w"][0] += 10.0  # pre-clip norm 10
    before = (w["w"].tobytes(), g["w"].tobytes())
    out, record = privatize(
        w, g, clip_norm=2.0, epsilon=8.0, delta=math.exp(-3), rng=np.random.default_rng(0)
    )
    sigma = 2.0 * CLASSIC_SFL[1]
    noise = out["w"].astype(np.float64)[1:] - 0.25
    assert abs(noise.std() / sigma - 1) < 0.03
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(size)
    assert out["w"].dtype == np.float32 and out["n"].tobytes() == w["n"].tobytes()
    assert (w["w"].tobytes(), g["w"].tobytes()) == before
    assert record == {
        "mechanism": "classic",
        "epsilon": 8.0,
        "delta": math.exp(-3),
        "clip_norm": 2.0,
        "sensitivity": 2.0,
        "sigma": pytest.approx(sigma, rel=1e-10),
        "noise_divisor": 1.0,
        "pre_clip_norm": pytest.approx(10.0),
        "clipped": True,
    }


def test_privatize_noise_divided_by_the_devices() -> None:
    # SFL's "dividing the GNM's output by D": D = 100 devices, each adds sigma / 100
    g = {"w": np.zeros(200_000)}
    w = {"w": np.zeros(200_000)}
    kwargs = {"clip_norm": 1.0, "epsilon": 8.0, "delta": math.exp(-3)}
    full, rec = privatize(w, g, rng=np.random.default_rng(3), **kwargs)  # type: ignore[arg-type]
    shared, rec_d = privatize(
        w,
        g,
        rng=np.random.default_rng(3),
        noise_divisor=100.0,
        **kwargs,  # type: ignore[arg-type]
    )

    assert rec_d["sigma"] == pytest.approx(rec["sigma"] / 100, rel=1e-12)
    assert rec_d["noise_divisor"] == 100.0
    assert float(np.std(shared["w"])) == pytest.approx(float(np.std(full["w"])) / 100, rel=0.01)
    with pytest.raises(ValueError, match="noise_divisor"):
        privatize(w, g, rng=np.random.default_rng(3), noise_divisor=0.5, **kwargs)  # type: ignore[arg-type]


def test_privatize_analytic_and_seeded() -> None:
    g = {"w": np.zeros(100_000)}
    w = {"w": np.full(100_000, 1e-4)}  # norm 0.0316 < S: not clipped
    kwargs = {"clip_norm": 1.0, "epsilon": 8.0, "delta": math.exp(-6), "mechanism": "analytic"}
    a, rec = privatize(w, g, rng=np.random.default_rng(1), **kwargs)  # type: ignore[arg-type]
    b, _ = privatize(w, g, rng=np.random.default_rng(1), **kwargs)  # type: ignore[arg-type]
    assert a["w"].tobytes() == b["w"].tobytes() and rec["clipped"] is False
    assert rec["sigma"] == pytest.approx(analytic_sigma(8.0, math.exp(-6), 1.0))
    assert abs((a["w"] - 1e-4).std() / float(rec["sigma"]) - 1) < 0.03
    _, strict = privatize(w, g, rng=np.random.default_rng(1), sensitivity=2.0, **kwargs)  # type: ignore[arg-type]
    assert strict["sigma"] == pytest.approx(2 * float(rec["sigma"]))
