"""Unit tests for node.learning.emd and the unreliable-device (EMD-skew) attack."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning.attacks import UnreliableParams, apply_partition_attack, skew_to_emd
from node.learning.emd import device_emds, emd, label_distribution
from node.learning.partition import partition


def test_label_distribution_and_emd_hand_computed() -> None:
    p = label_distribution(np.array([0, 0, 1, 3]), 4)
    np.testing.assert_array_equal(p, [0.5, 0.25, 0.0, 0.25])
    q = np.full(4, 0.25)
    assert emd(p, q) == pytest.approx(0.25 + 0.0 + 0.25 + 0.0)
    assert emd(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 2.0  # the maximum
    # one class only vs. uniform over 10: 0.9 + 9 * 0.1 = 1.8
    assert emd(np.eye(10)[0], np.full(10, 0.1)) == pytest.approx(1.8)


def test_emd_validation() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        label_distribution(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="empty"):
        label_distribution(np.array([], np.int64), 4)
    with pytest.raises(ValueError, match="equal length"):
        emd(np.ones(3) / 3, np.ones(4) / 4)


def test_device_emds_iid_small_shards_large() -> None:
    labels = np.repeat(np.arange(10), 100)
    iid = device_emds(partition(labels, 10, "iid", seed=0), labels, 10)
    shards = device_emds(partition(labels, 10, "shards", seed=0, shards_per_part=1), labels, 10)
    assert max(iid) < 0.5
    assert shards == pytest.approx([1.8] * 10)  # each part holds a single class


@pytest.mark.parametrize("target", [0.0, 0.5, 1.0, 1.5, 1.7])
def test_skew_to_emd_from_the_population(target: float) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=20_000)
    pool = np.arange(len(labels))
    chosen = skew_to_emd(labels, pool, target, 10, np.random.default_rng(1), size=600)
    assert len(chosen) == 600 and len(np.unique(chosen)) == 600
    assert np.all(np.diff(chosen) > 0)
    got = emd(label_distribution(labels[chosen], 10), label_distribution(labels, 10))
    assert got == pytest.approx(target, abs=10 / 600)


def test_skew_to_emd_subsamples_a_device() -> None:
    labels = np.repeat(np.arange(10), 600)
    device = partition(labels, 10, "iid", seed=0)[0]
    chosen = skew_to_emd(labels, device, 1.5, 10, np.random.default_rng(2))
    assert set(chosen.tolist()) <= set(device.tolist())
    got = device_emds([chosen], labels, 10)[0]
    assert got == pytest.approx(1.5, abs=0.03)
    again = skew_to_emd(labels, device, 1.5, 10, np.random.default_rng(2))
    np.testing.assert_array_equal(chosen, again)


def test_skew_to_emd_errors() -> None:
    labels = np.repeat(np.arange(10), 10)
    with pytest.raises(ValueError, match="target_emd"):
        skew_to_emd(labels, np.arange(100), 2.0, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="size"):
        skew_to_emd(labels, np.arange(100), 1.5, 10, np.random.default_rng(0), size=1000)
    with pytest.raises(ValueError, match="not reachable"):
        skew_to_emd(labels, np.arange(20), 0.1, 10, np.random.default_rng(0))  # 2 classes only
    with pytest.raises(ValueError, match="size"):
        UnreliableParams(1.0, size=0)


def test_partition_attack_by_name() -> None:
    labels = np.repeat(np.arange(10), 100)
    out = apply_partition_attack(
        "unreliable",
        {"target_emd": 1.0, "size": 100},
        labels,
        np.arange(1000),
        np.random.default_rng(0),
        10,
    )
    assert device_emds([out], labels, 10)[0] == pytest.approx(1.0, abs=0.1)
