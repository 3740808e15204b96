"""Unit tests for node.learning.attacks.edge: malfunctioning and tampering edge servers."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning.aggregators import Update
from node.learning.attacks import EDGE_FAULTS, MalfunctionParams, TamperParams, malfunction, tamper
from node.learning.weights import Weights


def _agg() -> Weights:
    """A small aggregate with a float tensor and an integer buffer."""
    return {"w": np.array([[1.0, 2.0, 3.0]], np.float32), "n": np.array(5, np.int64)}


def test_malfunction_modes() -> None:
    agg = _agg()
    before = {k: v.tobytes() for k, v in agg.items()}
    rnd = malfunction(agg, MalfunctionParams("random", scale=2.0), np.random.default_rng(0))
    expected = np.random.default_rng(0).normal(0.0, 2.0, size=(1, 3)).astype(np.float32)
    np.testing.assert_array_equal(rnd["w"], expected)
    assert rnd["w"].dtype == np.float32 and rnd["n"].tobytes() == agg["n"].tobytes()
    zeros = malfunction(agg, MalfunctionParams("zeros"), np.random.default_rng(0))
    np.testing.assert_array_equal(zeros["w"], np.zeros((1, 3), np.float32))
    evil = {"w": np.array([[9.0, 9.0, 9.0]], np.float64), "n": np.array(0, np.int64)}
    att = malfunction(agg, MalfunctionParams("attacker", attacker=evil), np.random.default_rng(0))
    np.testing.assert_array_equal(att["w"], np.full((1, 3), 9.0, np.float32))
    assert att["w"].dtype == np.float32 and int(att["n"]) == 5
    assert {k: v.tobytes() for k, v in agg.items()} == before


def test_malfunction_validation() -> None:
    with pytest.raises(ValueError, match="mode"):
        MalfunctionParams("broken")
    with pytest.raises(ValueError, match="attacker"):
        MalfunctionParams("attacker")
    with pytest.raises(ValueError, match="attacker"):
        bad = {"w": np.zeros((3, 1))}
        malfunction(_agg(), MalfunctionParams("attacker", attacker=bad), np.random.default_rng(0))


def _updates() -> tuple[list[Update], Weights]:
    """Three devices' updates and the global model."""
    g: Weights = {"w": np.array([1.0, 1.0], np.float32), "n": np.array(0, np.int64)}
    ups = [
        Update({"w": np.array([2.0, 3.0], np.float32), "n": np.array(1)}, 10, 0.9, "d0"),
        Update({"w": np.array([0.0, 1.0], np.float32), "n": np.array(1)}, 20, 0.8, "d1"),
        Update({"w": np.array([4.0, 4.0], np.float32), "n": np.array(1)}, 30, 0.7, "d2"),
    ]
    return ups, g


def test_tamper_scale_replace_drop() -> None:
    ups, g = _updates()
    before = [u.weights["w"].tobytes() for u in ups]
    out = tamper(ups, g, TamperParams("d1", "scale", factor=-3.0), np.random.default_rng(0))
    assert out[0] is ups[0] and out[2] is ups[2]
    # g + (-3) * ([0, 1] - [1, 1]) = [4, 1]
    np.testing.assert_array_equal(out[1].weights["w"], np.array([4.0, 1.0], np.float32))
    assert (out[1].samples, out[1].accuracy, out[1].sender) == (20, 0.8, "d1")
    assert out[1].weights["n"].tobytes() == ups[1].weights["n"].tobytes()
    new = {"w": np.array([7.0, 7.0], np.float32), "n": np.array(1)}
    rep = tamper(ups, g, TamperParams("d2", "replace", replacement=new), np.random.default_rng(0))
    np.testing.assert_array_equal(rep[2].weights["w"], new["w"])
    dropped = tamper(ups, g, TamperParams("d0", "drop"), np.random.default_rng(0))
    assert [u.sender for u in dropped] == ["d1", "d2"]
    assert [u.weights["w"].tobytes() for u in ups] == before


def test_tamper_validation_and_registry() -> None:
    ups, g = _updates()
    with pytest.raises(ValueError, match="'d9'"):
        tamper(ups, g, TamperParams("d9", "drop"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="factor"):
        TamperParams("d0", "scale")
    with pytest.raises(ValueError, match="action"):
        TamperParams("d0", "steal")
    assert {k: s.kind for k, s in EDGE_FAULTS.items()} == {
        "malfunction": "aggregate",
        "tamper": "updates",
        "withhold_blobs": "blobs",
    }
