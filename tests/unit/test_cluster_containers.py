"""`cluster.containers`: the scenario field, the node image the preflight asks every server's
engine for, what it says of a server that cannot run containers, and the container host's
shell joining its container's network namespace on a remote server's host class."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.scenario import ScenarioError, parse_scenario
from topologies.backends import image
from topologies.backends.cluster import preflight

SERVERS = [{"name": "here", "address": "localhost"}]


def _scenario(in_containers: object = None, **more: Any) -> Any:
    cluster: dict[str, Any] = {"servers": SERVERS}
    if in_containers is not None:
        cluster["containers"] = in_containers
    return parse_scenario({"backend": "mininet-cluster", "cluster": cluster, **more})


def test_containers_are_off_by_default_and_no_image_is_asked_for() -> None:
    s = _scenario()
    assert s.cluster.containers is False
    assert preflight.node_image(s.cluster, s.containers) is None


def test_the_image_is_the_scenarios_or_the_codes() -> None:
    s = _scenario(True)
    assert preflight.node_image(s.cluster, s.containers) == image.default_tag()
    s = _scenario(True, containers={"image": "bcfl-node:mine"})
    assert preflight.node_image(s.cluster, s.containers) == "bcfl-node:mine"


def test_a_bad_containers_value_is_named() -> None:
    with pytest.raises(ScenarioError, match=r"cluster\.containers"):
        _scenario("sometimes")


@pytest.mark.parametrize(
    ("docker", "says"),
    [
        ({}, "docker not found"),
        ({"cli": "/usr/bin/docker", "engine": None}, "no Docker engine answers"),
        (
            {"cli": "/usr/bin/docker", "engine": "26.1", "image": False},
            "has no node image bcfl-node:x",
        ),
    ],
)
def test_a_server_that_cannot_run_the_containers_is_told_what_to_do(
    docker: dict[str, Any], says: str
) -> None:
    problems = preflight.docker_problems(docker, "bcfl-node:x")
    assert len(problems) == 1 and says in problems[0]
    assert "cluster.containers: true" in problems[0]


def test_a_server_with_engine_and_image_passes() -> None:
    ok = {"cli": "/usr/bin/docker", "engine": "26.1", "image": True}
    assert preflight.docker_problems(ok, "bcfl-node:x") == []


class _Container:
    def __init__(self, pid: int) -> None:
        self.attrs = {"State": {"Pid": pid}}
        self.name = "bcfl-d0"
        self.removed = False

    def reload(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        self.removed = force


class _Containers:
    def __init__(self, pid: int) -> None:
        self.made: list[dict[str, Any]] = []
        self.pid = pid
        self.last: _Container | None = None

    def run(self, **params: Any) -> _Container:
        self.made.append(params)
        self.last = _Container(self.pid)
        return self.last


class _Engine:
    def __init__(self, pid: int) -> None:
        self.containers = _Containers(pid)


class _RemoteShellHost:
    """Stands in for Cluster Edition's RemoteHost: records the commands it would wrap in ssh."""

    def __init__(self, name: str, **params: Any) -> None:
        self.name, self.params, self.shell = name, params, None
        self.popened: list[list[str]] = []

    def _popen(self, cmd: list[str], **params: Any) -> list[str]:
        self.popened.append(cmd)
        return cmd

    def terminate(self) -> None:
        pass


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mnexec") is None, reason="needs root and Mininet"
)
def test_the_container_hosts_shell_joins_its_container_on_its_server() -> None:
    from topologies.backends.containernet import docker_host_class

    engine = _Engine(pid=4242)
    cls = docker_host_class(_RemoteShellHost)
    host = cls("d0", docker=engine, container={"image": "bcfl-node:x"}, server="10.0.0.2")
    assert engine.containers.made == [{"detach": True, "image": "bcfl-node:x"}]
    assert host.params == {"server": "10.0.0.2"}  # the remote host class gets its server
    # Cluster Edition starts a remote shell with `mnexec -cn` (a new namespace); ours joins the
    # container's network namespace instead and keeps the server's root mount namespace
    host._popen(["mnexec", "-cn", "env", "bash"])
    assert host.popened[-1] == ["nsenter", "-t", "4242", "-n", "mnexec", "-c", "env", "bash"]
    host.shell = object()  # other commands are the host class's own
    host._popen(["ip", "link"])
    assert host.popened[-1] == ["ip", "link"]
    host.terminate()
    assert engine.containers.last is not None and engine.containers.last.removed
    assert docker_host_class(_RemoteShellHost) is cls  # one class per base


def test_without_docker_py_the_cli_removes_the_runs_containers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server of a cluster run may have Docker's CLI but not docker-py: `bcfl clean`
    there removes the run's containers with `docker rm -f` (here a stand-in CLI that lists
    three containers and logs what it is asked)."""
    from topologies.backends import docker_engine

    calls = tmp_path / "calls"
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'if [ "$1" = ps ]; then\n'
        "  echo 'aaa bcfl-d0 tok1'\n"
        "  echo 'bbb bcfl-d1 other'\n"
        "  echo 'ccc mn.tok1h3'\n"
        "fi\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    def no_engine() -> None:
        raise docker_engine.DockerUnavailable("no docker-py")

    monkeypatch.setattr(docker_engine, "client", no_engine)
    removed = docker_engine.remove_run_containers("tok1")
    assert removed == ["container bcfl-d0", "container mn.tok1h3"]
    asked = calls.read_text().splitlines()
    assert asked[0].startswith("ps -a --format")
    assert asked[1:] == ["rm -f aaa", "rm -f ccc"]  # not the other run's container
