"""A real multi-process run with the fault schedule: attacks, a tampering MEC, a crash and
restart, a link going down and up; every event is applied and recorded."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

pytestmark = pytest.mark.integration

RESTARTED = "dev0-2"


def hold_publisher_until_restarted(run: Run, record: dict[str, Any]) -> None:
    """After round 4 (the restart of round 5 is applied just before this hook), freeze the
    publisher until the restarted process has loaded its data and said hello: the rounds
    after the restart then find it up however long a fresh process takes to import torch
    on a loaded machine (the MEC no longer waits for a device it presumes down)."""
    if record["round"] != 4:
        return
    pub = run.backend.pids()["pub"]
    log = run.node_dir(RESTARTED) / "node.log"
    os.kill(pub, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 300
        while log.read_text().count(" training samples") < 2:  # its second start loaded data
            assert time.monotonic() < deadline, "the restarted device did not start"
            time.sleep(0.1)  # polling a file for a condition, not sleeping for synchronisation
    finally:
        os.kill(pub, signal.SIGCONT)


def test_scheduled_faults_are_applied_and_recorded(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "faults",
            "seed": 2,
            "model": "mlp",
            # 40 local epochs make a round last about a second, longer than the orchestrator's poll.
            "training": {
                "rounds": 8,
                "local_epochs": 40,
                "batch_size": 16,
                "learning_rate": 0.05,
                "round_deadline_s": 8,
            },
            "topology": {"mecs_per_bs": 2, "devices_per_mec": 3},
            "aggregator": {"name": "median"},
            "faults": [
                {
                    "at_round": 2,
                    "action": "malicious",
                    "nodes": ["dev0-0"],
                    "behaviour": "sign_flip",
                    "params": {"scale": 3.0},
                },
                {
                    "at_round": 2,
                    "action": "malicious",
                    "nodes": ["mec1"],
                    "behaviour": "tamper",
                    "params": {"target": "dev1-0", "action": "scale", "factor": 5.0},
                },
                {"at_round": 3, "action": "crash", "nodes": ["dev0-2"]},
                {"at_round": 5, "action": "restart", "nodes": ["dev0-2"]},
                {"at_round": 4, "action": "link_down", "link": ["dev1-1", "bs0"]},
                {"at_round": 6, "action": "link_up", "link": ["dev1-1", "bs0"]},
            ],
        }
    )
    out = tmp_path / "run"

    result = Run(scenario, out, progress=False, on_round=hold_publisher_until_restarted).execute()

    assert result.rounds_completed == 8
    events = list(csv.DictReader((out / "events.csv").open()))
    assert [(e["round"], e["action"]) for e in events] == [
        ("2", "malicious"),
        ("2", "malicious"),
        ("3", "crash"),
        ("4", "link_down"),
        ("5", "restart"),
        ("6", "link_up"),
    ]
    delivered = [(e["applied_by"], e["detail"]) for e in events if e["action"] == "malicious"]
    assert (
        delivered
        == [("orchestrator (control plane)", "SetBehaviour before start, from round 2")] * 2
    ), "the control plane delivered the behaviours"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    pub = {int(r["round"]): r for r in rows if r["role"] == "publisher"}
    missing = {r: set(pub[r]["missing"].split()) for r in pub}
    assert any("dev0-2" in missing[r] for r in (3, 4, 5)), "the crashed device was left out"
    assert "dev0-2" not in missing[8], "the restarted device is back"
    assert any("dev1-1" in missing[r] for r in (4, 5, 6)), "the cut-off device was left out"
    assert "dev1-1" not in missing[8], "its link came back"
    attacker = [r for r in rows if r["node"] == "dev0-0"]
    assert {r["behaviour"] for r in attacker if int(r["round"]) >= 2} == {"sign_flip"}
    assert {r["behaviour"] for r in attacker if int(r["round"]) == 1} == {""}
    counters = {c["node"]: c for c in csv.DictReader((out / "counters.csv").open())}
    tampered = dict(kv.split("=") for kv in counters["pub"]["dropped"].split(";") if kv)
    assert int(tampered["tampered_update"]) >= 6, "the MEC's tampering is caught every round"
    assert float(pub[8]["accuracy"]) > 0.8, "median keeps the model useful"
    assert result.failures == [], "scheduled crashes are no failures"
