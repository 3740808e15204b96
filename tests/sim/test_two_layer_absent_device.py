"""A device whose process never starts: its MEC stops waiting for its join at the start-up
timeout, the publisher starts the task without it, and the run ends with every round done
by the others; its LMUC's PBFT (the MEC and three full devices, this one among them) goes
on with the three that are up."""

from __future__ import annotations

from pathlib import Path

from tests.sim.test_two_layer import PARAMS, records
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import VanillaNet

ROUNDS = 2
ABSENT = "dev1-2"


def test_a_device_that_never_starts_is_left_out_and_the_run_ends(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=8)
    nodes = run_two_layer(
        net,
        tmp_path,
        digits_learning(ROUNDS),
        params=PARAMS,
        seed=8,
        reward_pool=0,
        config={"startup_timeout_s": 15},
        absent=frozenset({ABSENT}),
    )
    rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    # never a worker; the others are, at the latest once their responses are on the GMUC
    # (a device that joins after its MEC's start-up timeout — a loaded machine — responds
    # in a block after the task request's and is selected from the next round on)
    selections = records(tmp_path, "mec1", "selection")
    assert all(ABSENT not in r["selected"] for r in selections)
    assert selections[-1]["selected"] == ["dev1-0", "dev1-1", "dev1-3"]
    assert ABSENT not in nodes
