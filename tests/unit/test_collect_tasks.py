"""collect with several tasks per run (task_chain) and its blocks.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from node.ledger.chain import Chain
from node.ledger.store import open_store
from node.ledger.timing import BLOCKS_CSV
from orchestrator.collect import collect, rounds_completed
from orchestrator.report import delay_table
from tests.unit.test_ledger_chain import Writer, _config


def _round(task: str | None, round_no: int) -> dict[str, object]:
    rec: dict[str, object] = {"event": "round", "node": "pub", "role": "publisher"}
    rec.update(round=round_no, accuracy=0.5)
    return rec | ({"task_chain": task} if task else {})


def test_rounds_completed_counts_the_rounds_every_task_recorded() -> None:
    started = [{"event": "started", "task_chain": t} for t in ("gmuc-t0", "gmuc-t1")]
    # task 0 finished 3 rounds, task 1 two: two rounds are complete (not 5 records)
    both = [*started, *(_round("gmuc-t0", r) for r in (1, 2, 3))]
    both += [_round("gmuc-t1", r) for r in (1, 2)]
    assert rounds_completed(both) == 2
    # a task that recorded no round yet holds the count at 0
    assert rounds_completed([*started, _round("gmuc-t0", 1)]) == 0
    # one task (no task_chain): its distinct rounds; a repeated record counts once
    assert rounds_completed([_round(None, 1), _round(None, 2), _round(None, 2)]) == 2
    assert rounds_completed([{"event": "ready"}]) == 0


def test_metrics_csv_keeps_each_records_task(tmp_path: Path) -> None:
    pub = tmp_path / "nodes" / "pub"
    pub.mkdir(parents=True)
    records = [_round("gmuc-t1", 1), _round("gmuc-t0", 1), _round(None, 2)]
    (pub / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    collect(tmp_path)

    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["round"], r["task_chain"]) for r in rows] == [
        ("1", "gmuc-t0"),
        ("1", "gmuc-t1"),
        ("2", ""),
    ]


def test_collect_writes_blocks_csv_with_every_nodes_blocks(tmp_path: Path) -> None:
    config = _config()
    writer_store = open_store(tmp_path / "nodes/pub/chains/task")
    replica_store = open_store(tmp_path / "nodes/dev0/chains/task")

    writer_chain, replica = Chain(writer_store, config), Chain(replica_store, config)
    writer = Writer(writer_chain)
    for _ in range(2):
        block = writer.next_block()
        writer_chain.append(block)
        replica.append_bytes(block.to_bytes())
    writer_store.close()
    replica_store.close()

    collect(tmp_path)

    with (tmp_path / BLOCKS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["node"], r["chain"], r["height"]) for r in rows) == [
        ("dev0", "task", "1"),
        ("dev0", "task", "2"),
        ("pub", "task", "1"),
        ("pub", "task", "2"),
    ]
    assert all(len(r["hash"]) == 64 and r["t_ms"] == "0.0" and r["delay_t"] == "" for r in rows)


def test_report_shows_the_delay_per_chain_in_units_of_t(tmp_path: Path) -> None:
    cols = "chain,height,node,proposed_ms,stored_ms,t_ms"
    lines = [
        cols,
        "lmuc-0,1,mec0,1000,1011,10",
        "lmuc-0,1,dev1,1000,1030,10",  # block 1: last stored at 1030 -> 3.0 t
        "lmuc-0,2,mec0,2000,2010,10",  # block 2: 1.0 t
        "main,1,pub,5000,5004,0",  # t not emulated: ms
    ]
    (tmp_path / BLOCKS_CSV).write_text("\n".join(lines) + "\n")

    table = delay_table(tmp_path).splitlines()

    assert table[0].startswith("block delay")
    lmuc = table[2].split()
    assert lmuc[:4] == ["lmuc-0", "2", "2", "10"]
    assert lmuc[4:8] == ["2.00", "2.00", "3.00", "t"]  # mean, median, max
    assert table[3].split()[:8] == ["main", "1", "1", "0", "4.00", "4.00", "4.00", "ms"]
    assert delay_table(tmp_path / "none") == ""
