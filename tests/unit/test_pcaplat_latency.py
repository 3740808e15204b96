"""orchestrator.pcaplat.analysis/latency/blocks: a run directory the test writes (topology,
meta.json endpoints, messages.csv, blocks.csv, pcaps at a device, its MEC and the
publisher) -> latency.csv rows per hop joined with the configured links, block arrivals."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.pcaplat.analysis import analyse
from orchestrator.pcaplat.summary import table
from tests.unit.test_pcaplat_helpers import (
    IPS,
    T0,
    bcfl_frame,
    make_run_dir,
    segments,
    tcp_packets,
    write_pcap,
    zmtp_stream,
)

REQUIRED = (
    "msg_type",
    "sender",
    "seq",
    "src_node",
    "dst_node",
    "link_class",
    "configured_delay_ms",
    "configured_bandwidth_mbps",
    "bytes",
    "first_byte_src_ms",
    "last_byte_src_ms",
    "first_byte_dst_ms",
    "last_byte_dst_ms",
    "send_to_wire_ms",
    "wire_ms",
    "propagation_ms",
    "route_class",
    "route_delay_ms",
    "one_way_ms",
    "total_ms",
)
BLOCK_REQUIRED = (
    "chain",
    "height",
    "node",
    "proposed_ms",
    "arrived_ms",
    "committed_ms",
    "stored_ms",
)
UPDATE = bcfl_frame("dev0-0", "update", {"w": np.zeros(10_000, np.float32)}, seq=10)
HELLO = bcfl_frame("dev0-0", "hello", {}, seq=11)
OTHER = bcfl_frame("dev0-1", "update", {"w": np.zeros(100, np.float32)}, seq=3)
BLOCK = bcfl_frame("pub", "chain.block", {"block": b"b" * 3000, "height": 1}, seq=99)


def ms(t: float) -> float:
    return (T0 + t) * 1000


def flow(src: str, dst: str, message: bytes, t: float, sport: int) -> list[Any]:
    """A connection src -> dst carrying one message; its segments 1 ms apart from t."""
    stream = zmtp_stream(message)
    segs = segments(stream, 1448, t0=t, step=0.001)
    return tcp_packets(IPS[src], IPS[dst], stream, segs, sport=sport, syn_t=t - 0.01)


def build(run: Path, with_records: bool = True) -> None:
    """Captures at dev0-0, mec0 and pub; every copy downstream `lag` seconds later."""
    make_run_dir(run)
    caps: dict[str, list[Any]] = {"dev0-0": [], "mec0": [], "pub": []}
    # dev0-0 -> mec0: the update, seen at the device and 6 ms later at the MEC
    caps["dev0-0"] += flow("dev0-0", "mec0", UPDATE, 1.0, 40001)
    caps["mec0"] += flow("dev0-0", "mec0", UPDATE, 1.006, 40001)
    # dev0-0 -> pub, through mec0: three capture points, two hops
    caps["dev0-0"] += flow("dev0-0", "pub", HELLO, 2.0, 40002)
    caps["mec0"] += flow("dev0-0", "pub", HELLO, 2.0055, 40002)
    caps["pub"] += flow("dev0-0", "pub", HELLO, 2.0065, 40002)
    # dev0-1 -> mec0: only the receiver captured
    caps["mec0"] += flow("dev0-1", "mec0", OTHER, 3.0, 40003)
    # pub -> dev0-0: a block, arriving at the device's capture
    caps["dev0-0"] += flow("pub", "dev0-0", BLOCK, 4.0, 40004)
    for node, packets in caps.items():
        write_pcap(run / "pcap" / f"{node}.pcap", packets)
    if with_records:
        _records(run / "nodes" / "dev0-0", [("sent", ms(0.995), "update", "dev0-0", 10, "mec0")])
        _records(run / "nodes" / "mec0", [("recv", ms(1.030), "update", "dev0-0", 10, "dev0-0")])
    with (run / "blocks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["chain", "height", "hash", "node", "proposed_ms", "certified_ms"])
        w.writerow(["main", 1, "ab", "dev0-0", ms(3.99), ms(3.995)])
        w.writerow(["main", 1, "ab", "dev0-1", ms(3.99), ms(3.995)])
    _add_block_columns(run / "blocks.csv")


def _add_block_columns(path: Path) -> None:
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        r["received_ms"] = str(ms(4.010))
        r["stored_ms"] = str(ms(4.012))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _records(node_dir: Path, rows: list[tuple[Any, ...]]) -> None:
    node_dir.mkdir(parents=True, exist_ok=True)
    with (node_dir / "messages.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dir", "wall_ms", "type", "sender", "seq", "peer", "bytes"])
        w.writerows(rows)


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    build(tmp_path / "run")
    return tmp_path / "run"


def test_latency_csv_has_the_columns_and_one_row_per_message_per_hop(run: Path) -> None:
    analyse(run, run / "out")
    rows = read(run / "out" / "latency.csv")
    assert set(REQUIRED) <= set(rows[0])
    hops = sorted((r["msg_type"], r["src_node"], r["dst_node"]) for r in rows)
    assert hops == [
        ("chain.block", "pub", "dev0-0"),  # only the receiver captured
        ("hello", "dev0-0", "mec0"),
        ("hello", "mec0", "pub"),
        ("update", "dev0-0", "mec0"),
        ("update", "dev0-1", "mec0"),
    ]


def test_a_hop_is_joined_with_its_configured_links_and_the_node_records(run: Path) -> None:
    result = analyse(run, run / "out")
    topo = make_run_dir(run)  # the same topology again
    links = {(lk["src"], lk["dst"]): lk for lk in topo["links"]}
    (row,) = [
        r
        for r in read(run / "out" / "latency.csv")
        if r["msg_type"] == "update" and r["sender"] == "dev0-0"
    ]
    assert row["link_class"] == "cellular+fronthaul" and row["path"] == "dev0-0>bs0>mec0"
    delay = links[("dev0-0", "bs0")]["delay_ms"] + links[("bs0", "mec0")]["delay_ms"]
    assert float(row["configured_delay_ms"]) == pytest.approx(delay, abs=1e-3)
    bandwidth = min(links[("dev0-0", "bs0")]["bandwidth_mbit"], 1000.0)
    assert float(row["configured_bandwidth_mbps"]) == pytest.approx(bandwidth, abs=1e-3)
    n = len(segments(zmtp_stream(UPDATE), 1448))
    assert int(row["bytes"]) == len(UPDATE)
    assert float(row["first_byte_src_ms"]) == pytest.approx(ms(1.0), abs=1e-3)
    assert float(row["last_byte_dst_ms"]) == pytest.approx(ms(1.006 + (n - 1) * 0.001), abs=1e-3)
    assert float(row["propagation_ms"]) == pytest.approx(6.0, abs=1e-3)
    assert float(row["wire_ms"]) == pytest.approx((n - 1) * 1.0, abs=1e-3)
    assert float(row["send_to_wire_ms"]) == pytest.approx(5.0, abs=1e-3)
    assert float(row["one_way_ms"]) == pytest.approx(5.0 + 6.0, abs=1e-3)
    assert row["route_class"] == "cellular+fronthaul"
    assert float(row["route_delay_ms"]) == pytest.approx(delay, abs=1e-3)
    assert float(row["total_ms"]) == pytest.approx(5.0 + 6.0 + (n - 1), abs=1e-3)
    assert float(row["wire_to_recv_ms"]) == pytest.approx(30.0 - 6.0 - (n - 1), abs=1e-3)
    assert row["delay_shaped_by"] == "kernel(netem)"
    classes = {d.link_class: d for d in result.delays}
    # only the message measured end to end: send record -> the MEC's first byte
    assert classes["cellular+fronthaul"].median_ms == pytest.approx(11.0, abs=1e-3)
    assert "cellular+fronthaul" in table(result.delays)


def test_a_relayed_message_gives_a_row_per_hop_with_each_hops_links(run: Path) -> None:
    analyse(run, run / "out")
    rows = {r["src_node"]: r for r in read(run / "out" / "latency.csv") if r["msg_type"] == "hello"}
    assert rows["dev0-0"]["link_class"] == "cellular+fronthaul"
    assert float(rows["dev0-0"]["propagation_ms"]) == pytest.approx(5.5, abs=1e-3)
    assert rows["mec0"]["link_class"] == "lan" and rows["mec0"]["path"] == "mec0>pub"
    assert float(rows["mec0"]["propagation_ms"]) == pytest.approx(1.0, abs=1e-3)
    assert rows["mec0"]["send_to_wire_ms"] == ""  # only the sender's row has a send


def test_a_message_seen_only_at_its_receiver_has_the_source_side_empty(run: Path) -> None:
    analyse(run, run / "out")
    (row,) = [r for r in read(run / "out" / "latency.csv") if r["sender"] == "dev0-1"]
    assert row["first_byte_src_ms"] == "" and row["propagation_ms"] == ""
    assert float(row["first_byte_dst_ms"]) == pytest.approx(ms(3.0), abs=1e-3)
    assert row["dst_capture"] == "mec0.pcap"


def test_without_node_records_their_columns_are_empty(tmp_path: Path) -> None:
    build(tmp_path / "run", with_records=False)
    analyse(tmp_path / "run")
    rows = read(tmp_path / "run" / "latency.csv")
    assert all(r["send_to_wire_ms"] == "" and r["node_sent_ms"] == "" for r in rows)
    (row,) = [r for r in rows if r["msg_type"] == "update" and r["sender"] == "dev0-0"]
    assert float(row["total_ms"]) == pytest.approx(float(row["last_byte_dst_ms"]) - ms(1.0))


def test_latency_blocks_joins_block_timings_with_the_arrival_on_the_wire(run: Path) -> None:
    result = analyse(run, run / "out")
    rows = {r["node"]: r for r in read(run / "out" / "latency_blocks.csv")}
    assert set(BLOCK_REQUIRED) <= set(rows["dev0-0"])
    n = len(segments(zmtp_stream(BLOCK), 1448))
    dev = rows["dev0-0"]
    assert float(dev["arrived_ms"]) == pytest.approx(ms(4.0 + (n - 1) * 0.001), abs=1e-3)
    assert dev["arrived_from"] == "pub" and dev["arrived_type"] == "chain.block"
    assert float(dev["committed_ms"]) == pytest.approx(ms(3.995), abs=1e-3)
    assert float(dev["stored_ms"]) == pytest.approx(ms(4.012), abs=1e-3)
    assert rows["dev0-1"]["arrived_ms"] == ""  # no capture at dev0-1
    assert {p.name for p in result.outputs} == {
        "latency.csv",
        "latency_blocks.csv",
        "latency_cdf.png",
        "block_propagation.png",
    }
    assert all(p.stat().st_size > 0 for p in result.outputs)
