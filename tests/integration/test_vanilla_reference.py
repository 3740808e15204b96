"""The vanilla scheme's reference run: `scenarios/quickstart.yaml --seed 7` gives the same
per-round accuracies and the same global-model blobs as recorded in
tests/reference/vanilla_quickstart_seed7.json.

A refactoring that must not change behaviour (issue #13: the vanilla scheme ported onto the
scheme plug-in interfaces) keeps this test passing. A change that is meant to alter results
(another partition, model or aggregation) re-records the file, and says why in its commit:
``python tests/integration/test_vanilla_reference.py --record``.

The blob hashes are bit-exact, and torch's CPU kernels are not the same on every CPU: on an
AMD EPYC with AVX-512 all 20 accuracies matched the recording (made on another CPU) and no
global blob did. So the file also records a float fingerprint of the recording machine (a
hash of one seeded local SGD epoch on a small MLP, `float_fingerprint`); the accuracies are
compared everywhere, the blobs only where this machine's fingerprint is the recorded one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from node.core.block import Block  # noqa: E402
from node.ledger.chains import MAIN_CHAIN, chain_dir  # noqa: E402
from node.ledger.store import DB_NAME, ChainStore  # noqa: E402
from orchestrator.runner import Run  # noqa: E402
from orchestrator.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "quickstart.yaml"
SEED = 7
REFERENCE = ROOT / "tests" / "reference" / "vanilla_quickstart_seed7.json"
PUBLISHER = "pub"


def reference_of(run_dir: Path) -> dict[str, Any]:
    """Per round: the publisher's test accuracy (metrics.csv) and the global model's blob hash
    (its `task.record_global` transaction on the publisher's ledger)."""
    with (run_dir / "metrics.csv").open() as f:
        accuracy = {
            int(r["round"]): r["accuracy"] for r in csv.DictReader(f) if r["node"] == PUBLISHER
        }
    store = ChainStore(chain_dir(run_dir / "nodes" / PUBLISHER, MAIN_CHAIN) / DB_NAME)
    blobs: dict[int, str] = {}
    try:
        for height in range(store.height() + 1):
            data = store.block_bytes(height)
            assert data is not None, f"block {height} missing from the publisher's ledger"
            for tx in Block.from_bytes(data).txs:
                if tx.type == "task.record_global":
                    blobs[int(tx.payload["round"])] = bytes(tx.payload["blob"]).hex()
    finally:
        store.close()
    return {
        "scenario": SCENARIO.name,
        "seed": SEED,
        "rounds": [
            {"round": r, "accuracy": accuracy.get(r), "global_blob": blobs.get(r)}
            for r in sorted(set(accuracy) | set(blobs))
        ],
    }


def float_fingerprint() -> str:
    """SHA-256 of the weights after one seeded local epoch of a small MLP on seeded data, with
    the training code the nodes use: equal on two machines whose torch kernels round alike."""
    import numpy as np

    from node.learning.models import build_model
    from node.learning.train import configure_torch_threads, train_local
    from node.learning.weights import get_weights, weights_to_bytes

    configure_torch_threads(1)
    rng = np.random.default_rng(7)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, size=64).astype(np.int64)
    model = build_model("mlp", (1, 8, 8), 10, seed=7)
    train_local(model, x, y, epochs=1, batch_size=16, lr=0.05, seed=7)
    return hashlib.sha256(weights_to_bytes(get_weights(model))).hexdigest()


def reference_run(out: Path) -> dict[str, Any]:
    scenario = load_scenario(SCENARIO).model_copy(update={"seed": SEED})
    result = Run(scenario, out, progress=False).execute()
    assert result.rounds_completed == scenario.training.rounds, result
    return reference_of(out)


def test_vanilla_quickstart_seed_7_matches_its_recorded_reference(tmp_path: Path) -> None:
    expected = json.loads(REFERENCE.read_text())

    got = reference_run(tmp_path / "run")

    assert len(got["rounds"]) == 20
    same_floats = float_fingerprint() == expected["float_fingerprint"]
    for want, have in zip(expected["rounds"], got["rounds"], strict=True):
        if not same_floats:  # another CPU's kernels: the accuracies, not the bits
            want, have = {**want, "global_blob": None}, {**have, "global_blob": None}
        assert have == want, f"round {want['round']}: {have} != recorded {want}"
    if not same_floats:
        print("global blobs not compared: this CPU's float fingerprint is not the recording's")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(f"usage: python {Path(__file__).name} --record  (rewrites {REFERENCE.name})")
    with tempfile.TemporaryDirectory() as tmp:
        recorded = {**reference_run(Path(tmp) / "run"), "float_fingerprint": float_fingerprint()}
        REFERENCE.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"recorded {REFERENCE}")
