"""Merge the nodes' JSONL metrics into the run's `metrics.csv` and `counters.csv`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "run",
    "scheme",
    "round",
    "node",
    "role",
    "accuracy",
    "loss",
    "eval_set",
    "round_time_s",
    "train_time_s",
    "samples",
    "contributors",
    "missing",
    "rejected",
    "rejected_reasons",
    "behaviour",
    "emd",
    "elapsed_s",
    "wall_time",
)
COUNTER_COLUMNS = ("node", "role", "sent_msgs", "sent_bytes", "recv_msgs", "recv_bytes", "dropped")


def read_records(node_dir: Path) -> list[dict[str, Any]]:
    """Every JSON record a node wrote (a torn last line after a crash is skipped)."""
    path = node_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipped a torn line", path)
    return records


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else value


def collect(run_dir: Path) -> tuple[int, int]:
    """Write metrics.csv and counters.csv; returns (metric rows, nodes seen)."""
    rows: list[dict[str, Any]] = []
    counters: list[dict[str, Any]] = []
    node_dirs = sorted(p for p in (run_dir / "nodes").iterdir() if p.is_dir())
    for node_dir in node_dirs:
        for rec in read_records(node_dir):
            if rec.get("event") == "round":
                rows.append({c: _cell(rec.get(c)) for c in METRIC_COLUMNS})
            elif rec.get("event") == "counters":
                counters.append({c: _cell(rec.get(c)) for c in COUNTER_COLUMNS})
    rows.sort(key=lambda r: (int(r["round"]), str(r["role"]), str(r["node"])))
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (run_dir / "counters.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COUNTER_COLUMNS)
        writer.writeheader()
        writer.writerows(counters)
    return len(rows), len(node_dirs)
