"""Cooperative sharding's combination of the shards' aggregates (`combine_shards`) and its
parameter check."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning.aggregators import Update, fedavg
from node.schemes import make_scheme
from node.schemes.two_layer.common import combine_shards


def test_weighted_by_samples_it_equals_one_fedavg_over_every_shard() -> None:
    rng = np.random.default_rng(3)
    updates = [
        Update({"w": rng.normal(size=(3, 2)).astype(np.float32)}, float(n), sender=f"d{i}")
        for i, n in enumerate([10, 30, 5, 55, 20])
    ]
    shards = [updates[:2], updates[2:]]
    results = [(dict(fedavg(s)), int(sum(u.samples for u in s))) for s in shards]

    combined = combine_shards(results)

    assert combined["w"].dtype == np.float32
    np.testing.assert_allclose(combined["w"], fedavg(updates)["w"], rtol=1e-6)


def test_a_shard_without_samples_counts_for_nothing() -> None:
    a = {"w": np.ones(2, dtype=np.float32)}
    b = {"w": np.zeros(2, dtype=np.float32)}
    assert combine_shards([(a, 0), (b, 7)])["w"].tolist() == [0.0, 0.0]
    assert combine_shards([(a, 0), (b, 0)])["w"].tolist() == [1.0, 1.0]  # the kept model
    with pytest.raises(ValueError, match="no shard"):
        combine_shards([])


def test_cooperative_needs_two_tasks() -> None:
    with pytest.raises(ValueError, match=r"cooperative: .*tasks >= 2"):
        make_scheme("two-layer", {"cooperative": True})
    assert make_scheme("two-layer", {"cooperative": True, "tasks": 2}).params.model_dump()[
        "cooperative"
    ]
