"""The `cluster:` scenario section: the servers a multi-server run uses, the tunnel kind
between them, and where each node goes. Defined once here and embedded in the orchestrator's
`Scenario`; light (pydantic only).

A server is this machine when its ``address`` is ``localhost``; every other server is reached
with ssh (BatchMode: keys only, never a password prompt) as ``user`` (default root, which
Mininet needs) on ``port``, with ``key`` where given; ``known_hosts`` is the file of host keys
ssh checks and adds new ones to (default: the user's). ``python`` is the project's venv
interpreter on that server (default: the same path as this machine's). A server keeps its
nodes' part of a run directory at the same absolute path as here. ``weight`` is a server's
share of the nodes relative to the others (2: twice as many as a server of weight 1), for
servers of different sizes.

``containers: true`` runs every node in a Docker container on its server, as the
containernet backend does on one machine (our `DockerHost` on Cluster Edition's remote host,
limits from the scenario's ``containers:`` section). Every server with nodes then needs a
running Docker engine holding the node image of the code it runs (``bcfl image build`` on that
server, or ``docker save TAG | ssh SERVER docker load``); the preflight checks both.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from topologies.settings import Settings

LOCALHOST = "localhost"
ServerName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
# a host name (RFC 1123 labels) or a dotted IPv4 address; no user@, no port, no spaces
Address = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
        max_length=253,
    ),
]
AbsPath = Annotated[str, Field(pattern=r"^/[^\x00-\x1f]{0,4095}$")]
Tunnel = Literal["gre", "vxlan", "ssh"]
Placement = Literal["by-mec"]
TUNNELS: tuple[str, ...] = get_args(Tunnel)


class ServerSettings(Settings):
    """One server of the cluster."""

    name: ServerName
    address: Address
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"
    port: Annotated[int, Field(ge=1, le=65_535)] = 22
    key: AbsPath | None = None
    known_hosts: AbsPath | None = None
    python: AbsPath | None = None
    weight: Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)] = 1.0

    @property
    def is_local(self) -> bool:
        """Whether this server is the machine the orchestrator runs on."""
        return self.address == LOCALHOST

    @property
    def destination(self) -> str:
        """``user@address:port`` for messages."""
        return f"{self.user}@{self.address}:{self.port}"


class ClusterSection(Settings):
    """Servers, tunnels and placement of a multi-server run (empty: one machine).

    ``placement: by-mec`` puts each MEC with its devices on one server, largest group first
    onto the server with the least weighted load; the publisher and the first MEC stay on
    this machine (see `topologies.backends.cluster.placement`). ``place`` moves single
    daemons (not the publisher) to a named server on top of that.
    """

    servers: Annotated[list[ServerSettings], Field(max_length=256)] = Field(default_factory=list)
    tunnel: Tunnel = "gre"
    placement: Placement = "by-mec"
    place: Annotated[dict[str, ServerName], Field(max_length=100_000)] = Field(default_factory=dict)
    max_clock_skew_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 50.0
    ssh_timeout_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 15.0
    containers: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSection:
        names = [s.name for s in self.servers]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"servers: the name {name!r} is given twice; names are unique")
        where = [(s.address, s.port) for s in self.servers if not s.is_local]
        for address, port in where:
            if where.count((address, port)) > 1:
                raise ValueError(f"servers: {address}:{port} is given twice")
        if self.servers and sum(s.is_local for s in self.servers) != 1:
            raise ValueError(
                "servers: exactly one server is this machine (address: localhost): the "
                "orchestrator and the publisher run there"
            )
        for node, server in self.place.items():
            if server not in names:
                allowed = ", ".join(names) or "(no servers given)"
                raise ValueError(f"place.{node}: server {server!r} is not one of: {allowed}")
        return self

    def server(self, name: str) -> ServerSettings:
        """The server called `name`."""
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)
