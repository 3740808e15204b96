"""Round timing (issue 17): blocks.csv's ``round`` and ``certified_ms`` (node.ledger.timing)
and metrics.csv's round timing columns joined from it (orchestrator.collect)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from node.core.block import ZERO_HASH
from node.core.tx import Transaction
from node.ledger.chain import Chain
from node.ledger.store import open_store
from node.ledger.timing import BLOCKS_CSV, BlockRow, block_delays, block_round, block_times
from orchestrator.collect import (
    METRIC_COLUMNS,
    ROUND_TIMING_COLUMNS,
    add_block_columns,
    collect,
)
from tests.unit.test_ledger_block import key, make_block
from tests.unit.test_ledger_chain import Writer, _config

# metrics.csv's columns before issue 17, in their order: none of them moved
COLUMNS_BEFORE = (
    "run", "scheme", "round", "node", "role", "task_chain", "accuracy", "loss", "eval_set",
    "round_time_s", "train_time_s", "samples", "contributors", "missing", "rejected",
    "rejected_reasons", "behaviour", "emd", "elapsed_s", "wall_time", "decision",
    "predicted_transfer_s", "transfer_s", "transfer_bytes", "energy_compute_j",
    "energy_transfer_j", "energy_total_j", "battery_j", "offloaded", "offload_bytes",
    "proposer", "withheld", "qualified", "eval_data", "contract_accuracy", "accepted",
)  # fmt: skip


def _tx(type_: str, payload: dict[str, Any], nonce: int) -> Transaction:
    return Transaction.create(key(3), type_, nonce, payload)


def _block_of(*txs: tuple[str, dict[str, Any]]) -> Any:
    signed = tuple(_tx(t, p, n) for n, (t, p) in enumerate(txs, 1))
    return make_block(1, ZERO_HASH, signed)


def test_a_blocks_round_is_its_updates_round_else_its_other_transactions() -> None:
    update, glob = "task.record_update", "task.record_global"
    # vanilla: the round's updates and global record
    assert block_round(_block_of((update, {"round": 3}), (glob, {"round": 3}))) == 3
    # blockfl: round 4's updates with the publisher's global record of round 3
    assert block_round(_block_of((glob, {"round": 3}), (update, {"round": 4}))) == 4
    # bees: round 3's election and ES updates, the reports for round 4's election
    bees = (("bees.elect", {"round": 3}), ("bees.report", {"round": 4}))
    assert block_round(_block_of(*bees, ("bees.update", {"round": 3}))) == 3
    # no update: the other transactions' round, the smallest
    assert block_round(_block_of(*bees)) == 3
    assert block_round(_block_of((glob, {"round": 0}))) == 0
    # no round, a bool, a string, a negative number: unknown
    assert block_round(_block_of(("task.publish", {"task_id": "t"}))) is None
    bad = ({"round": True}, {"round": "2"}, {"round": -1})
    assert block_round(_block_of(*((update, p) for p in bad))) is None
    assert block_round(_block_of()) is None


def _keep(run: Path, chain_id: str, nodes: tuple[str, ...], rounds: int) -> None:
    """Chain `chain_id` kept by `nodes` (the first writes it): a publish block, then one
    block per round (`Writer`: the round's updates and global record)."""
    config = _config()
    stores = [open_store(run / "nodes" / n / "chains" / chain_id) for n in nodes]
    chains = [Chain(s, config) for s in stores]
    writer = Writer(chains[0])
    for _ in range(rounds + 1):
        block = writer.next_block()
        chains[0].append(block)
        for replica in chains[1:]:
            replica.append_bytes(block.to_bytes())
    for s in stores:
        s.close()


def test_blocks_csv_has_each_blocks_round_and_certified_time(tmp_path: Path) -> None:
    _keep(tmp_path, "task", ("pub", "dev0"), rounds=2)

    rows = {(r.node, r.height): r for r in block_times(tmp_path)}
    collect(tmp_path)

    # height 1 publishes the task (no round), then one block per round
    assert {h: rows[("dev0", h)].round for h in (1, 2, 3)} == {1: None, 2: 1, 3: 2}
    for h in (1, 2, 3):
        writer_row, replica_row = rows[("pub", h)], rows[("dev0", h)]
        assert writer_row.round == replica_row.round
        # certified: when the first keeper (the writer) began storing it, on every row
        assert writer_row.certified_ms == replica_row.certified_ms == writer_row.validated_ms
        assert writer_row.proposed_ms <= writer_row.certified_ms <= replica_row.stored_ms
    with (tmp_path / BLOCKS_CSV).open(newline="") as f:
        read = list(csv.DictReader(f))
    assert [(d["node"], d["height"], d["round"]) for d in read] == [
        ("dev0", "1", ""),
        ("dev0", "2", "1"),
        ("dev0", "3", "2"),
        ("pub", "1", ""),
        ("pub", "2", "1"),
        ("pub", "3", "2"),
    ]
    assert all(
        float(d["certified_ms"]) == rows[("pub", int(d["height"]))].validated_ms for d in read
    )
    delays = {d.height: d for d in block_delays(tmp_path)}
    assert [delays[h].round for h in (1, 2, 3)] == [None, 1, 2]
    assert delays[2].certified_ms == rows[("pub", 2)].validated_ms


def _records(run: Path, node: str, role: str, *records: dict[str, Any]) -> None:
    path = run / "nodes" / node / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"event": "round", "node": node, "role": role, "scheme": "vanilla"} | r for r in records
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def _metrics(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == METRIC_COLUMNS
        return {(r["node"], r["round"]): r for r in reader}


def test_metrics_csv_keeps_its_columns_and_appends_the_round_timing_ones() -> None:
    assert METRIC_COLUMNS == COLUMNS_BEFORE + ROUND_TIMING_COLUMNS
    assert ROUND_TIMING_COLUMNS == (
        "update_sent_ms",
        "global_received_ms",
        "block_chain",
        "block_height",
        "block_proposed_ms",
        "block_certified_ms",
        "block_stored_ms",
        "block_latency_ms",
    )


def test_collect_joins_each_rounds_block_with_the_metrics_rows(tmp_path: Path) -> None:
    _keep(tmp_path, "task", ("pub", "dev0"), rounds=2)
    _records(tmp_path, "pub", "publisher", {"round": 1}, {"round": 2})
    _records(
        tmp_path,
        "dev0",
        "device",
        {"round": 1, "global_received_ms": 100.5, "update_sent_ms": 180.25},
        {"round": 2, "global_received_ms": 300.0},  # withheld: no update sent
        {"round": 3, "global_received_ms": 400.0, "update_sent_ms": 450.0},  # no block yet
    )
    _records(tmp_path, "dev1", "device", {"round": 1, "update_sent_ms": 181.0})  # no ledger

    collect(tmp_path)

    rows = _metrics(tmp_path)
    blocks = {(b.node, b.height): b for b in block_times(tmp_path)}
    for node in ("pub", "dev0"):
        for round_no, height in ((1, 2), (2, 3)):
            row, block = rows[(node, str(round_no))], blocks[(node, height)]
            assert (row["block_chain"], row["block_height"]) == ("task", str(height))
            assert float(row["block_proposed_ms"]) == block.proposed_ms
            assert float(row["block_certified_ms"]) == block.certified_ms
            assert float(row["block_stored_ms"]) == block.stored_ms
            latency = float(row["block_latency_ms"])
            assert latency == pytest.approx(block.stored_ms - block.proposed_ms)
    # the device's own times, as it recorded them; empty where it sent nothing
    assert (rows[("dev0", "1")]["global_received_ms"], rows[("dev0", "1")]["update_sent_ms"]) == (
        "100.5",
        "180.25",
    )
    assert rows[("dev0", "2")]["update_sent_ms"] == ""
    # a round without a block on the chain, and a node that keeps no chain: no block columns
    for key_ in (("dev0", "3"), ("dev1", "1")):
        assert {c: rows[key_][c] for c in ROUND_TIMING_COLUMNS[2:]} == dict.fromkeys(
            ROUND_TIMING_COLUMNS[2:], ""
        )
    assert rows[("dev1", "1")]["update_sent_ms"] == "181.0"


def test_the_task_chain_is_the_named_one_else_one_a_publisher_keeps(tmp_path: Path) -> None:
    """mec0 keeps "gmuc" (with the publisher) and its own "lmuc" (with dev0): its rows join
    the gmuc's blocks unless the record names its task chain; dev0's, its only chain."""
    _keep(tmp_path, "gmuc", ("pub", "mec0"), rounds=1)
    _keep(tmp_path, "lmuc", ("mec0", "dev0"), rounds=2)
    _records(tmp_path, "pub", "publisher", {"round": 1, "task_chain": "gmuc"})
    _records(
        tmp_path,
        "mec0",
        "mec",
        {"round": 1},
        {"round": 1, "task_chain": "lmuc"},
        {"round": 2},
        {"round": 2, "task_chain": "x"},
    )
    _records(tmp_path, "dev0", "device", {"round": 2})

    collect(tmp_path)

    with (tmp_path / "metrics.csv").open(newline="") as f:
        got = [
            (r["node"], r["round"], r["task_chain"], r["block_chain"], r["block_height"])
            for r in csv.DictReader(f)
        ]
    assert sorted(got) == [
        ("dev0", "2", "", "lmuc", "3"),  # its only chain
        ("mec0", "1", "", "gmuc", "2"),  # the chain a publisher keeps
        ("mec0", "1", "lmuc", "lmuc", "2"),  # the one the record names
        # gmuc has no round-2 block yet: none (not the other chain's: our choice)
        ("mec0", "2", "", "", ""),
        ("mec0", "2", "x", "", ""),  # a name the node does not keep: as if unnamed
        ("pub", "1", "gmuc", "gmuc", "2"),
    ]


def _row(node: str, height: int, round_no: int | None, stored: float) -> BlockRow:
    return BlockRow(
        chain="pow",
        height=height,
        hash=f"{height:02x}" * 32,
        node=node,
        proposed_ms=1000.0 * height,
        certified_ms=1000.0 * height + 5,
        received_ms=stored - 1,
        validated_ms=stored - 1,
        stored_ms=stored,
        storage_ms=0.5,
        t_ms=0.0,
        delay_ms=stored - 1000.0 * height,
        delay_t=None,
        proposed_from="record",
        round=round_no,
    )


def test_a_round_spanning_blocks_joins_its_first_block() -> None:
    """BlockFL: heights 2 and 3 hold rounds 1 and 2's updates, height 4 round 2's global
    record (round 2 too); round 2's block is height 3, the first."""
    blocks = [
        _row(n, h, r, 1000.0 * h + s)
        for n, s in (("pub", 10.0), ("dev0", 30.0))
        for h, r in ((1, None), (2, 1), (3, 2), (4, 2))
    ]
    rows: list[dict[str, Any]] = [
        {"node": n, "role": role, "round": r, "task_chain": ""}
        for n, role in (("pub", "publisher"), ("dev0", "device"))
        for r in (1, 2, 3)
    ]

    add_block_columns(rows, blocks)

    got = {
        (r["node"], r["round"]): (r.get("block_height"), r.get("block_latency_ms")) for r in rows
    }
    assert got == {
        ("pub", 1): (2, 10.0),
        ("pub", 2): (3, 10.0),
        ("pub", 3): (None, None),  # no block of round 3
        ("dev0", 1): (2, 30.0),
        ("dev0", 2): (3, 30.0),
        ("dev0", 3): (None, None),
    }
    assert rows[0]["block_certified_ms"] == 2005.0 and rows[0]["block_stored_ms"] == 2010.0
