"""The `containernet` backend: every MEC, device and publisher node in its own Docker
container, attached to the same Mininet topology and tc shaping as the mininet backend.

How it works
------------
`ContainernetBackend` is the mininet backend with another kind of host. Where the
`containernet` package is installed (it replaces Mininet's Python package; the Vagrant VM
installs it) a node's host is Containernet's own `Docker` host. Elsewhere it is our
`DockerHost`, a Mininet host on stock Mininet: its container is created first with
docker-py (`--network none`, labelled with the run's token, CPU and memory limits from the
scenario's `containers:` section, the run and data directories mounted at the same paths),
and its Mininet shell is started inside the container's network namespace (`nsenter -n`),
but in the root mount namespace, so Mininet's own ip/tc/tcpdump commands run as for any
host while the veth ends it creates land in the container. Links, addresses, routes, tc and
capture are then exactly the mininet backend's.

The daemons do not go through the fork server: each is `docker exec`ed in its container
(the image's Python, the container's cgroup and limits), and is known by the host PID the
engine reports for the exec, so kill, restart and stop act by PID. `stop` removes the
containers with their hosts and then, as a safety net, every container carrying the run's
label; `bcfl clean` does the same for a crashed run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from pathlib import Path
from typing import Any

from topologies.backends.base import Launch
from topologies.backends.docker_engine import RUN_LABEL, client, remove_run_containers
from topologies.backends.mininet import MininetBackend, _wait, import_mininet
from topologies.spec import NodeKind

PYTHON = "python"  # on the image's PATH: /opt/bcfl/venv/bin/python


@functools.cache
def docker_host_class(base: type | None = None) -> type:
    """Our Mininet host whose network namespace is a Docker container's (stock Mininet), on
    `base` (default Mininet's `Host`; the cluster backend gives Cluster Edition's remote host,
    whose commands then go over ssh to the container's server)."""
    import_mininet()
    from mininet.node import Host

    class DockerHost(base or Host):  # type: ignore[misc]
        """A Mininet host living in a Docker container created here with docker-py."""

        def __init__(
            self, name: str, docker: Any, container: dict[str, Any], **params: Any
        ) -> None:
            self.container = docker.containers.run(detach=True, **container)
            self.container.reload()
            self.container_pid = int(self.container.attrs["State"]["Pid"])
            if self.container_pid <= 0:
                self.container.remove(force=True)
                raise RuntimeError(f"container {self.container.name} did not start")
            super().__init__(name, **params)

        def _popen(self, cmd: list[str], **params: Any) -> Any:
            # Mininet starts every host's shell with `mnexec -cdn` (a new namespace); this one
            # joins the container's network namespace instead and keeps the root mount
            # namespace (the host's ip, tc and tcpdump; files written where the run is). A
            # remote base wraps the command in ssh after this.
            if self.shell is None and cmd[:1] == ["mnexec"]:
                opts = cmd[1].replace("n", "")
                cmd = ["nsenter", "-t", str(self.container_pid), "-n", "mnexec", opts, *cmd[2:]]
            return super()._popen(cmd, **params)

        def terminate(self) -> None:
            super().terminate()
            with contextlib.suppress(Exception):  # already gone: nothing to remove
                self.container.remove(force=True)

    return DockerHost


def container_params(
    image: str, name: str, token: str, node_id: str, limits: Any, run_dir: Path
) -> dict[str, Any]:
    """docker-py's `containers.run` arguments of a node's container: no network (Mininet
    gives it its interfaces), labelled with the run's token, the role's limits, and the run
    directory (read-write) at its own path, so the paths in the nodes' configs hold inside.
    It is all a node reads: the orchestrator prepared each node's data in it
    (`orchestrator/dataprep.py`), so no data-set directory is mounted."""
    container: dict[str, Any] = {
        "image": image,
        "name": f"bcfl-{name}",
        "hostname": name,
        "network_mode": "none",
        "labels": {RUN_LABEL: token, "bcfl.node": node_id},
        "volumes": {str(run_dir): {"bind": str(run_dir), "mode": "rw"}},
    }
    if limits.cpus is not None:
        container["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.memory_mb is not None:
        container["mem_limit"] = f"{limits.memory_mb}m"
        container["memswap_limit"] = f"{limits.memory_mb}m"
    return container


def role_of(kind: NodeKind) -> str:
    """The `containers:` section's role of a node kind."""
    return "publisher" if kind == NodeKind.PUBLISHER else str(kind)


class ContainerDaemons(MininetBackend):
    """The daemons of a backend whose nodes are containers: each `docker exec`ed in its
    node's container through that container's engine (`_api`), known by the host PID the
    engine reports, signalled by PID on its server (`_signal`)."""

    _execs: dict[str, str]  # node id -> exec id, while its daemon may run
    _exit_codes: dict[str, int | None]  # node id -> its daemon's last exit code, after stop

    def _api(self, node_id: str) -> Any:
        """The low-level docker-py API of the engine `node_id`'s container is in."""
        raise NotImplementedError

    def _signal(self, node_id: str, sig: int) -> None:
        """Send `sig` to `node_id`'s daemon (by its PID on its server); gone is fine."""
        raise NotImplementedError

    def container_of(self, node_id: str) -> Any:
        """The docker-py container of a node."""
        return self.host(node_id).container

    def prestart(self) -> None:
        """Nothing: the daemons are `docker exec`ed, no fork server forks them."""

    def start(self, launches: list[Launch]) -> None:
        """`docker exec` every daemon in its container."""
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)

    def _spawn(self, launch: Launch) -> None:
        config = launch.argv[-1]
        cmd = f"exec {PYTHON} -m node {config} >>{launch.log_path} 2>&1"
        api = self._api(launch.node_id)
        exec_id = api.exec_create(
            self.container_of(launch.node_id).id,
            ["sh", "-c", cmd],
            environment=dict(launch.env),
        )["Id"]
        api.exec_start(exec_id, detach=True)
        end = time.monotonic() + 30
        pid = 0
        while time.monotonic() < end:
            info = api.exec_inspect(exec_id)
            pid = int(info.get("Pid") or 0)
            if pid > 0 or (not info.get("Running", False) and info.get("ExitCode") is not None):
                break
            time.sleep(0.02)
        if pid <= 0:
            raise RuntimeError(f"docker exec of {launch.node_id}'s daemon did not start")
        self._execs[launch.node_id] = exec_id
        self._pids[launch.node_id] = pid

    def poll(self) -> dict[str, int | None]:
        """Exit codes (None while running), from the engine's record of each exec."""
        if not self._execs:  # by node: PIDs on different servers may be the same number
            return {nid: self._exit_codes.get(nid) for nid in self._pids}
        out: dict[str, int | None] = {}
        for nid, exec_id in self._execs.items():
            info = self._api(nid).exec_inspect(exec_id)
            out[nid] = None if info["Running"] else int(info["ExitCode"])
        return out

    def kill(self, node_id: str, sig: int = signal.SIGKILL, wait_s: float | None = 10.0) -> None:
        """Signal one daemon by its host PID (fault injection)."""
        self._signal(node_id, sig)
        if wait_s is not None:
            _wait(lambda: self.poll()[node_id] is not None, wait_s)

    def _stop_daemons(self, grace_s: float) -> None:
        if not self._execs:
            return
        running = [nid for nid, code in self.poll().items() if code is None]
        for nid in running:
            self.kill(nid, signal.SIGTERM, wait_s=None)
        if not _wait(lambda: all(self.poll()[n] is not None for n in running), grace_s):
            for nid in running:
                self.kill(nid, signal.SIGKILL, wait_s=None)
            _wait(lambda: all(self.poll()[n] is not None for n in running), 5)
        self._exit_codes = self.poll()
        self._execs = {}


class ContainernetBackend(ContainerDaemons):
    """Runs a run's daemons in one Docker container per node, inside the Mininet network."""

    name = "containernet"

    def __init__(
        self,
        token: str,
        delay_mode: str,
        netem: bool,
        capture: list[str | list[str]],
        containers: Any,
        out_dir: Path,
        **kwargs: Any,
    ) -> None:
        """`containers` is the scenario's ContainersSection (topologies.backends.settings);
        `out_dir` the run directory, mounted into every container (the nodes read their
        prepared data from it)."""
        super().__init__(token, delay_mode, netem, capture, **kwargs)
        from topologies.backends.image import default_tag, require

        self.containers = containers
        self.image = containers.image or default_tag()
        self.out_dir = out_dir.resolve()
        self._docker: Any = client()
        require(self._docker, self.image)  # before anything starts
        self._execs: dict[str, str] = {}
        self._exit_codes: dict[str, int | None] = {}
        self._containernet_package = False

    def container_meta(self) -> dict[str, Any]:
        """What meta.json records about the containers."""
        return {
            "image": self.image,
            "host_class": "containernet.Docker" if self._containernet_package else "DockerHost",
            "limits": {
                role: self.containers.limits(role).model_dump()
                for role in ("mec", "device", "publisher")
            },
        }

    def _add_host(self, net: Any, node_id: str, name: str) -> Any:
        assert self._spec is not None
        limits = self.containers.limits(role_of(self._spec.node(node_id).kind))
        import mininet.node

        package_docker = getattr(mininet.node, "Docker", None)
        if package_docker is not None:  # the containernet package
            self._containernet_package = True
            params: dict[str, Any] = {
                "dimage": self.image,
                "volumes": [f"{self.out_dir}:{self.out_dir}:rw"],
                "labels": {RUN_LABEL: self.token, "bcfl.node": node_id},
            }
            if limits.cpus is not None:
                params.update(cpu_period=100_000, cpu_quota=int(limits.cpus * 100_000))
            if limits.memory_mb is not None:
                params["mem_limit"] = f"{limits.memory_mb}m"
            return net.addHost(name, cls=package_docker, ip=None, **params)
        container = container_params(self.image, name, self.token, node_id, limits, self.out_dir)
        return net.addHost(
            name, cls=docker_host_class(), ip=None, docker=self._docker, container=container
        )

    def container_of(self, node_id: str) -> Any:
        """The docker-py container of a node (ours, or the containernet package's)."""
        host = self.host(node_id)
        if hasattr(host, "container"):
            return host.container
        return self._docker.containers.get(host.dc["Id"])  # containernet's Docker host

    def _api(self, node_id: str) -> Any:
        return self._docker.api

    def _signal(self, node_id: str, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pids[node_id], sig)

    def stop(self, grace_s: float = 10.0) -> None:
        """Kill the daemons, remove the network and containers, then anything labelled."""
        try:
            super().stop(grace_s)
        finally:
            remove_run_containers(self.token)
