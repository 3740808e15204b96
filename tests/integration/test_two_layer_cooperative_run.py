"""two-layer cooperative sharding in real processes (local backend, ZeroMQ): 6 MECs x 3
devices, tasks: 2, cooperative: true — each GMUC shard is kept by its 3 MECs and the
publisher only, both record the same global model every round, every device registered on
its LMUC and answered the task request on its shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.contracts import gmuc_request, identity, task
from node.contracts.state import State
from node.ledger.chain import Chain
from node.ledger.chains import chain_dir
from node.ledger.store import open_store
from node.schemes import SCHEMES
from orchestrator.cli import main as cli_main
from orchestrator.collect import read_records
from orchestrator.runner import Run
from tests.integration.test_local_run import small_scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("two-layer" not in SCHEMES, reason="two-layer is not registered"),
]

SHARDS = {"gmuc-t0": ("mec0", "mec1", "mec2"), "gmuc-t1": ("mec3", "mec4", "mec5")}
ROUNDS = 2


def test_two_layer_cooperative_shards_share_the_global_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = small_scenario(
        scheme={"name": "two-layer", "tasks": 2, "cooperative": True, "fanout": 1},
        training={
            "rounds": ROUNDS,
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
    assert cli_main(["chain", "verify", str(run_dir)]) == 0
    rounds = [r for r in read_records(run_dir / "nodes" / "pub") if r["event"] == "round"]
    accuracy = {(r["task_chain"], r["round"]): r["accuracy"] for r in rounds}
    assert sorted(accuracy) == [(c, r) for c in sorted(SHARDS) for r in range(1, ROUNDS + 1)]
    for r in range(1, ROUNDS + 1):
        assert accuracy[("gmuc-t0", r)] == accuracy[("gmuc-t1", r)]  # one model
    blobs = {}
    for cid, mecs in SHARDS.items():
        keepers = sorted(
            p.name for p in (run_dir / "nodes").iterdir() if chain_dir(p, cid).exists()
        )
        assert keepers == sorted(["pub", *mecs]), cid
        state = _state(run_dir, "pub", cid)
        blobs[cid] = [
            state.get(task.NS_GLOBAL, task.global_key(scenario.name, r))["blob"]
            for r in range(1, ROUNDS + 1)
        ]
        devices = [f"dev{m[-1]}-{j}" for m in mecs for j in range(3)]
        assert gmuc_request.eligible(state, scenario.name, devices) == devices
        for m in mecs:
            lmuc = _state(run_dir, m, f"lmuc-{m}")
            assert all(identity.key_of(lmuc, d) is not None for d in devices if d[3] == m[-1]), m
    assert blobs["gmuc-t0"] == blobs["gmuc-t1"]


def _state(run_dir: Path, node: str, chain_id: str) -> State:
    """The contract state of `node`'s replica of `chain_id` (replayed from its store)."""
    store = open_store(chain_dir(run_dir / "nodes" / node, chain_id))
    try:
        return Chain.open(store).state.copy()
    finally:
        store.close()
