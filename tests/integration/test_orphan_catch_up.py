"""A device whose MEC died mid-run still ends with the whole ledger (real processes).

With PBFT the blocks reach a device only through its MEC. When the fault schedule kills
the MEC, its device misses every later block; at ``stop`` it must catch up from a peer that
has them (the publisher lingers serving sync until every live node reports the final
height) instead of stopping short.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.light import verify_replica_store
from node.ledger.store import open_store
from orchestrator.chain_cli import verify
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

pytestmark = pytest.mark.integration

VICTIM = "mec3"
ORPHAN = "dev3-0"


def test_devices_of_a_crashed_mec_end_at_the_final_height(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "orphan",
            "seed": 6,
            # Whether a device makes a round's deadline does not matter here: the assertions
            # are about ledgers. Six rounds leave room for the crash to land mid-run.
            "training": {
                "rounds": 6,
                "local_epochs": 10,
                "batch_size": 16,
                "learning_rate": 0.05,
                "round_deadline_s": 6,
            },
            "topology": {"mecs_per_bs": 4, "devices_per_mec": 1},
            "ledger": {"consensus": "pbft"},
            "faults": [{"at_round": 2, "action": "crash", "nodes": [VICTIM]}],
        }
    )
    out = tmp_path / "run"

    result = Run(scenario, out, progress=False).execute()

    assert result.rounds_completed == 6
    pub = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["role"] == "publisher"]
    missed = [int(r["round"]) for r in pub if VICTIM in r["missing"].split()]
    assert missed and missed[-1] == 6, "the MEC died before the last round"
    assert result.exit_codes[ORPHAN] == 0
    live = [n for n in result.exit_codes if n != VICTIM]
    reports = {}
    for node in live:
        store = open_store(chain_dir(out / "nodes" / node, MAIN_CHAIN))
        try:
            reports[node] = verify_replica_store(store)
        finally:
            store.close()
    assert all(r.ok for r in reports.values()), {n: r.failures for n, r in reports.items()}
    final = reports["pub"]
    behind = {n: r.height for n, r in reports.items() if r.height != final.height}
    assert not behind, f"final height {final.height}; short ledgers: {behind}"
    assert {r.head_hash for r in reports.values()} == {final.head_hash}
    log = (out / "nodes" / ORPHAN / "node.log").read_text()
    assert "catching up from height" in log, "the orphan had missed blocks"
    assert "below the final" not in log
    ok, lines = verify(out / "nodes" / ORPHAN)
    assert ok, lines
