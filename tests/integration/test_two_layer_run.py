"""two-layer in real processes (local backend, ZeroMQ, user-space shaping): 3 MECs x 3
devices; every MEC's LMUC gets a PBFT-certified block per round, the GMUC a block of the
MECs' votes per round, every replica of each chain ends at the same head, and the model
learns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from node.core.block import Block
from node.core.encoding import decode_canonical
from node.ledger.chain import ChainConfig, verify_store
from node.ledger.chains import chain_dir
from node.ledger.store import open_store
from node.schemes import SCHEMES
from orchestrator.cli import main as cli_main
from orchestrator.collect import read_records
from orchestrator.runner import Run
from tests.integration.test_local_run import small_scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        "two-layer" not in SCHEMES,
        reason="two-layer is not in the scheme registry (node/schemes/__init__.py) yet",
    ),
]

ROUNDS = 3
MECS = ("mec0", "mec1", "mec2")


def _keepers() -> dict[str, list[str]]:
    devices = {m: [f"dev{i}-{j}" for j in range(3)] for i, m in enumerate(MECS)}
    out = {"gmuc-t0": ["pub", *MECS]}
    for mec in MECS:
        out[f"lmuc-{mec}"] = [mec, *devices[mec]]
    return out


def test_two_layer_run_certifies_lmuc_blocks_and_gmuc_votes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        scheme={"name": "two-layer", "full_devices": 3, "fanout": 1},
        training={
            "rounds": ROUNDS,
            "local_epochs": 2,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 60,
        },
        topology={"base_stations": 1, "mecs_per_bs": 3, "devices_per_mec": 3, "t_ms": 5},
        ledger={"consensus": "pbft"},
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert result.rounds_completed == ROUNDS
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    assert result.final_accuracy is not None and result.final_accuracy > 0.5
    for cid, keepers in _keepers().items():
        stores = {n: open_store(chain_dir(run_dir / "nodes" / n, cid)) for n in keepers}
        try:
            reports = {n: verify_store(s) for n, s in stores.items()}
            assert all(r.ok for r in reports.values()), {n: r.failures for n, r in reports.items()}
            assert len({(r.height, r.head_hash) for r in reports.values()}) == 1, cid
            store = stores[keepers[0]]
            raw = store.meta_get("chain_config")
            assert raw is not None
            finality = ChainConfig.from_dict(decode_canonical(raw)).finality
            rounds: dict[int, int] = {}
            for h in range(1, reports[keepers[0]].height + 1):
                data = store.block_bytes(h)
                assert data is not None
                block = Block.from_bytes(data)
                finality.check(block)  # 2f+1 valid commit signatures of its committee
                kind = "gmuc.vote" if cid.startswith("gmuc") else "task.record_update"
                for tx in block.txs:
                    if tx.type == kind:
                        r = tx.payload["round"]
                        rounds[r] = rounds.get(r, 0) + 1
            expected = 3  # votes of the 3 MECs, or updates of the 3 devices
            assert rounds == {r: expected for r in range(1, ROUNDS + 1)}, (cid, rounds)
        finally:
            for s in stores.values():
                s.close()
    counters = {c["node"]: c for c in csv.DictReader((run_dir / "counters.csv").open())}
    for mec in MECS:  # every update of its group reached it over the D2D gossip
        assert counters[mec]["gossip_delivered"] == str(3 * ROUNDS)
    assert all(c["dropped"] == "" for c in counters.values()), counters  # nothing refused
    devices = [n for n in counters if n.startswith("dev")]
    assert all(counters[d]["gossip_published"] == str(ROUNDS) for d in devices)
    assert cli_main(["chain", "verify", str(run_dir)]) == 0  # every chain, every replica


def test_two_layer_run_with_two_tasks_on_their_own_shards(tmp_path: Path) -> None:
    """Isolation sharding in real processes: 6 MECs, tasks: 2; each GMUC shard is kept by its
    3 MECs and the publisher only, and each task records its own rounds."""
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        scheme={"name": "two-layer", "tasks": 2, "fanout": 1},
        training={
            "rounds": 2,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 60,
        },
        topology={"base_stations": 2, "mecs_per_bs": 3, "devices_per_mec": 3, "t_ms": 5},
        ledger={"consensus": "pbft"},
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    rounds = [r for r in read_records(run_dir / "nodes" / "pub") if r["event"] == "round"]
    assert sorted((r["task_chain"], r["round"]) for r in rounds) == [
        ("gmuc-t0", 1),
        ("gmuc-t0", 2),
        ("gmuc-t1", 1),
        ("gmuc-t1", 2),
    ]
    for cid, mecs in {"gmuc-t0": MECS, "gmuc-t1": ("mec3", "mec4", "mec5")}.items():
        keepers = sorted(
            p.name for p in (run_dir / "nodes").iterdir() if chain_dir(p, cid).exists()
        )
        assert keepers == sorted(["pub", *mecs]), cid
    assert cli_main(["chain", "verify", str(run_dir)]) == 0


def test_two_layer_run_goes_on_when_a_mec_crashes(tmp_path: Path) -> None:
    """mec2 is killed after round 1: the other two MECs' votes (a majority of 3) still decide
    every round, the GMUC's PBFT (3 of 4 replicas) still commits, and mec2's devices stop
    on the publisher's stop."""
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        scheme={"name": "two-layer", "fanout": 1},
        training={
            "rounds": 3,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 15,
        },
        topology={"base_stations": 1, "mecs_per_bs": 3, "devices_per_mec": 3, "t_ms": 5},
        ledger={"consensus": "pbft"},
        faults=[{"at_round": 2, "action": "crash", "nodes": ["mec2"]}],
    )

    result = Run(scenario, run_dir, progress=False).execute()

    assert result.rounds_completed == 3
    assert {n: c for n, c in result.exit_codes.items() if c != 0}.keys() == {"mec2"}
    votes = [r for r in read_records(run_dir / "nodes" / "pub") if r["event"] == "votes"]
    assert [v["round"] for v in votes] == [1, 2, 3]
    assert all(v["decided"] is not None for v in votes)
    assert votes[-1]["votes"] == 2  # mec2's vote missing, the majority decided
    assert cli_main(["chain", "verify", str(run_dir)]) == 0
