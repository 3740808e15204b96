"""PBFT among 4 real MEC processes: blocks commit with 2f+1 signatures; when the primary's
process is killed a view change happens and commits go on; restarted, it catches up."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from node.core.block import Block
from node.core.encoding import decode_canonical
from node.core.finality import Committee
from node.ledger.chain import ChainConfig
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.light import verify_replica_store
from node.ledger.store import open_store
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

pytestmark = pytest.mark.integration


def test_pbft_validators_survive_a_killed_primary(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "pbft",
            "seed": 4,
            # 30 local epochs make a round last about a second, longer than the orchestrator's
            # poll; a generous deadline keeps slow devices in their rounds on a loaded machine.
            "training": {
                "rounds": 10,
                "local_epochs": 30,
                "batch_size": 16,
                "learning_rate": 0.05,
                "round_deadline_s": 8,
            },
            "topology": {"mecs_per_bs": 4, "devices_per_mec": 1},
            "ledger": {"consensus": "pbft"},
            "faults": [
                {"at_round": 3, "action": "crash", "nodes": ["mec0"]},  # the primary of view 0
                {"at_round": 5, "action": "restart", "nodes": ["mec0"]},
            ],
        }
    )
    out = tmp_path / "run"

    result = Run(scenario, out, progress=False).execute()

    assert result.rounds_completed == 10
    pub_rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["role"] == "publisher"]
    with_updates = sum(1 for r in pub_rows if int(r["contributors"] or 0) > 0)
    stores = {
        n: open_store(chain_dir(out / "nodes" / n, MAIN_CHAIN))
        for n in ("pub", "mec0", "mec1", "dev1-0")
    }
    try:
        reports = {n: verify_replica_store(s) for n, s in stores.items()}
        assert all(r.ok for r in reports.values()), {n: r.failures for n, r in reports.items()}
        # publish, one block per round with updates, rewards: nothing submitted is lost
        assert reports["pub"].height == 2 + with_updates
        assert {r.head_hash for r in reports.values()} == {reports["pub"].head_hash}
        raw = stores["pub"].meta_get("chain_config")
        assert raw is not None
        config = ChainConfig.from_dict(decode_canonical(raw))
        names = {key: nid for nid, (key, _) in config.genesis.members.items()}
        assert isinstance(config.finality, Committee)
        assert config.finality.quorum == 3 and len(config.finality.members) == 4
        signers = []
        for h in range(1, reports["pub"].height + 1):
            data = stores["pub"].block_bytes(h)
            assert data is not None
            signers.append({names[s.signer] for s in Block.from_bytes(data).certificate})
        assert all(len(s) >= 3 for s in signers), "every block carries 2f+1 commit signatures"
        assert any("mec0" not in s for s in signers), "blocks committed without the old primary"
    finally:
        for s in stores.values():
            s.close()
    assert "mec0" in (out / "events.csv").read_text()
