"""Random seeded schedules: n, Byzantine replicas and behaviours, network faults, requests."""

from __future__ import annotations

import random

from tests.sim.pbft.byzantine import BEHAVIOURS
from tests.sim.pbft.harness import build, run_to_completion, submit
from tests.sim.pbft.network import NetConfig

KINDS = [*sorted(BEHAVIOURS), "twins"]


def run_schedule(seed: int) -> None:
    """Build, run and check one random schedule (raises AssertionError naming the seed)."""
    rng = random.Random(seed)
    n = rng.choice([4, 7, 10])
    f = (n - 1) // 3
    bad = rng.sample(range(n), rng.randint(0, f))
    byzantine = {i: rng.choice(KINDS) for i in bad}
    stable_at = rng.uniform(0.0, 2.0)
    ids = [f"r{i}" for i in range(n)]
    partitions = []
    if rng.random() < 0.3:
        side = frozenset(rng.sample(ids, rng.randint(1, n // 2)))
        start = rng.uniform(0.0, stable_at)
        partitions.append((side, start, rng.uniform(start, stable_at + 0.5)))
    net = NetConfig(
        drop=rng.choice([0.0, 0.02, 0.1, 0.2]),
        dup=rng.choice([0.0, 0.05, 0.2]),
        max_delay=rng.choice([0.005, 0.02, 0.1]),
        stable_at=stable_at,
        partitions=partitions,
    )
    cluster = build(n, byzantine, net, seed)
    requests = [b"block-%d-%d" % (seed, k) for k in range(rng.randint(1, 3))]
    submit(cluster, requests, at=rng.uniform(0.0, 0.5), gap=rng.uniform(0.0, 0.2))
    try:
        run_to_completion(cluster, until=stable_at + 90.0, seed=seed)
    except AssertionError as exc:
        raise AssertionError(f"seed={seed} n={n} byzantine={byzantine}: {exc}") from None
