"""metrics.csv from the nodes' JSONL records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from orchestrator.collect import collect


def test_rejected_devices_and_their_reasons_reach_metrics_csv(tmp_path: Path) -> None:
    pub = tmp_path / "nodes" / "pub"
    pub.mkdir(parents=True)
    record = {
        "event": "round",
        "node": "pub",
        "role": "publisher",
        "round": 2,
        "accuracy": 0.9,
        "rejected": ["dev1-0", "dev2-1"],
        "rejected_reasons": {"dev2-1": "aggregator", "dev1-0": "tampered"},
    }
    (pub / "metrics.jsonl").write_text(json.dumps(record) + "\n")

    assert collect(tmp_path) == (1, 1)

    with (tmp_path / "metrics.csv").open() as f:
        row = next(csv.DictReader(f))
    assert row["rejected"] == "dev1-0 dev2-1"
    assert row["rejected_reasons"] == "dev1-0=tampered;dev2-1=aggregator"
