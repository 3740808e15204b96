"""orchestrator.tables: a run's CSVs as typed DataFrames, the joins and summaries, bad input.

`make_run` builds a small run directory (the nodes' metrics.jsonl merged by `collect`, then
events.csv, meta.json, topology.json and, where asked, blocks.csv and the latency files);
test_html_report.py and test_compare.py use it too.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator.collect import collect
from orchestrator.runner import EVENT_COLUMNS
from orchestrator.summaries import (
    chain_summary,
    counters_summary,
    drops_by_reason,
    event_marks,
    latency_blocks_summary,
    latency_by_class,
    one_way_by_route,
    rounds_with_events,
    run_summary,
)
from orchestrator.tables import TableError, load_run, require_pyarrow, write_parquet

ACCURACY = (0.61, 0.72, 0.80)
EVENTS = [
    {"round": 2, "action": "malicious", "nodes": "dev0-0", "behaviour": "sign_flip"},
    {"round": 3, "action": "crash", "nodes": "dev0-1"},
]
BLOCK_ROWS = [
    "chain,height,node,proposed_ms,stored_ms,t_ms",
    "main,1,pub,1000,1010,0",
    "main,1,dev0-0,1000,1030,0",  # block 1: 30 ms to its last keeper
    "main,2,pub,2000,2010,0",  # block 2: 10 ms
    "lmuc-0,1,mec0,500,540,10",  # 40 ms
]
LATENCY_ROWS = [
    "msg_type,src_node,dst_node,link_class,configured_delay_ms,propagation_ms,route_class,"
    "route_delay_ms,one_way_ms,wire_ms,total_ms",
    "update,dev0-0,bs0,cellular,5,0.5,cellular+fronthaul,5.1,5.5,1.0,7.0",
    "update,dev0-1,bs0,cellular,5,0.5,cellular+fronthaul,5.1,6.5,1.0,8.0",
    "global,mec0,bs0,fronthaul,0.1,0.3,fronthaul,0.1,,0.2,0.6",
]
LATENCY_BLOCK_ROWS = [
    "chain,height,node,proposed_ms,arrived_ms,committed_ms,stored_ms",
    "main,1,dev0-0,1000,1004,1006,1008",
    "main,1,dev0-1,1000,1010,1011,1012",
]


def _jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def make_run(
    run_dir: Path,
    *,
    scheme: str = "vanilla",
    seed: int = 7,
    accuracy: Sequence[float] = ACCURACY,
    tasks: Sequence[str] = ("",),
    events: Sequence[dict[str, Any]] = EVENTS,
    devices: Sequence[str] = ("dev0-0", "dev0-1"),
    blocks: bool = True,
    latency: bool = False,
) -> Path:
    """A small run directory with the real files' columns (see the module docstring)."""
    pub: list[dict[str, Any]] = [{"event": "started"}]
    for task in tasks:
        for r, acc in enumerate(accuracy, start=1):
            rec = {"event": "round", "run": f"{scheme}-1", "scheme": scheme, "round": r}
            rec |= {"node": "pub", "role": "publisher", "accuracy": acc, "loss": 1 - acc}
            rec |= {"round_time_s": 1.0 + r, "contributors": len(devices), "missing": []}
            pub.append(rec | ({"task_chain": task} if task else {}))
    pub.append({"event": "counters", "node": "pub", "role": "publisher", "sent_msgs": 4})
    _jsonl(run_dir / "nodes" / "pub" / "metrics.jsonl", pub)
    for i, dev in enumerate(devices):
        recs: list[dict[str, Any]] = [
            {"event": "round", "scheme": scheme, "round": r, "node": dev, "role": "device"}
            | {"accuracy": acc - 0.05, "round_time_s": ""}
            for r, acc in enumerate(accuracy, start=1)
        ]
        dropped = {"bad_signature": 2, "link_loss": 1} if i == 0 else {}
        recs.append(
            {"event": "counters", "node": dev, "role": "device", "sent_msgs": 3}
            | {"sent_bytes": 300, "recv_msgs": 2, "recv_bytes": 200, "dropped": dropped}
        )
        _jsonl(run_dir / "nodes" / f"d{i}" / "metrics.jsonl", recs)
    collect(run_dir)
    with (run_dir / "events.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVENT_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(events)
    topology = {
        "nodes": [
            {"id": "bs0", "kind": "bs", "parent": None},
            {"id": "pub", "kind": "publisher", "parent": "bs0"},
            {"id": "mec0", "kind": "mec", "parent": "bs0"},
            *({"id": d, "kind": "device", "parent": "mec0"} for d in devices),
        ],
        "links": [
            {"src": "pub", "dst": "bs0", "kind": "lan", "delay_ms": 0.1},
            {"src": "mec0", "dst": "bs0", "kind": "fronthaul", "delay_ms": 0.1},
            *({"src": d, "dst": "bs0", "kind": "cellular", "delay_ms": 5.0} for d in devices),
        ],
    }
    (run_dir / "topology.json").write_text(json.dumps(topology))
    meta = {
        "run_id": f"{scheme}-run",
        "scenario": {"name": scheme, "seed": seed, "scheme": {"name": scheme}},
        "seed": seed,
        "scheme": scheme,
        "backend": "local",
        "shaping": "userspace",
        "delay": "userspace",
        "note": "applied per directed link at the sender",
        "by_link_class": {"cellular": {"delay": "userspace", "bandwidth": "kernel(htb)"}},
    }
    (run_dir / "meta.json").write_text(json.dumps(meta))
    if blocks:
        (run_dir / "blocks.csv").write_text("\n".join(BLOCK_ROWS) + "\n")
    if latency:
        (run_dir / "latency.csv").write_text("\n".join(LATENCY_ROWS) + "\n")
        (run_dir / "latency_blocks.csv").write_text("\n".join(LATENCY_BLOCK_ROWS) + "\n")
    return run_dir


def test_load_run_types_the_columns_and_tolerates_missing_files(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    assert str(t.metrics["round"].dtype) == "Int64"
    assert t.metrics["accuracy"].dtype == "float64"
    assert (t.metrics["task_chain"] == "").all(), "an empty string cell stays a string"
    assert t.metrics["loss"].isna().sum() == 6, "devices record no loss: NaN, not ''"
    assert str(t.counters["sent_bytes"].dtype) == "Int64"
    assert str(t.blocks["height"].dtype) == "Int64" and "delay_t" in t.blocks.columns
    assert t.latency.empty and t.latency_blocks.empty  # optional, absent
    assert t.meta["seed"] == 7 and len(t.topology["nodes"]) == 5
    assert set(t.frames()) == {"metrics", "counters", "events", "blocks"}


def test_latency_files_with_missing_and_extra_columns_load(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "latency.csv").write_text("link_class,total_ms,hops_seen\ncellular,7,a\nlan,1.5,b\n")

    t = load_run(run)

    assert t.latency["propagation_ms"].isna().all(), "a missing known column is added empty"
    assert t.latency["hops_seen"].tolist() == ["a", "b"], "an unknown column is kept"
    table = latency_by_class(t.latency)
    assert table["link_class"].tolist() == ["cellular", "lan"]
    assert table["total_median_ms"].tolist() == [7.0, 1.5]


def test_latency_summaries(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path, latency=True))

    per_class = latency_by_class(t.latency).set_index("link_class")
    assert per_class.loc["cellular", "messages"] == 2
    assert per_class.loc["cellular", "propagation_median_ms"] == pytest.approx(0.5)
    routes = one_way_by_route(t.latency).set_index("route_class")
    assert routes.index.tolist() == ["cellular+fronthaul"], "only messages measured end to end"
    assert routes.loc["cellular+fronthaul", "messages"] == 2
    assert routes.loc["cellular+fronthaul", "one_way_median_ms"] == pytest.approx(6.0)
    assert routes.loc["cellular+fronthaul", "error_ms"] == pytest.approx(0.9)  # 6.0 vs 5.1
    assert one_way_by_route(t.latency.drop(columns=["route_class"])).empty  # an older file
    assert per_class.loc["fronthaul", "total_p95_ms"] == pytest.approx(0.6)
    blocks = latency_blocks_summary(t.latency_blocks).iloc[0]
    assert (blocks["blocks"], blocks["nodes"]) == (1, 2)
    assert blocks["arrived_median_ms"] == pytest.approx(7.0)  # 4 and 10 ms
    assert blocks["stored_p95_ms"] == pytest.approx(8 + 0.95 * 4)


def test_chain_summary_per_chain(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    s = chain_summary(t.blocks).set_index("chain")

    assert s.loc["main", "blocks"] == 2 and s.loc["main", "height"] == 2
    assert s.loc["main", "nodes"] == 2
    assert s.loc["main", "delay_median_ms"] == pytest.approx(20.0)  # 30 and 10
    assert s.loc["main", "delay_p95_ms"] == pytest.approx(29.0)
    assert s.loc["lmuc-0", "delay_max_ms"] == 40.0 and s.loc["lmuc-0", "t_ms"] == 10.0
    assert chain_summary(t.blocks.iloc[0:0]).empty


def test_rounds_join_their_events(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    rounds = rounds_with_events(t.metrics, t.events)

    assert rounds["round"].tolist() == [1, 2, 3]
    assert rounds["events"].tolist() == ["", "malicious dev0-0 sign_flip", "crash dev0-1"]
    assert rounds["accuracy"].tolist() == list(ACCURACY)
    assert event_marks(t.events) == [(1.5, "malicious dev0-0 sign_flip"), (2.5, "crash dev0-1")]


def test_counters_and_drops_by_reason(tmp_path: Path) -> None:
    t = load_run(make_run(tmp_path))

    drops = drops_by_reason(t.counters)
    summary = counters_summary(t.counters).set_index("node")

    assert drops.values.tolist() == [
        ["dev0-0", "device", "bad_signature", 2],
        ["dev0-0", "device", "link_loss", 1],
    ]
    assert summary.loc["dev0-0", "dropped"] == 3 and summary.loc["dev0-1", "dropped"] == 0
    assert summary.loc["dev0-1", "sent_bytes"] == 300


def test_run_summary_of_one_and_of_several_tasks(tmp_path: Path) -> None:
    one = run_summary(load_run(make_run(tmp_path / "a")), "A")
    two = run_summary(
        load_run(make_run(tmp_path / "b", scheme="two-layer", tasks=("gmuc-t0", "gmuc-t1"))), "B"
    )

    assert one["scheme"] == "vanilla" and one["seed"] == 7 and one["backend"] == "local"
    assert one["final_accuracy"] == 0.80 and one["rounds"] == 3 and one["tasks"] == 1
    assert one["mean_round_time_s"] == pytest.approx(3.0)  # 2, 3, 4 s
    assert one["blocks"] == 3 and one["drops"] == 3
    assert two["tasks"] == 2 and two["final_accuracy"] == pytest.approx(0.80)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "metrics.csv: missing; "),
        ("", "metrics.csv: empty"),
        ("run,scheme,round,node,role,accuracy\nr,v,1,pub,publisher,0.5\nr,v,2,pu", "truncated"),
        ('round,role,accuracy\n1,publisher,"0.5\n', "malformed CSV"),
        ("round,role,accuracy\n1,publisher,0.5,9\n", "malformed CSV"),
        ("round,role\n1,publisher\n", "no 'accuracy' column"),
        ("round,role,accuracy\n1,publisher,0.5\nx,publisher,0.6\n", "line 3: round is 'x'"),
        (b"round,role,accuracy\n\xff\xfe,p,1\n", "not a UTF-8 text file"),
    ],
)
def test_bad_metrics_csv_is_one_line_naming_the_file(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    run = make_run(tmp_path)
    path = run / "metrics.csv"
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)

    with pytest.raises(TableError) as info:
        load_run(run)

    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_a_truncated_optional_table_is_refused_too(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    text = (run / "events.csv").read_text()
    (run / "events.csv").write_text(text[: text.rindex(",")])

    with pytest.raises(TableError, match=r"events\.csv: truncated"):
        load_run(run)


def test_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="not a run directory"):
        load_run(tmp_path)
    with pytest.raises(TableError, match="not a directory"):
        load_run(tmp_path / "nowhere")
    run = make_run(tmp_path / "r")
    (run / "meta.json").write_text("{torn")
    with pytest.raises(TableError, match=r"meta\.json: not a readable JSON file"):
        load_run(run)


def test_parquet_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    t = load_run(make_run(tmp_path))

    paths = write_parquet(t.frames(), tmp_path, prefix="x_")

    assert sorted(p.name for p in paths) == [
        "x_blocks.parquet",
        "x_counters.parquet",
        "x_events.parquet",
        "x_metrics.parquet",
    ]
    back = pd.read_parquet(tmp_path / "x_metrics.parquet")
    assert back["accuracy"].dropna().tolist() == t.metrics["accuracy"].dropna().tolist()


def test_parquet_without_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError

    with pytest.raises(TableError) as info:
        require_pyarrow()

    assert str(info.value) == "--parquet needs pyarrow: pip install 'bcfl-testbed[parquet]'"
