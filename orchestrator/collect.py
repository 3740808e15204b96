"""Merge the nodes' JSONL metrics into the run's `metrics.csv` and `counters.csv`, and the
nodes' ledgers' block timings into `blocks.csv` (`node.ledger.timing`).

Several tasks in one run (two-layer isolation sharding: ``scheme: {name: two-layer, tasks:
N}``): the publisher writes one round record per task and round, each naming its task's
chain (``task_chain``, a metrics.csv column, empty for a run of one task); a round counts as
completed once every task recorded it (`rounds_completed`)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from node.ledger.timing import write_blocks_csv

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "run",
    "scheme",
    "round",
    "node",
    "role",
    "task_chain",
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
    # bees / b-ei (node.schemes.bees): a UE's offloading decision, predicted and measured
    # transfer time, eqs. 7-9 energies and residual battery; an ES's offloads received;
    # the publisher's record of the round's block proposer
    "decision",
    "predicted_transfer_s",
    "transfer_s",
    "transfer_bytes",
    "energy_compute_j",
    "energy_transfer_j",
    "energy_total_j",
    "battery_j",
    "offloaded",
    "offload_bytes",
    "proposer",
    # sfl (node.schemes.sfl): a device's withheld update (self-evaluation); the publisher's
    # round record from the contract: qualified updates, the evaluation data (test / train
    # fallback), the accuracy on it, whether the aggregate was accepted
    "withheld",
    "qualified",
    "eval_data",
    "contract_accuracy",
    "accepted",
)
GOSSIP_COLUMNS = (
    "gossip_published",
    "gossip_received",
    "gossip_delivered",
    "gossip_relayed",
    "gossip_duplicates",
    "gossip_ttl_upgrades",
    "gossip_pulled",
    "gossip_served",
    "gossip_ihave_msgs",
    "gossip_iwant_msgs",
    "gossip_want_failed",
    "gossip_received_bytes",
    "gossip_relayed_bytes",
    "gossip_served_bytes",
    "gossip_forwarded_bytes",
    "gossip_sent_msgs",
    "gossip_invalid",
    "gossip_dropped",
    "gossip_invalid_from",
    "gossip_relayed_from",
)
"""A node's ``gossip`` record (`node.gossip.GossipService.record`): items it published,
received valid, delivered, relayed (sent on), duplicates suppressed, pulled (IWANT
answered), served, the IHAVE/IWANT messages, the payload bytes of new valid items received,
of others' items relayed (pushed on), served (IWANT answers) and forwarded (both), invalid
items by reason and by peer, and the bytes of relayed copies each peer sent this node; empty
for nodes without gossip."""
COUNTER_COLUMNS = (
    "node",
    "role",
    "sent_msgs",
    "sent_bytes",
    "recv_msgs",
    "recv_bytes",
    "dropped",
    *GOSSIP_COLUMNS,
)


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


def rounds_completed(records: list[dict[str, Any]]) -> int:
    """How many rounds every task completed, from the publisher's records: the number of
    distinct rounds in its ``round`` records, or, where its records name tasks
    (``task_chain``), the fewest distinct rounds any named task recorded (a task that
    recorded none: 0)."""
    tasks = {str(r["task_chain"]) for r in records if r.get("task_chain")}
    rounds: dict[str, set[int]] = {t: set() for t in tasks} if tasks else {"": set()}
    for r in records:
        if r.get("event") == "round":
            task = str(r.get("task_chain") or "")
            if task in rounds:
                rounds[task].add(int(r["round"]))
    return min(len(done) for done in rounds.values())


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else value


def _add(total: dict[str, Any], record: dict[str, Any]) -> None:
    """Add a gossip record's counters into `total` (numbers summed, maps summed per key)."""
    for column in GOSSIP_COLUMNS:
        value = record.get(column)
        if isinstance(value, dict):
            into = total.setdefault(column, {})
            for key, n in value.items():
                if isinstance(n, int | float) and not isinstance(n, bool):
                    into[key] = into.get(key, 0) + n
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[column] = total.get(column, 0) + value


def _counter_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``counters`` record, with the ``gossip`` records written before it (since
    the previous one: the daemon writes them when its roles finish) summed into it; gossip
    records left over (the node died before its counters) get a row of their own."""
    rows: list[dict[str, Any]] = []
    gossip: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for rec in records:
        if rec.get("event") == "gossip":
            _add(gossip, rec)
            last = rec
        elif rec.get("event") == "counters":
            rows.append({c: _cell(rec.get(c, gossip.get(c))) for c in COUNTER_COLUMNS})
            gossip = {}
    if gossip:
        rows.append({c: _cell(gossip.get(c, last.get(c))) for c in COUNTER_COLUMNS})
    return rows


def collect(run_dir: Path) -> tuple[int, int]:
    """Write metrics.csv, counters.csv and blocks.csv (every node's timing row of every
    block it stored, `node.ledger.timing.write_blocks_csv`); returns (metric rows, nodes
    seen)."""
    rows: list[dict[str, Any]] = []
    counters: list[dict[str, Any]] = []
    node_dirs = sorted(p for p in (run_dir / "nodes").iterdir() if p.is_dir())
    for node_dir in node_dirs:
        records = read_records(node_dir)
        for rec in records:
            if rec.get("event") == "round":
                rows.append({c: _cell(rec.get(c)) for c in METRIC_COLUMNS})
        counters += _counter_rows(records)
    rows.sort(key=lambda r: (int(r["round"]), str(r["task_chain"]), str(r["role"]), str(r["node"])))
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (run_dir / "counters.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COUNTER_COLUMNS)
        writer.writeheader()
        writer.writerows(counters)
    write_blocks_csv(run_dir)
    return len(rows), len(node_dirs)
