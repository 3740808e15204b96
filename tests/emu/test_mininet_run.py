"""`bcfl run --backend mininet` end to end (as root, with Debian's mininet), and cleanup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.emu.leftovers import leftovers
from topologies.backends import bridgefw
from topologies.backends.mininet import import_mininet, run_script
from topologies.backends.netem import probe_netem

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.emu, pytest.mark.kernel]

if os.geteuid() != 0:
    pytest.skip("the mininet backend needs root", allow_module_level=True)
if shutil.which("mnexec") is None or not Path("/usr/lib/python3/dist-packages/mininet").is_dir():
    pytest.skip("Mininet is not installed (apt-get install mininet)", allow_module_level=True)


def test_quickstart_runs_in_mininet_and_leaves_nothing_behind(tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    delay_mode = "kernel" if probe_netem().available else "userspace"
    scenario = scenario.model_copy(
        update={
            "backend": "mininet",
            "delay_mode": delay_mode,
            "capture": ["dev0-0", ["mec1", "mec0"]],
        }
    )
    out = tmp_path / "run"

    result = Run(scenario, out, progress=False).execute()

    assert result.rounds_completed == scenario.training.rounds
    assert result.final_accuracy is not None and result.final_accuracy >= 0.95
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backend"] == "mininet"
    assert meta["bandwidth"] == "kernel(htb)"
    assert meta["delay"] == ("kernel(netem)" if delay_mode == "kernel" else "userspace")
    assert meta["endpoints"]["pub"].startswith("tcp://10.77.")
    assert (out / "pcap" / "dev0-0.pcap").stat().st_size > 24, "tcpdump captured packets"
    assert (out / "pcap" / "mec1_mec0.pcap").stat().st_size > 24, "the backhaul link too"
    assert leftovers(meta["run_token"]) == []
    assert cli_main(["chain", "verify", str(out)]) == 0


def test_kernel_delay_without_netem_is_refused_before_anything_starts(tmp_path: Path) -> None:
    if probe_netem().available:
        pytest.skip("this kernel has netem: nothing to refuse")
    out = tmp_path / "run"
    code = cli_main(
        [
            "run",
            str(REPO / "scenarios" / "quickstart.yaml"),
            "--backend",
            "mininet",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 2
    assert not out.exists()


def test_clean_removes_only_the_runs_leftovers() -> None:
    token = "zz9"
    for name in (f"{token}s1", "zz8s1"):
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    rules = shutil.which("iptables") is not None
    if rules:  # the FORWARD rules a crashed run left (bridgefw), its own and another run's
        for t in (token, "zz8"):
            subprocess.run(bridgefw.insert_argv("iptables", f"{t}s", t), check=True)
    try:
        assert cli_main(["clean", token]) == 0
        names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f"{token}s1" not in names
        assert "zz8s1" in names, "a name without the token is untouched"
        if rules:
            listing = subprocess.run(
                ["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True
            ).stdout
            assert bridgefw.comment(token) not in listing
            assert bridgefw.comment("zz8") in listing, "another run's rule is untouched"
    finally:
        subprocess.run(["ip", "link", "del", "zz8s1"], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{token}s1"], capture_output=True)
        if rules:
            bridgefw.clean("zz8")
            bridgefw.clean(token)


def test_a_host_runs_set_up_scripts_longer_than_a_terminal_line(tmp_path: Path) -> None:
    """A host's set-up at 1,000 devices (an rp_filter key per interface of a MEC with 100
    backhaul links) is longer than the 4,095 bytes a terminal line holds; sent as one command
    line it failed with `sysctl: ... invalid syntax`."""
    import_mininet()
    from mininet.net import Mininet

    net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
    host = net.addHost("zy7h1", ip=None)
    keys = " ".join(f"net.ipv4.conf.all.rp_filter=0 # {i:04d}" for i in range(150))
    script = f"r=0; echo '{keys}' | wc -c; sysctl -qw net.ipv4.ip_forward=1 || r=$?; echo rc=$r"
    try:
        out = run_script(host, script, tmp_path / "zy7h1.sh")
        forwarding = host.cmd("sysctl -n net.ipv4.ip_forward").strip()
    finally:
        net.stop()
    assert len(script) > 4095
    assert out.strip().endswith("rc=0"), out[-200:]
    assert forwarding == "1"
