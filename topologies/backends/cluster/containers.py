"""`cluster.containers: true`: the mininet-cluster backend with every node in a Docker
container on its server, as the containernet backend on one machine.

How it works
------------
Each server's Docker engine is reached with docker-py: this machine's at ``DOCKER_HOST`` (or
the default socket), another server's through its ``/var/run/docker.sock`` forwarded to a
socket in the run's ssh directory over the run's ssh master connection (no TCP port is
opened, no Docker context is needed). Before the network is built every engine is asked for
the node image (the preflight checked it too). A node's host is our `DockerHost` on Cluster
Edition's remote host class: its container is made on its server's engine
(`container_params`: no network, the run's label, the role's limits, the run directory at its
own path), and its Mininet shell joins the container's network namespace with ``nsenter`` on
that server, so links, tunnels, addresses, tc and captures are the cluster backend's.

The daemons are `docker exec`ed as in the containernet backend (`ContainerDaemons`), each
through its server's engine, and known by (server, PID): the PID the engine reports, signalled
with ``kill`` on that server. `stop` stops them, copies the remote nodes' directories back,
removes the network (each container with its host), then, still connected, every container
carrying the run's label on every engine; `bcfl clean` does the same on every server.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from topologies.backends.base import Launch
from topologies.backends.cluster.backend import ClusterBackend
from topologies.backends.cluster.settings import ClusterSection
from topologies.backends.containernet import (
    ContainerDaemons,
    container_params,
    docker_host_class,
    role_of,
)
from topologies.backends.docker_engine import RUN_LABEL, DockerUnavailable, client

log = logging.getLogger(__name__)

REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"


class ClusterContainerBackend(ContainerDaemons, ClusterBackend):
    """Runs a cluster run's daemons in one Docker container per node, each on its server."""

    def __init__(
        self,
        token: str,
        delay_mode: str,
        netem: bool,
        capture: list[str | list[str]],
        cluster: ClusterSection,
        run_dir: Path,
        containers: Any,
        image: str,
    ) -> None:
        """`containers`: the scenario's `containers:` section (limits); `image`: the node image
        every server's engine holds."""
        ClusterBackend.__init__(self, token, delay_mode, netem, capture, cluster, run_dir)
        self.containers = containers
        self.image = image
        self._engines: dict[str, Any] = {}  # server name -> docker-py client, while connected
        self.engine_versions: dict[str, str] = {}  # server name -> its engine's version
        self._docker_forwards: list[tuple[Any, str]] = []
        self._execs: dict[str, str] = {}
        self._exit_codes: dict[str, int | None] = {}

    def container_meta(self) -> dict[str, Any]:
        """What meta.json records about the containers."""
        return {
            "image": self.image,
            "host_class": "DockerHost on Cluster Edition's RemoteHost",
            "engines": dict(sorted(self.engine_versions.items())),
            "limits": {
                role: self.containers.limits(role).model_dump()
                for role in ("mec", "device", "publisher")
            },
        }

    def _engine(self, server_name: str) -> Any:
        """The docker-py client of a server's engine (connected on first use), checked to
        hold the node image."""
        if server_name in self._engines:
            return self._engines[server_name]
        from docker.client import DockerClient

        from topologies.backends.image import require

        server = self._settings(server_name)
        try:
            if server.is_local:
                engine = client()
            else:
                sock = self._ssh_dir / f"docker-{server_name}.sock"
                spec = self._forward(server, sock, REMOTE_DOCKER_SOCKET)
                self._docker_forwards.append((server, spec))
                engine = DockerClient(base_url=f"unix://{sock}", timeout=300)
                engine.ping()
            require(engine, self.image)
            self.engine_versions[server_name] = str(engine.version().get("Version", "?"))
        except Exception as exc:
            raise DockerUnavailable(
                f"server {server_name} ({server.destination}): its Docker engine: {exc}"
            ) from None
        self._engines[server_name] = engine
        return engine

    def prestart(self) -> None:
        """Nothing: the daemons are `docker exec`ed, no fork server forks them."""

    def _add_host_on(self, net: Any, cls: type, node_id: str, name: str, server: str) -> Any:
        assert self._spec is not None
        limits = self.containers.limits(role_of(self._spec.node(node_id).kind))
        engine = self._engine(server)
        return net.addHost(
            name,
            cls=docker_host_class(cls),
            ip=None,
            server=self._mn_server(server),
            user=self._settings(server).user,
            docker=engine,
            container=container_params(self.image, name, self.token, node_id, limits, self.run_dir),
        )

    def _api(self, node_id: str) -> Any:
        return self._engine(self._where[node_id]).api

    def _signal(self, node_id: str, sig: int) -> None:
        server = self._settings(self._where[node_id])
        pid = self._pids[node_id]
        if server.is_local:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        else:  # gone already is fine; the engine's exec record says when it ended
            self._remote(server, f"kill -{int(sig)} {pid} 2>/dev/null; true")

    def start(self, launches: list[Launch]) -> None:
        """Copy the run directory out, forward the control sockets, `docker exec` every
        daemon in its container."""
        self._ship(launches)
        super().start(launches)

    def _before_disconnect(self) -> None:
        """Every container still carrying the run's label, on every engine (a host that
        failed half-way), then the engines' socket forwards."""
        for name, engine in self._engines.items():
            try:
                for container in engine.containers.list(
                    all=True, filters={"label": f"{RUN_LABEL}={self.token}"}
                ):
                    container.remove(force=True)
                engine.close()
            except Exception as exc:  # bcfl clean removes what is left
                log.warning("removing the run's containers on %s failed: %s", name, exc)
        self._engines = {}
        for server, spec in self._docker_forwards:
            self._cancel_forward(server, spec)
        self._docker_forwards = []
