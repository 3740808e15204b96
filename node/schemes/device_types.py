"""Device types for the incentive contract's items: seeded KMeans over behaviour histories.

How it works
- The two-layer paper's publisher clusters devices from "the historical statistics of
  reputations stored in the GMUC and the behaviors of devices" (it names a deep network;
  we use scikit-learn's KMeans, our choice) and offers one contract item per type. This runs
  off chain, in the publisher; the contract only enforces the items' floors and pays.
- `features(state, devices)`: per device [reputation, belief, disbelief, uncertainty,
  positive events, negative events] from the reputation contract's records.
- `device_types(features, n_types, seed)`: standardised features, KMeans(n_init=10,
  random_state=seed); type ids 0..k-1 ordered by the cluster's mean of the first feature
  (the reputation): type 0 is the least trusted. k = min(n_types, distinct rows).
- `items_for(types, reputations)`: one item per type, "type-<k>", whose floor is the lowest
  reputation in the type (floored to millionths, less one millionth) and whose multiplier
  grows with the type: (k + 1) / number of types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from node.contracts import reputation
from node.contracts.reputation import SCALE
from node.contracts.state import State


def features(state: State, devices: Sequence[str]) -> dict[str, list[float]]:
    """Each device's reputation/behaviour vector from the chain's reputation records."""
    out: dict[str, list[float]] = {}
    for device in devices:
        op = reputation.opinion(state, device)
        record = state.get(reputation.NS, device) or {}
        out[device] = [
            op.reputation,
            op.belief,
            op.disbelief,
            op.uncertainty,
            float(record.get("n_pos", 0)),
            float(record.get("n_neg", 0)),
        ]
    return out


def device_types(
    features: Mapping[str, Sequence[float]], n_types: int, seed: int = 0
) -> dict[str, int]:
    """device -> type id (0 = lowest mean of feature 0), by seeded KMeans on the features."""
    import numpy as np
    from sklearn.cluster import KMeans

    if n_types < 1:
        raise ValueError(f"n_types must be >= 1, got {n_types}")
    devices = sorted(features)
    if not devices:
        return {}
    x = np.asarray([list(features[d]) for d in devices], dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError("features must be finite vectors of one length")
    k = min(n_types, len(np.unique(x, axis=0)))
    if k == 1:
        return dict.fromkeys(devices, 0)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    means = {int(c): float(x[labels == c, 0].mean()) for c in set(labels.tolist())}
    order = sorted(means, key=lambda c: (means[c], c))
    rank = {c: i for i, c in enumerate(order)}
    return {d: rank[int(c)] for d, c in zip(devices, labels.tolist(), strict=True)}


def items_for(types: Mapping[str, int], reputations: Mapping[str, float]) -> list[dict[str, Any]]:
    """The `incentive.offer` items: one per type, floor = its lowest reputation."""
    n = max(types.values(), default=-1) + 1
    items = []
    for k in range(n):
        members = [reputations[d] for d, t in types.items() if t == k]
        if not members:
            continue
        # one millionth of slack: the contract compares its exact T, floored to millionths
        floor = max(0, math.floor(min(members) * SCALE) - 1) / SCALE
        items.append({"name": f"type-{k}", "type": k, "floor": floor, "multiplier": (k + 1) / n})
    return items
