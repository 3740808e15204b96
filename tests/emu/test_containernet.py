"""`bcfl run --backend containernet`: one Docker container per node in the Mininet network.

Needs root, Mininet, dockerd (Debian's docker.io), debootstrap and docker-py. The test
starts its own dockerd (own data root and socket, stopped by PID) and builds the node image
offline (`bcfl image build --offline`; the base layer stays cached in that data root
between local runs). Skipped with the reason where a piece is missing; `.ci/run` installs
all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.emu.leftovers import leftovers
from topologies.backends import image
from topologies.backends.docker_engine import RUN_LABEL, PrivateDockerd, client

REPO = Path(__file__).resolve().parents[2]
DOCKER_ROOT = Path(os.environ.get("BCFL_TEST_DOCKER_ROOT", "/var/tmp/bcfl-test-docker"))

pytestmark = pytest.mark.emu

if os.geteuid() != 0:
    pytest.skip("the containernet backend needs root", allow_module_level=True)
for tool, package in (("mnexec", "mininet"), ("dockerd", "docker.io"), ("debootstrap", "")):
    if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
        reason = f"{tool} is missing (apt-get install {package or tool})"
        pytest.skip(reason, allow_module_level=True)
pytest.importorskip("docker", reason="docker-py is missing (pip install docker)")


@pytest.fixture(scope="module")
def engine() -> Iterator[PrivateDockerd]:
    dockerd = PrivateDockerd(DOCKER_ROOT)
    dockerd.start()
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = dockerd.host
    try:
        yield dockerd
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old
        dockerd.stop()
    assert dockerd.proc is None


@pytest.fixture(scope="module")
def node_image(engine: PrivateDockerd) -> str:
    return image.build(offline=True)


def test_quickstart_runs_one_container_per_node_and_leaves_nothing(
    node_image: str, tmp_path: Path
) -> None:
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    scenario = scenario.model_validate(
        scenario.model_dump()
        | {
            "backend": "containernet",
            "delay_mode": "userspace",
            "training": scenario.training.model_dump() | {"rounds": 5},
            "containers": {"memory_mb": 1024, "device": {"cpus": 0.5}},
            "faults": [
                {"at_round": 2, "action": "crash", "nodes": ["dev1-4"]},
                {"at_round": 4, "action": "restart", "nodes": ["dev1-4"]},
            ],
            "capture": [["mec0", "mec1"]],
        }
    )
    seen: dict[str, Any] = {}

    def inspect(run: Run, record: dict[str, Any]) -> None:
        if record["round"] != 1:
            return
        docker = client()
        containers = {
            c.labels["bcfl.node"]: c
            for c in docker.containers.list(filters={"label": f"{RUN_LABEL}={run.backend.token}"})
        }
        seen["containers"] = sorted(containers)
        running = {n: p for n, p in run.backend.pids().items() if run.backend.poll()[n] is None}
        assert sorted(running) == sorted(set(containers) - {"dev1-4"}), "dev1-4 has crashed"
        for nid, pid in running.items():
            c = containers[nid]
            c.reload()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            assert c.id in cgroup, f"{nid}'s daemon runs in its container's cgroup"
            own_net = os.readlink(f"/proc/{pid}/ns/net")
            assert own_net == os.readlink(f"/proc/{c.attrs['State']['Pid']}/ns/net")
            assert c.attrs["HostConfig"]["Memory"] == 1024 * 1024 * 1024
            cpus = 0.5 if nid.startswith("dev") else 0.0
            assert c.attrs["HostConfig"]["NanoCpus"] == int(cpus * 1e9)
        seen["netns"] = len({os.readlink(f"/proc/{pid}/ns/net") for pid in running.values()})

    out = tmp_path / "run"
    result = Run(scenario, out, progress=False, on_round=inspect).execute()

    daemons = sorted(json.loads((out / "meta.json").read_text())["nodes"])
    assert seen["containers"] == daemons, "one container per MEC, device and publisher"
    assert seen["netns"] == len(daemons) - 1, "each node has its own network stack"
    assert result.rounds_completed == 5
    assert result.final_accuracy is not None and result.final_accuracy >= 0.9
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backend"] == "containernet"
    assert meta["containers"]["image"] == node_image
    assert [r["node"] for r in meta["restarts"]] == ["dev1-4"]
    assert (out / "pcap" / "mec0_mec1.pcap").stat().st_size > 24
    assert cli_main(["chain", "verify", str(out)]) == 0
    token = meta["run_token"]
    assert leftovers(token) == []
    assert client().containers.list(all=True, filters={"label": f"{RUN_LABEL}={token}"}) == []
    for pid in meta["pids"].values():
        assert not Path(f"/proc/{pid}").exists()


def test_missing_image_is_a_clear_error(engine: PrivateDockerd, tmp_path: Path) -> None:
    out = tmp_path / "run"
    scenario = REPO / "scenarios" / "quickstart.yaml"
    text = scenario.read_text() + "containers:\n  image: bcfl-node:does-not-exist\n"
    (tmp_path / "s.yaml").write_text(text)
    code = cli_main(
        ["run", str(tmp_path / "s.yaml"), "--backend", "containernet", "--delay-mode",
         "userspace", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 2, "refused before anything starts"
    assert not out.exists()
    assert client().containers.list(all=True, filters={"label": RUN_LABEL}) == []


def test_clean_removes_only_the_runs_containers(node_image: str) -> None:
    docker = client()
    mine = [
        docker.containers.run(
            node_image, detach=True, network_mode="none", labels={RUN_LABEL: "zz7"}
        ),
        docker.containers.run(node_image, detach=True, network_mode="none", name="mn.zz7h3"),
    ]
    other = docker.containers.run(
        node_image, detach=True, network_mode="none", labels={RUN_LABEL: "zz6"}
    )
    try:
        assert cli_main(["clean", "zz7"]) == 0
        left = {c.id for c in docker.containers.list(all=True)}
        assert not left & {c.id for c in mine}
        assert other.id in left, "another run's container is untouched"
    finally:
        for c in [*mine, other]:
            with contextlib.suppress(Exception):
                c.remove(force=True)
