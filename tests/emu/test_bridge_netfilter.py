"""The mininet backend under Docker's firewall: br_netfilter on (bridged frames go through
iptables' FORWARD chain) and FORWARD policy DROP, as installing Docker leaves a machine.
The run's bridges must still forward (every device contributes in every round), and the
firewall and sysctls must be exactly as before afterwards. Root, Mininet, br_netfilter."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.emu.leftovers import leftovers
from topologies.backends import bridgefw
from topologies.backends.netem import probe_netem

REPO = Path(__file__).resolve().parents[2]
SYSCTLS = [bridgefw.SYSCTL_DIR / name for _, name in bridgefw.FAMILIES]

pytestmark = [pytest.mark.emu, pytest.mark.kernel]

if os.geteuid() != 0:
    pytest.skip("the mininet backend needs root", allow_module_level=True)
if shutil.which("mnexec") is None or not Path("/usr/lib/python3/dist-packages/mininet").is_dir():
    pytest.skip("Mininet is not installed (apt-get install mininet)", allow_module_level=True)
if not SYSCTLS[0].exists():
    pytest.skip(
        "this kernel has no br_netfilter (no /proc/sys/net/bridge; modules cannot be loaded "
        "here): Docker's effect cannot be reproduced; vm/test-in-qemu.sh with BCFL_VM_DOCKER=1 "
        "tests it in a VM",
        allow_module_level=True,
    )
if shutil.which("iptables") is None:
    pytest.skip("iptables is not installed", allow_module_level=True)


def firewall() -> dict[str, str]:
    """Everything the test or the backend might change: rules, policies, sysctls."""
    out = {str(p): p.read_text().strip() for p in SYSCTLS if p.exists()}
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool):
            out[tool] = subprocess.run(
                [tool, "-w", "-S"], capture_output=True, text=True, check=True
            ).stdout
    return out


@pytest.fixture
def docker_like_firewall() -> Iterator[dict[str, str]]:
    """br_netfilter on and iptables FORWARD DROP, as Docker sets them; restored after."""
    before = firewall()
    policy = "DROP" if "-P FORWARD DROP" in before["iptables"] else "ACCEPT"
    try:
        SYSCTLS[0].write_text("1\n")
        subprocess.run(["iptables", "-w", "-P", "FORWARD", "DROP"], check=True)
        yield firewall()
    finally:
        subprocess.run(["iptables", "-w", "-P", "FORWARD", policy], check=True)
        SYSCTLS[0].write_text(before[str(SYSCTLS[0])] + "\n")
    assert firewall() == before


def bridged_ping_works(tag: str) -> bool:
    """Two namespaces on one bridge in the root namespace: does a ping cross it?"""
    ns = [f"{tag}n{i}" for i in (0, 1)]
    br = f"{tag}br"
    subnet = f"10.99.{ord(tag[-1]) % 250}"
    cmds = [["ip", "link", "add", br, "type", "bridge"], ["ip", "link", "set", br, "up"]]
    for i, n in enumerate(ns):
        cmds += [
            ["ip", "netns", "add", n],
            ["ip", "link", "add", f"{n}a", "type", "veth", "peer", "name", f"{n}b"],
            ["ip", "link", "set", f"{n}a", "master", br, "up"],
            ["ip", "link", "set", f"{n}b", "netns", n],
            ["ip", "-n", n, "addr", "add", f"{subnet}.{i + 1}/24", "dev", f"{n}b"],
            ["ip", "-n", n, "link", "set", f"{n}b", "up"],
        ]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        peer = f"{subnet}.2"
        ping = ["ip", "netns", "exec", ns[0], "ping", "-c", "3", "-i", "0.2", "-W", "2", peer]
        return subprocess.run(ping, capture_output=True).returncode == 0
    finally:
        for n in ns:
            subprocess.run(["ip", "link", "del", f"{n}a"], capture_output=True)
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "link", "del", br], capture_output=True)


def test_bridges_forward_under_dockers_firewall_and_it_is_restored(
    docker_like_firewall: dict[str, str], tmp_path: Path
) -> None:
    if bridged_ping_works("zq1"):
        pytest.skip("bridged frames cross a bridge despite FORWARD DROP: nothing to test here")
    # the quickstart, smaller (7 processes: also run inside the QEMU VM under TCG)
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    training = scenario.training.model_copy(update={"rounds": 2, "round_deadline_s": 300})
    topology = scenario.topology.model_copy(update={"devices_per_mec": 2})
    scenario = scenario.model_copy(
        update={
            "backend": "mininet",
            "delay_mode": "kernel" if probe_netem().available else "userspace",
            "training": training,
            "topology": topology,
        }
    )
    out = tmp_path / "run"

    result = Run(scenario, out, progress=False).execute()

    assert result.rounds_completed == 2, result
    assert result.problem is None and not result.failures, result
    with (out / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    for rnd in ("1", "2"):  # every device of the 2 MECs x 2 in every round
        pub = [r for r in table if r["round"] == rnd and r["role"] == "publisher"]
        assert len(pub) == 1 and pub[0]["contributors"] == "4", pub
        assert pub[0]["missing"] in ("", "[]"), pub
    # exactly Docker's firewall again: the run's tagged rules are gone
    assert firewall() == docker_like_firewall
    token = (out / "meta.json").read_text().split('"run_token": "')[1][:3]
    assert leftovers(token) == []
