"""Round outcomes of the vanilla scheme that must not hang on timing: what the round
record says was rejected.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.daemon import Daemon
from node.learning.train import configure_torch_threads
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config

TAMPERER = "mec1"
TARGET = "dev1-0"
ROUNDS = 3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def _run(
    tmp_path: Path,
    behaviours: dict[str, list[dict[str, Any]]],
    deadline_s: float = 120,
) -> dict[str, Daemon]:
    """Run the vanilla scheme to the end."""
    net = VanillaNet.build(mecs=2, devices_per_mec=2, seed=7, fixed_keys=True)
    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=deadline_s,
    )
    config = {
        "startup_timeout_s": 120,
        "aggregator": {"name": "median", "params": {}},
        "behaviours": lambda nid: behaviours.get(nid, []),
    }
    return net.run(tmp_path, learning, seed=7, reward_pool=100, config=config)


def test_tampered_updates_are_in_the_rounds_rejected(tmp_path: Path) -> None:
    """A tampering MEC (the `edge_faults` scenario's behaviour) scales one device's update;
    the publisher catches that it no longer matches the device's signed transaction and
    drops it: the round's ``rejected`` must name it (with the reason), not only the
    publisher's drop counters. The deadline (120 s) is never reached."""
    tamper = {
        "from_round": 2,
        "until_round": None,
        "name": "tamper",
        "params": {"target": TARGET, "action": "scale", "factor": 10.0},
    }

    nodes = _run(tmp_path, {TAMPERER: [tamper]})

    rounds = {r["round"]: r for r in read_records(tmp_path / "pub") if r["event"] == "round"}
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    assert rounds[1]["rejected"] == [] and rounds[1]["rejected_reasons"] == {}
    for r in range(2, ROUNDS + 1):
        assert rounds[r]["rejected"] == [TARGET], rounds[r]
        assert rounds[r]["rejected_reasons"] == {TARGET: "tampered"}
        assert rounds[r]["contributors"] == 3
    assert nodes["pub"].drops["tampered_update"] == ROUNDS - 1
