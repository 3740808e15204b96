"""`bcfl pcap latency` on a real captured mininet run (as root, with Debian's mininet): the
device -> MEC updates are found in both captures and their delays agree with where the
backend shaped the configured delay (meta.json's ``delay``)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.emu.leftovers import leftovers
from topologies.backends.netem import probe_netem

REPO = Path(__file__).resolve().parents[2]
TOLERANCE_MS = 0.5

pytestmark = [pytest.mark.emu, pytest.mark.kernel]

if os.geteuid() != 0:
    pytest.skip("the mininet backend needs root", allow_module_level=True)
if shutil.which("mnexec") is None or not Path("/usr/lib/python3/dist-packages/mininet").is_dir():
    pytest.skip("Mininet is not installed (apt-get install mininet)", allow_module_level=True)
if shutil.which("tcpdump") is None:
    pytest.skip("tcpdump is not installed", allow_module_level=True)


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_pcap_latency_of_a_captured_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    delay_mode = "kernel" if probe_netem().available else "userspace"
    scenario = scenario.model_copy(
        update={
            "backend": "mininet",
            "delay_mode": delay_mode,
            "capture": ["dev0-0", "mec0"],
            "training": scenario.training.model_copy(update={"rounds": 2}),
            "topology": scenario.topology.model_copy(
                update={"mecs_per_bs": 1, "devices_per_mec": 2}
            ),
        }
    )
    run_dir = tmp_path / "run"
    result = Run(scenario, run_dir, progress=False).execute()
    assert result.rounds_completed == 2, result
    meta = json.loads((run_dir / "meta.json").read_text())
    assert leftovers(meta["run_token"]) == []

    assert cli_main(["pcap", "latency", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert "cellular+fronthaul" in out and "Traceback" not in err
    rows = read(run_dir / "latency.csv")
    updates = [
        r
        for r in rows
        if r["msg_type"] == "update"
        and r["sender"] == "dev0-0"
        and (r["src_node"], r["dst_node"]) == ("dev0-0", "mec0")
        and r["src_capture"] == "dev0-0.pcap"
        and r["dst_capture"] == "mec0.pcap"
    ]
    assert len(updates) >= 2, "one update per round, seen at the device and at its MEC"
    topo = json.loads((run_dir / "topology.json").read_text())
    links = {(lk["src"], lk["dst"]): lk for lk in topo["links"]}
    configured = links[("dev0-0", "bs0")]["delay_ms"] + links[("bs0", "mec0")]["delay_ms"]
    for row in updates:
        assert row["link_class"] == "cellular+fronthaul"
        assert float(row["configured_delay_ms"]) == pytest.approx(configured, abs=1e-3)
        assert int(row["bytes"]) > 1000
        propagation = float(row["propagation_ms"])
        assert meta["delay"] in ("kernel(netem)", "userspace"), meta["delay"]
        # The cellular delay is applied before the device's own capture point in both modes:
        # user space holds the frame before its socket, and netem on the device's egress holds
        # the packets before tcpdump's tap. The wire between the two captures therefore shows
        # less than the configured delay (at most the fronthaul's, applied at the switch)...
        assert 0 <= propagation < configured - TOLERANCE_MS, row
        # ...and the node's send record -> the first byte on its wire shows the rest, so the
        # one-way delay (send record -> first byte at the MEC) is at least the configured one.
        assert row["node_sent_ms"] != "", "the nodes log messages when the run captures"
        assert float(row["send_to_wire_ms"]) >= configured - 2 * TOLERANCE_MS, row
        assert float(row["one_way_ms"]) >= configured - TOLERANCE_MS, row
        assert float(row["total_ms"]) >= configured - TOLERANCE_MS, row

    blocks = [r for r in read(run_dir / "latency_blocks.csv") if r["node"] == "dev0-0"]
    arrived = [r for r in blocks if r["arrived_ms"]]
    assert arrived, "dev0-0's capture shows the blocks it received"
    for r in arrived:
        assert float(r["proposed_ms"]) - 1 <= float(r["arrived_ms"]) <= float(r["received_ms"])
    assert (run_dir / "latency_cdf.png").stat().st_size > 0
    assert (run_dir / "block_propagation.png").stat().st_size > 0
