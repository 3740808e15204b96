"""blockfl in real processes (local backend, ZeroMQ, user-space shaping): the MECs mine every
round's block by proof of work, every replica ends with the same chain, and a label-flipping
device works through the existing behaviours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.core.finality import meets_target
from node.ledger.store import open_store
from node.schemes import SCHEMES
from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from tests.integration.test_local_run import small_scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("blockfl" not in SCHEMES, reason="blockfl is not in the scheme registry"),
]

ROUNDS = 3
BITS = 12


def test_blockfl_run_mines_every_round_and_replicas_agree(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        # settle_s: generous, so that competing blocks spread first even at a load of 10+
        scheme={"name": "blockfl", "difficulty_bits": BITS, "settle_s": 2.0},
        training={
            "rounds": ROUNDS,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 60,
        },
        topology={"base_stations": 1, "mecs_per_bs": 2, "devices_per_mec": 3, "t_ms": 5},
        faults=[
            {
                "at_round": 1,
                "action": "malicious",
                "nodes": ["dev0-0"],
                "behaviour": "label_flip",
                "params": {"strength": 1.0, "mode": "reverse"},
            }
        ],
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert result.rounds_completed == ROUNDS
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    assert cli_main(["chain", "verify", str(run_dir)]) == 0
    stores = sorted(run_dir.glob("nodes/*/chains/main/ledger.sqlite"))
    assert len(stores) == 1 + 2 + 6
    heads = set()
    for path in stores:
        store = open_store(path.parent)
        try:
            head = store.head()
            assert head is not None
            heads.add((head.height, head.hash))
            blocks = list(store.blocks(1))
        finally:
            store.close()
        assert all(meets_target(b.hash, BITS) for b in blocks)
    assert len(heads) == 1, "every replica holds the same chain"
    flips = [
        json.loads(line)
        for line in (run_dir / "nodes" / "dev0-0" / "metrics.jsonl").read_text().splitlines()
        if '"round"' in line
    ]
    assert any(r.get("behaviour") == "label_flip" for r in flips)
