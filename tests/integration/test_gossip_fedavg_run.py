"""gossip-fedavg in real processes (local backend, ZeroMQ, user-space shaping): updates and
blocks reach their MECs and devices by D2D gossip; counters.csv shows the gossip."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from node.schemes import SCHEMES
from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from tests.integration.test_local_run import small_scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        "gossip-fedavg" not in SCHEMES,
        reason="gossip-fedavg is not in the scheme registry (node/schemes/__init__.py) yet",
    ),
]


def test_gossip_fedavg_run_spreads_updates_and_blocks_by_gossip(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        scheme={"name": "gossip-fedavg", "fanout": 1},
        training={"rounds": 3},
        topology={"base_stations": 1, "mecs_per_bs": 2, "devices_per_mec": 3, "t_ms": 5},
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert result.rounds_completed == 3
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    counters = {c["node"]: c for c in csv.DictReader((run_dir / "counters.csv").open())}
    devices = [n for n in counters if n.startswith("dev")]
    assert len(devices) == 6
    for dev in devices:
        assert counters[dev]["gossip_published"] == "3"  # its update, each round
        assert int(counters[dev]["gossip_delivered"]) >= 1  # blocks by gossip
    for mec in ("mec0", "mec1"):
        assert counters[mec]["gossip_delivered"] == str(3 * 3)  # every update of its group
    assert counters["pub"]["gossip_published"] == ""  # the publisher does not gossip
    assert sum(int(counters[d]["gossip_relayed"]) for d in devices) > 0
    assert all(c["gossip_invalid"] == "" for c in counters.values())
    assert cli_main(["chain", "verify", str(run_dir)]) == 0
