"""flchain in real processes (local backend, ZeroMQ, user-space shaping): 3 MECs order the
chain by PBFT (with the publisher as 4th replica), share their devices' updates with their
channel and each compute the global model; a malfunctioning MEC is outvoted on its model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from node.contracts import flchain
from node.core.finality import Committee
from node.ledger.chain import Chain, verify_store
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.store import open_store
from node.schemes import SCHEMES
from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from tests.integration.test_local_run import small_scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("flchain" not in SCHEMES, reason="flchain is not in the scheme registry"),
]

ROUNDS = 4


def test_flchain_run_commits_every_round_on_the_mec_chain(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        seed=6,
        scheme={"name": "flchain"},
        ledger={"consensus": "pbft"},
        # generous: a round ends when every MEC holds the model, long before the deadline
        training={
            "rounds": ROUNDS,
            "local_epochs": 2,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 60,
        },
        topology={"base_stations": 1, "mecs_per_bs": 3, "devices_per_mec": 2, "t_ms": 5},
        faults=[
            {
                "at_round": 3,
                "action": "malicious",
                "nodes": ["mec2"],
                "behaviour": "malfunction",
                "params": {"mode": "zeros"},
            }
        ],
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert result.rounds_completed == ROUNDS
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    pub = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r["role"] == "publisher"]
    rounds = {int(r["round"]): r for r in pub}
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    assert float(rounds[2]["accuracy"]) > 0.5, "two clean rounds on digits"
    stores = {
        n: open_store(chain_dir(run_dir / "nodes" / n, MAIN_CHAIN))
        for n in ("pub", "mec0", "mec1", "mec2", "dev0-0", "dev2-1")
    }
    try:
        reports = {n: verify_store(s) for n, s in stores.items()}
        assert all(r.ok for r in reports.values()), {n: r.failures for n, r in reports.items()}
        assert {r.head_hash for r in reports.values()} == {reports["pub"].head_hash}
        assert reports["pub"].height == 1 + ROUNDS + 1  # publish, one per round, rewards
        chain = Chain.open(stores["dev0-0"])
        finality = chain.config.finality
        assert isinstance(finality, Committee) and finality.quorum == 3
        assert len(finality.members) == 4  # 3 MECs and the publisher
        state = chain.state
    finally:
        for s in stores.values():
            s.close()
    holders = [
        flchain.channel_global(state, "itest", 0, r)["holders"] for r in range(1, ROUNDS + 1)
    ]  # type: ignore[index]
    assert holders[:2] == [["mec0", "mec1", "mec2"]] * 2
    assert holders[2:] == [["mec0", "mec1"]] * (ROUNDS - 2), "mec2's own model is outvoted"
    assert cli_main(["chain", "verify", str(run_dir)]) == 0
