"""Base stations on Open vSwitch's user-space datapath (``switch: ovs-user``), as root.

The run starts its own ovsdb-server and ovs-vswitchd (no kernel datapath, no system
service) and must leave no daemon, bridge, interface or process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runner import Run
from orchestrator.scenario import ScenarioError, load_scenario
from tests.emu.leftovers import leftovers
from topologies.backends import ovs
from topologies.backends.mininet import MININET_PATH, clean

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.emu


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the mininet backend needs root"
    if shutil.which("mnexec") is None or not Path(MININET_PATH, "mininet").is_dir():
        return "Mininet is not installed (apt-get install mininet)"
    return None


SKIP = _skip_reason()
if SKIP is not None:
    pytest.skip(SKIP, allow_module_level=True)
OVS_MISSING = ovs.missing_parts()
needs_ovs = pytest.mark.skipif(
    bool(OVS_MISSING),
    reason=f"Open vSwitch is missing ({', '.join(OVS_MISSING)}): apt-get install {ovs.PACKAGE}",
)


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def quickstart(**update: Any) -> Any:
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    return scenario.model_copy(update={"backend": "mininet", "delay_mode": "userspace", **update})


@needs_ovs
def test_quickstart_on_ovs_user_space_bridges_and_nothing_left(tmp_path: Path) -> None:
    scenario = quickstart(switch="ovs-user")
    out = tmp_path / "run"
    seen: dict[str, Any] = {}

    def during_round_1(run: Run, record: dict[str, Any]) -> None:
        if record["round"] != 1:
            return
        b = run.backend
        o = b.private_ovs
        seen["pids"] = o.pids()
        seen["dir"] = o.dir
        seen["bridges"] = o.vsctl("list-br").split()
        bridge = seen["bridges"][0]
        seen["bridge"] = {
            col: o.vsctl("get", "Bridge", bridge, col).strip()
            for col in ("datapath_type", "fail_mode", "controller")
        }
        seen["ports"] = set(o.vsctl("list-ports", bridge).split())
        port = b.interface("bs0", "dev0-0")
        seen["port_qdisc"] = subprocess.run(
            ["tc", "qdisc", "show", "dev", port], capture_output=True, text=True
        ).stdout
        seen["port_class"] = subprocess.run(
            ["tc", "-s", "class", "show", "dev", port], capture_output=True, text=True
        ).stdout
        seen["host_offload"] = b.host("dev0-0").cmd(f"ethtool -k {b.interface('dev0-0', 'bs0')}")

    result = Run(scenario, out, progress=False, on_round=during_round_1).execute()

    assert result.rounds_completed == scenario.training.rounds
    assert result.final_accuracy is not None and result.final_accuracy >= 0.95
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    meta = json.loads((out / "meta.json").read_text())
    token = meta["run_token"]
    assert meta["switch"] == "ovs-user"
    assert seen["bridges"] == [f"{token}s0"]
    assert seen["bridge"] == {
        "datapath_type": "netdev",
        "fail_mode": "standalone",
        "controller": "[]",
    }
    assert len(seen["ports"]) == 12, "10 devices and 2 MECs on the one base station"
    assert "qdisc htb 5:" in seen["port_qdisc"], "OVS left our shaping on its port"
    sent = re.search(r"Sent (\d+) bytes", seen["port_class"])
    assert sent is not None and int(sent.group(1)) > 0, "OVS's frames pass through the HTB class"
    assert "tx-checksumming: off" in seen["host_offload"]
    assert (out / "ovs" / "ovs-vswitchd.log").stat().st_size > 0
    assert not any(alive(pid) for pid in seen["pids"].values()), seen["pids"]
    assert not Path(seen["dir"]).exists()
    assert leftovers(token) == []


@needs_ovs
def test_clean_stops_the_private_ovs_a_crashed_run_left() -> None:
    token = "zq7"
    private = ovs.PrivateOVS(token)
    try:
        private.start()
        private.add_bridges({f"{token}s0": []})
        pids = private.pids()
        assert all(alive(pid) for pid in pids.values())

        removed = clean(token)

        for proc in private.procs.values():
            assert proc.wait(timeout=10) == -9  # SIGKILL by clean, reaped here
        assert any(r.startswith("ovs-vswitchd") for r in removed), removed
        assert leftovers(token) == []
        assert ovs.netdev_holder() is None
        assert not Path(f"/sys/class/net/{ovs.NETDEV_DEVICE}").exists(), "the killed OVS's tap"
    finally:
        private.stop()


def test_missing_open_vswitch_is_refused_naming_the_package_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        ovs.shutil, "which", lambda name: None if name == "ovs-vswitchd" else real_which(name)
    )

    with pytest.raises(ScenarioError) as err:
        Run(quickstart(switch="ovs-user"), tmp_path / "run", progress=False)

    msg = str(err.value)
    assert "apt-get install openvswitch-switch" in msg
    assert "switch" in msg and "ovs-vswitchd" in msg
    assert not (tmp_path / "run").exists()


@needs_ovs
def test_a_second_user_space_ovs_is_refused_before_anything_starts(tmp_path: Path) -> None:
    first = ovs.PrivateOVS("zq8")
    try:
        first.start()
        first.add_bridges({"zq8s0": []})

        with pytest.raises(ovs.OVSBusy, match=r"run zq8 .* holds"):
            Run(quickstart(switch="ovs-user"), tmp_path / "run", progress=False)
        second = ovs.PrivateOVS("zq9")
        with pytest.raises(ovs.OVSBusy):
            second.start()
        assert second.procs == {}, "nothing was started"
    finally:
        first.stop()
    assert ovs.busy_reason() is None, "stopping released the machine"


@needs_ovs
def test_a_bridge_ovs_cannot_open_is_an_error_not_a_silent_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = ovs.PrivateOVS("zq8"), ovs.PrivateOVS("zq9")
    monkeypatch.setattr(second, "_take_lock", lambda: None)  # as if two runs raced
    try:
        first.start()
        first.add_bridges({"zq8s0": []})
        second.start()

        with pytest.raises(RuntimeError, match=r"could not open zq9s0 .*ovs-netdev"):
            second.add_bridges({"zq9s0": []})
    finally:
        second.stop()
        first.stop()
    assert leftovers("zq8") == [] and leftovers("zq9") == []
