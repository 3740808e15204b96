"""`cluster.containers: true` on two servers: this machine and the QEMU VM of
`vm/cluster-vm.sh` started with Docker (``BCFL_CLUSTER_VM_DOCKER=1``), as root.

Here a private dockerd (own data root and socket, as in test_containernet.py) gets the node
image built offline, and `vm/cluster-vm.sh load-image` copies it into the VM's engine. The
run places mec1 and its devices in the VM, each node in a container on its server; a device
in the VM is killed at round 2 (by its PID there) and restarted at round 3. It must end with
every round done and every ledger verified, each daemon having run in its container's cgroup
on its server, and no container, interface or file of the run left on either server.
Skipped unless the VM runs with a Docker engine; BCFL_CLUSTER_CONTAINERS_REQUIRED=1 makes a
missing piece an error instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.emu.cluster_vm import vm_servers
from tests.emu.leftovers import leftovers
from topologies.backends import image
from topologies.backends.docker_engine import RUN_LABEL, PrivateDockerd, client

pytestmark = pytest.mark.emu

REPO = Path(__file__).resolve().parents[2]
VM = REPO / "vm" / "cluster-vm.sh"
DOCKER_ROOT = Path(os.environ.get("BCFL_TEST_DOCKER_ROOT", "/var/tmp/bcfl-test-docker"))


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the cluster backend needs root"
    for tool, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            return f"{tool} is missing (apt-get install {package})"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "docker-py is missing (pip install docker)"
    if subprocess.run([str(VM), "status"], capture_output=True).returncode != 0:
        return "the cluster VM is not running (BCFL_CLUSTER_VM_DOCKER=1 vm/cluster-vm.sh start)"
    has_engine = subprocess.run(
        [str(VM), "ssh", "docker info >/dev/null 2>&1"], capture_output=True
    ).returncode
    if has_engine != 0:
        return "the cluster VM has no Docker engine (start it with BCFL_CLUSTER_VM_DOCKER=1)"
    return None


SKIP = _skip_reason()
if SKIP is not None:
    if os.environ.get("BCFL_CLUSTER_CONTAINERS_REQUIRED") == "1":
        raise RuntimeError(f"BCFL_CLUSTER_CONTAINERS_REQUIRED=1 but {SKIP}")
    pytest.skip(SKIP, allow_module_level=True)


def vm_ssh(script: str) -> str:
    done = subprocess.run([str(VM), "ssh", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def node_image() -> Iterator[str]:
    """The node image of this code in a private engine here, loaded into the VM's engine."""
    dockerd = PrivateDockerd(DOCKER_ROOT)
    dockerd.start()
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = dockerd.host
    try:
        tag = image.build(offline=True)
        subprocess.run([str(VM), "load-image", tag], check=True, timeout=1800)
        yield tag
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old
        dockerd.stop()


def scenario(tmp_path: Path) -> Path:
    data = {
        "name": "cluster-containers",
        "seed": 1,
        "scheme": "vanilla",
        "backend": "mininet-cluster",
        "delay_mode": "userspace",
        "dataset": {"name": "digits"},
        "model": "mlp",
        "training": {
            "rounds": 4,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 60,
        },
        "topology": {"base_stations": 1, "mecs_per_bs": 2, "devices_per_mec": 2, "t_ms": 10},
        "startup_timeout_s": 900,
        "containers": {"memory_mb": 768},
        "faults": [
            {"at_round": 2, "action": "crash", "nodes": ["dev1-0"]},
            {"at_round": 3, "action": "restart", "nodes": ["dev1-0"]},
        ],
        "cluster": {
            "tunnel": "vxlan",
            "containers": True,
            "servers": vm_servers(),
        },
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _vm_containers(token: str) -> dict[str, str]:
    """The VM engine's containers of the run: node id -> container id."""
    fmt = '{{.Label "bcfl.node"}} {{.ID}}'
    out = vm_ssh(f"docker ps -a --no-trunc --filter label={RUN_LABEL}={token} --format '{fmt}'")
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_containers_on_this_machine_and_in_the_vm(node_image: str, tmp_path: Path) -> None:
    subprocess.run([str(VM), "sync-tree"], check=True)
    in_vm = {"mec1", "dev1-0", "dev1-1"}
    seen: dict[str, Any] = {}

    def inspect(run: Run, record: dict[str, Any]) -> None:
        if record["round"] != 1:
            return
        token = run.backend.token
        here = {
            c.labels["bcfl.node"]: c.id
            for c in client().containers.list(filters={"label": f"{RUN_LABEL}={token}"})
        }
        there = _vm_containers(token)
        seen["here"], seen["there"] = sorted(here), sorted(there)
        # dev1-0 is killed as round 1 ends (its crash is "at round 2"): the others run
        codes = run.backend.poll()
        running = {n: p for n, p in run.backend.pids().items() if codes[n] is None}
        seen["running"] = sorted(running)
        for nid, pid in running.items():
            if nid in in_vm:
                cgroup = vm_ssh(f"cat /proc/{pid}/cgroup")
                seen.setdefault("vm_cgroups", {})[nid] = there[nid] in cgroup
            else:
                cgroup = Path(f"/proc/{pid}/cgroup").read_text()
                seen.setdefault("cgroups", {})[nid] = here[nid] in cgroup

    out = tmp_path / "run"
    result = Run(load_scenario(scenario(tmp_path)), out, progress=False, on_round=inspect).execute()

    meta = json.loads((out / "meta.json").read_text())
    assert seen["there"] == sorted(in_vm), "mec1 and its devices in the VM's engine"
    assert seen["here"] == sorted(set(meta["nodes"]) - in_vm)
    assert seen["running"] == sorted(set(meta["nodes"]) - {"dev1-0"})
    assert seen["vm_cgroups"] == {"mec1": True, "dev1-1": True}, "in its container's cgroup"
    assert set(seen["cgroups"].values()) == {True} and len(seen["cgroups"]) == 4
    assert result.rounds_completed == 4
    assert meta["containers"]["image"] == node_image
    assert sorted(meta["containers"]["engines"]) == ["here", "vm"]  # with their versions
    assert [r["node"] for r in meta["restarts"]] == ["dev1-0"]
    assert main(["chain", "verify", str(out)]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    dev10 = {int(r.split(",")[2]) for r in rows[1:] if r.split(",")[3] == "dev1-0"}
    assert 4 in dev10 and 2 not in dev10  # killed by its PID in the VM, then back
    token = meta["run_token"]
    assert leftovers(token) == []
    assert client().containers.list(all=True, filters={"label": f"{RUN_LABEL}={token}"}) == []
    assert _vm_containers(token) == {}
    vm_links = [line.split(":")[1].strip() for line in vm_ssh("ip -o link").splitlines()]
    assert [name for name in vm_links if name.startswith(token)] == []
    assert vm_ssh(f"test -e {out} && echo kept || echo gone").strip() == "gone"
