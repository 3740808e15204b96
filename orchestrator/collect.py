"""Merge the nodes' JSONL metrics into the run's `metrics.csv` and `counters.csv`, and the
nodes' ledgers' block timings into `blocks.csv` (`node.ledger.timing`).

Several tasks in one run (two-layer isolation sharding: ``scheme: {name: two-layer, tasks:
N}``): the publisher writes one round record per task and round, each naming its task's
chain (``task_chain``, a metrics.csv column, empty for a run of one task); a round counts as
completed once every task recorded it (`rounds_completed`).

Round timing (issue 17), the last columns of metrics.csv (`ROUND_TIMING_COLUMNS`): a device's
``update_sent_ms`` and ``global_received_ms`` come from its own round record (wall-clock
ms); the ``block_*`` columns join blocks.csv with the metrics rows by node and round
(`add_block_columns`). Which block (our choice): the round's block is the first (lowest)
block of the node's task chain whose round (`node.ledger.timing.block_round`) is the row's
round: in vanilla, BEES and BlockFL the one block holding the round's updates (BlockFL's
last round's global record comes in a later block, of the same round); where a round's
records span several blocks (a two-layer LMUC: its devices' updates, then its global
record in a block of its own) the first of them. Its height, when it was proposed and
certified (the same on every node), when this node stored it, and ``block_latency_ms`` =
stored at this node - proposed. The node's task chain (our choice): the record's
``task_chain`` where the node keeps it; else, among the node's chains that a publisher also
keeps (all of its chains if none is), those with a block of that round, the first by chain
id. Where the node has no row for that block (it never stored it) the columns stay empty."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from node.ledger.timing import BlockRow, block_times, write_blocks_csv

log = logging.getLogger(__name__)

ROUND_TIMING_COLUMNS = (
    "update_sent_ms",
    "global_received_ms",
    "block_chain",
    "block_height",
    "block_proposed_ms",
    "block_certified_ms",
    "block_stored_ms",
    "block_latency_ms",
)
"""metrics.csv's last columns: a device's update sent / global model received times (its
round record) and the round's block on the node's task chain (`add_block_columns`)."""
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
    # round timing (issue 17; see the module docstring): appended, no column moved
    *ROUND_TIMING_COLUMNS,
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
    "gossip_wants_spared",
)
"""A node's ``gossip`` record (`node.gossip.GossipService.record`): items it published,
received valid, delivered, relayed (sent on), duplicates suppressed, pulled (IWANT
answered), served, the IHAVE/IWANT messages, the payload bytes of new valid items received,
of others' items relayed (pushed on), served (IWANT answers) and forwarded (both), invalid
items by reason and by peer, the bytes of relayed copies each peer sent this node, and the
pulls a held-back IWANT saved (`GossipConfig.want_delay_s`); empty for nodes without
gossip."""
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


class _RoundBlocks:
    """blocks.csv's rows indexed for the join: each node's chains and rows, the chains a
    publisher keeps, and each (chain, round)'s block (its lowest height)."""

    def __init__(self, blocks: list[BlockRow], publishers: set[str]) -> None:
        self.rows: dict[tuple[str, str, int], BlockRow] = {}
        self.chains_of: dict[str, set[str]] = {}
        self.block: dict[tuple[str, int], int] = {}
        for b in blocks:
            self.rows[(b.node, b.chain, b.height)] = b
            self.chains_of.setdefault(b.node, set()).add(b.chain)
            if b.round is not None:
                key = (b.chain, b.round)
                self.block[key] = min(self.block.get(key, b.height), b.height)
        self.task_chains = {c for p in publishers for c in self.chains_of.get(p, ())}

    def chain_for(self, node: str, round_no: int, named: str) -> str | None:
        """The node's task chain for `round_no` (see the module docstring), or None."""
        own = self.chains_of.get(node, set())
        if named and named in own:
            return named
        candidates = (own & self.task_chains) or own
        with_round = sorted(c for c in candidates if (c, round_no) in self.block)
        return with_round[0] if with_round else None

    def columns(self, node: str, round_no: int, named: str) -> dict[str, Any]:
        """The ``block_*`` cells of one metrics row (empty where unknown)."""
        chain = self.chain_for(node, round_no, named)
        if chain is None:
            return {}
        height = self.block[(chain, round_no)]
        row = self.rows.get((node, chain, height))
        if row is None:
            return {"block_chain": chain, "block_height": height}
        return {
            "block_chain": chain,
            "block_height": height,
            "block_proposed_ms": row.proposed_ms,
            "block_certified_ms": row.certified_ms,
            "block_stored_ms": row.stored_ms,
            "block_latency_ms": row.stored_ms - row.proposed_ms,
        }


def add_block_columns(rows: list[dict[str, Any]], blocks: list[BlockRow]) -> None:
    """Fill the ``block_*`` columns of metrics rows (dicts with ``node``, ``round``,
    ``role`` and ``task_chain``) in place from blocks.csv's rows (`block_times`)."""
    publishers = {str(r["node"]) for r in rows if r.get("role") == "publisher"}
    index = _RoundBlocks(blocks, publishers)
    for row in rows:
        try:
            round_no = int(row["round"])
        except (TypeError, ValueError):
            continue
        row.update(index.columns(str(row["node"]), round_no, str(row.get("task_chain") or "")))


def collect(run_dir: Path) -> tuple[int, int]:
    """Write metrics.csv (with the round timing columns: `add_block_columns`), counters.csv
    and blocks.csv (every node's timing row of every block it stored,
    `node.ledger.timing.write_blocks_csv`); returns (metric rows, nodes seen)."""
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
    blocks = block_times(run_dir)
    add_block_columns(rows, blocks)
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (run_dir / "counters.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COUNTER_COLUMNS)
        writer.writeheader()
        writer.writerows(counters)
    write_blocks_csv(run_dir, rows=blocks)
    return len(rows), len(node_dirs)
