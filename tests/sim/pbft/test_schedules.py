"""1,000 seeded random schedules: n in {4, 7, 10}, up to f Byzantine replicas, faults."""

from __future__ import annotations

import pytest

from tests.sim.pbft.schedules import run_schedule

pytestmark = pytest.mark.schedules


@pytest.mark.parametrize("seed", range(1000))
def test_random_schedules(seed: int) -> None:
    """Safety at every step, liveness after the network stabilises (replay: the seed)."""
    run_schedule(seed)
