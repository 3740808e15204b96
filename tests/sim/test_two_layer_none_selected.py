"""A MEC that selects no worker (here: every device's reputation, 0.5 at the start, is below
the scenario's threshold) relays its empty LMUC round at once instead of waiting out the
device deadline, so the rounds go on at the pace of the messages: with a deadline of 600 s
the run ends in well under one deadline, each round keeping the global model."""

from __future__ import annotations

import time
from pathlib import Path

from tests.sim.test_two_layer import PARAMS, records
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import VanillaNet

ROUNDS = 2
DEADLINE_S = 600


def test_a_mec_with_no_worker_relays_at_once(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=3, seed=9)
    started = time.monotonic()
    run_two_layer(
        net,
        tmp_path,
        digits_learning(ROUNDS, round_deadline_s=DEADLINE_S),
        params={**PARAMS, "reputation_threshold": 0.9},
        seed=9,
        reward_pool=0,
        config={"startup_timeout_s": 120},
        join_timeout_s=DEADLINE_S,
    )
    assert time.monotonic() - started < DEADLINE_S * 0.6  # no MEC waited for its deadline
    for mec in ("mec0", "mec1", "mec2"):
        assert [r["selected"] for r in records(tmp_path, mec, "selection")] == [[]] * ROUNDS
        submits = records(tmp_path, mec, "lmuc_submit")
        assert [(r["updates"], r["submitted_on"]) for r in submits] == [
            (0, "none_selected")
        ] * ROUNDS
    assert [r["round"] for r in records(tmp_path, "pub", "round")] == list(range(1, ROUNDS + 1))
