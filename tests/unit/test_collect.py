"""metrics.csv from the nodes' JSONL records."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

from orchestrator.collect import COUNTER_COLUMNS, GOSSIP_COLUMNS, collect


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


def _write(run_dir: Path, node: str, *records: dict[str, object]) -> None:
    node_dir = run_dir / "nodes" / node
    node_dir.mkdir(parents=True)
    lines = [json.dumps({"node": node, "role": "device", **r}) for r in records]
    (node_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _gossip(**fields: object) -> dict[str, object]:
    return {"event": "gossip", **{f"gossip_{k}": v for k, v in fields.items()}}


COUNTERS = {"event": "counters", "sent_msgs": 10, "recv_msgs": 9, "dropped": {}}


def test_gossip_records_become_gossip_columns_of_counters_csv(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "dev-0",
        _gossip(relayed=7, duplicates=3, invalid={"bad_signature": 2}, invalid_from={"dev-9": 2}),
        COUNTERS,
    )
    _write(tmp_path, "mec-0", {**COUNTERS, "role": "mec"})  # no gossip on this node
    _write(  # two services on one node: summed
        tmp_path,
        "dev-1",
        _gossip(relayed=1, duplicates=2, dropped={"not_peer": 1}),
        _gossip(relayed=4, duplicates=0, dropped={"not_peer": 2, "malformed": 1}),
        COUNTERS,
    )
    _write(tmp_path, "dev-2", _gossip(relayed=5, published=1))  # died before its counters

    collect(tmp_path)

    with (tmp_path / "counters.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COUNTER_COLUMNS
        rows = {r["node"]: r for r in reader}
    assert set(GOSSIP_COLUMNS) <= set(COUNTER_COLUMNS)
    dev0 = rows["dev-0"]
    assert (dev0["sent_msgs"], dev0["gossip_relayed"], dev0["gossip_duplicates"]) == (
        "10",
        "7",
        "3",
    )
    assert dev0["gossip_invalid"] == "bad_signature=2"
    assert dev0["gossip_invalid_from"] == "dev-9=2"
    assert all(rows["mec-0"][c] == "" for c in GOSSIP_COLUMNS)
    assert rows["mec-0"]["role"] == "mec" and rows["mec-0"]["sent_msgs"] == "10"
    dev1 = rows["dev-1"]
    assert (dev1["gossip_relayed"], dev1["gossip_duplicates"]) == ("5", "2")
    assert dev1["gossip_dropped"] == "malformed=1;not_peer=3"
    dev2 = rows["dev-2"]
    assert (dev2["role"], dev2["sent_msgs"], dev2["gossip_relayed"]) == ("device", "", "5")
    assert len(rows) == 4


def test_gossip_columns_are_exactly_the_fields_of_a_gossip_record() -> None:
    from node.gossip.service import GossipService

    host = SimpleNamespace(node_id="dev-0", config=SimpleNamespace(max_message_bytes=1 << 20))
    service = GossipService(host, ("dev-1",))

    assert tuple(sorted(service.record())) == tuple(sorted(GOSSIP_COLUMNS))
