"""The `mininet-cluster` backend: one run's Mininet hosts, bridges and daemons spread over
several servers with Mininet Cluster Edition. Needs root here and on every server.

How it works
------------
`endpoints` places the topology (`placement.place`: each MEC with its devices, the publisher
here). `start_network` writes the run's ssh configuration (each server's port, user, key,
known hosts) and builds a `MininetCluster`: every daemon a host on its server, every base
station a Linux bridge on each server that has nodes of it (the parts joined by unshaped
trunk tunnels), every link a veth pair or, between servers, a tunnel of the scenario's kind
(`mnclasses`). Addresses, routes and tc shaping are the mininet backend's (`MininetBackend`),
each command run on the server its interface is on: a host's through its shell, a bridge
port's in its server's root namespace; a crossing link is shaped on its tunnel's two ends
like any other link, with what its tunnel adds to the delay (measured before tc) taken off
(`tunnel_delay`: in netem's delay and in the topology the nodes shape user-space delay with).
A fork server runs on every server (here a child process; elsewhere
``python -m node.forkserver --serve`` over ssh, the same JSON-lines protocol on its stdin and
stdout), so daemons are forked into their hosts' namespaces as in the mininet backend and
known by (server, PID).

`start` copies the run directory to every other server (the run-level files and the
directories of the nodes placed there, to the same absolute path), forwards each remote
node's control socket to the same path here (one ssh connection per server with a forward
per node), so `bcfl top`, `bcfl control` and the runner's start and stop reach every node
alike, then forks the daemons. `stop` stops every daemon, copies the remote nodes'
directories and captures back into the run directory, removes the forwards and has Mininet
remove everything it made on every server. With ``cluster.containers`` the nodes are Docker
containers on their servers instead (`containers.ClusterContainerBackend`, overriding the
host and daemon steps: `_add_host_on`, `prestart`, `start`, `_before_disconnect`).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from node.forkserver import SERVER_ENV, ForkServer
from topologies.backends import bridgefw
from topologies.backends.base import Launch
from topologies.backends.cluster.cleanup import ssh_dir_prefix
from topologies.backends.cluster.mnclasses import cluster_classes
from topologies.backends.cluster.placement import Placement, place
from topologies.backends.cluster.settings import LOCALHOST, ClusterSection, ServerSettings
from topologies.backends.cluster.tunnel_delay import (
    COUNT,
    INTERVAL_S,
    TunnelDelay,
    measure,
    subtract,
)
from topologies.backends.mininet import MininetBackend, import_mininet
from topologies.backends.ping import ping_rtts
from topologies.spec import LinkSpec, NodeKind, TopologySpec

log = logging.getLogger(__name__)

COPY_TIMEOUT_S = 600.0
TC_FROM_STDIN = "f=$(mktemp) && cat > $f && tc -batch $f 2>&1; r=$?; rm -f $f; echo rc=$r"
REMOTE_READY_TIMEOUT_S = 600.0  # a remote fork server imports torch (minutes in an emulated VM)


class ClusterBackend(MininetBackend):
    """Runs a run's daemons inside Mininet hosts on several servers."""

    name = "mininet-cluster"

    def __init__(
        self,
        token: str,
        delay_mode: str,
        netem: bool,
        capture: list[str | list[str]],
        cluster: ClusterSection,
        run_dir: Path,
        switch: str = "linux",
        log_dir: Path | None = None,
    ) -> None:
        """`cluster`: the scenario's section; `run_dir`: the run directory (the same path on
        every server)."""
        if switch != "linux":
            raise ValueError(f"switch: {switch!r}: the cluster backend has Linux bridges only")
        super().__init__(token, delay_mode, netem, capture, switch, log_dir)
        self.cluster = cluster
        self.run_dir = run_dir.resolve()
        self.placement: Placement | None = None
        self._ssh_dir = Path(tempfile.mkdtemp(prefix=ssh_dir_prefix(token)))
        self._ssh_config = self._ssh_dir / "config"
        self._servers: dict[str, ForkServer] = {}
        self._bridges: dict[tuple[str, str], Any] = {}  # (BS, server) -> its bridge there
        self._where: dict[str, str] = {}  # node id -> server name
        self._forwards: list[tuple[ServerSettings, str]] = []
        self._copied_to: set[str] = set()  # servers that got their part of the run directory
        self._final_by_server: dict[str, dict[int, int | None]] = {}
        self.preflight_lines: list[str] = []  # what the preflight said of each server
        self._remote_fw: list[bridgefw.BridgeForwarding] = []  # other servers' FORWARD rules
        self.tunnel_delays: list[TunnelDelay] = []  # each crossing link's, measured at start
        self._shaped: TopologySpec | None = None  # the topology less the tunnels' delay

    # --- placement and network -----------------------------------------------------------

    def endpoints(self, spec: TopologySpec) -> dict[str, str]:
        """Place the topology, then the mininet backend's addresses."""
        self.placement = place(spec, self.cluster)
        self._where = dict(self.placement.server_of)
        return super().endpoints(spec)

    def cluster_meta(self) -> dict[str, Any]:
        """What meta.json records of the cluster: servers, tunnel, placement, crossings."""
        assert self.placement is not None
        return {
            "preflight": self.preflight_lines,
            "servers": [s.model_dump() for s in self.cluster.servers],  # bcfl clean reads them
            "tunnel": self.cluster.tunnel,
            "placement": self.placement.server_of,
            "bs_servers": {bs: list(ss) for bs, ss in self.placement.bs_servers.items()},
            "crossing_links": [
                [link.src, link.dst, str(link.kind)] for link in self.placement.crossing
            ],
            "tunnel_delay": [d.to_dict() for d in self.tunnel_delays],
        }

    def _settings(self, name: str) -> ServerSettings:
        return self.cluster.server(name)

    def _mn_server(self, name: str) -> str:
        """The name Mininet Cluster Edition knows a server by: localhost or its address."""
        server = self._settings(name)
        return LOCALHOST if server.is_local else server.address

    def _write_ssh_config(self) -> None:
        lines = []
        for s in self.cluster.servers:
            if s.is_local:
                continue
            lines += [
                f"Host {s.address}",
                f"  Port {s.port}",
                f"  User {s.user}",
                "  BatchMode yes",
                "  StrictHostKeyChecking accept-new",
                "  ServerAliveInterval 15",
                "  LogLevel ERROR",
            ]
            if s.key is not None:
                lines += [f"  IdentityFile {s.key}", "  IdentitiesOnly yes"]
            if s.known_hosts is not None:
                lines.append(f"  UserKnownHostsFile {s.known_hosts}")
        self._ssh_config.write_text("\n".join(lines) + "\n")

    def _ssh(self, server: ServerSettings, *options: str) -> list[str]:
        """ssh to `server` through the run's master connection (made on first use)."""
        return [
            "ssh",
            "-F",
            str(self._ssh_config),
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._ssh_dir}/cm-%C",
            "-o",
            "ControlPersist=600",  # a master left by a killed run ends by itself
            *options,
            server.address,
        ]

    def _remote_bridge_forwarding(self, server: ServerSettings) -> bridgefw.BridgeForwarding:
        """`bridgefw.BridgeForwarding` whose commands, sysctls and tools are `server`'s."""

        def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*self._ssh(server), shlex.join(argv)],
                capture_output=True,
                text=True,
                timeout=COPY_TIMEOUT_S,
            )

        def answer(argv: list[str]) -> str | None:
            done = run(argv)
            return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

        return bridgefw.BridgeForwarding(
            self.token,
            f"{self.token}s",
            runner=run,
            sysctl=lambda name: answer(["cat", str(bridgefw.SYSCTL_DIR / name)]),
            which=lambda tool: answer(["sh", "-c", f"command -v {shlex.quote(tool)}"]),
        )

    def _remote(self, server: ServerSettings, script: str, stdin: bytes | None = None) -> str:
        """Run a shell script on a remote server; its output; RuntimeError on failure."""
        done = subprocess.run(
            [*self._ssh(server), script],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=COPY_TIMEOUT_S,
        )
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()[-400:]
            raise RuntimeError(f"on {server.name} ({server.destination}): {script[:80]}: {said}")
        return done.stdout.decode(errors="replace")

    def start_network(self) -> None:
        """Build and start the network on every server (hosts, bridges, links, tunnels,
        addresses, tc)."""
        import_mininet()
        from mininet.examples.cluster import MininetCluster
        from mininet.log import setLogLevel

        assert self._plan is not None and self._spec is not None and self.placement is not None
        self._write_ssh_config()
        self.prestart()
        setLogLevel("warning")
        p, spec, pl = self._plan, self._spec, self.placement
        classes = cluster_classes(
            str(self._ssh_config),
            self.cluster.tunnel,
            4096 * (zlib.crc32(self.token.encode()) % 4000),
        )
        self._start_bridge_forwarding()
        for remote in self.cluster.servers:  # the same on every server with bridge parts
            if not remote.is_local and any(remote.name in ss for ss in pl.bs_servers.values()):
                fw = self._remote_bridge_forwarding(remote)
                self._remote_fw.append(fw)
                fw.start()
        servers = [self._mn_server(s.name) for s in self.cluster.servers]
        net = MininetCluster(
            servers=servers,
            user="root",
            controller=None,
            host=classes.host,
            switch=classes.bridge,
            link=classes.link,
            precheck=False,
            build=False,
            autoSetMacs=False,
            waitConnected=False,
        )
        self._net = net
        for node in spec.of_kind(NodeKind.BS):
            parts = pl.bs_servers[node.id] or (
                next(s.name for s in self.cluster.servers if s.is_local),
            )
            for k, server in enumerate(parts):
                name = p.short[node.id] if k == 0 else f"{p.short[node.id]}p{k}"
                self._bridges[(node.id, server)] = net.addSwitch(
                    name, server=self._mn_server(server), user=self._settings(server).user
                )
        for node in spec.daemons():
            self._hosts[node.id] = self._add_host_on(
                net, classes.host, node.id, p.short[node.id], self._where[node.id]
            )
        for link in spec.physical_links():
            a, b = link.src, link.dst
            net.addLink(
                self._end(a, b),
                self._end(b, a),
                intfName1=p.iface[(a, b)].name,
                intfName2=p.iface[(b, a)].name,
            )
        for i, (bs, home, other) in enumerate(pl.trunks()):
            net.addLink(
                self._bridges[(bs, home)],
                self._bridges[(bs, other)],
                intfName1=f"{p.short[bs]}-t{i}a",
                intfName2=f"{p.short[bs]}-t{i}b",
            )
        net.build()
        for sw in net.switches:
            sw.start([])
        self._configure_hosts()
        self._subtract_tunnels()
        self._shape()
        self._start_capture()

    def _add_host_on(self, net: Any, cls: type, node_id: str, name: str, server: str) -> Any:
        """A daemon's Mininet host on its server (`cls`: the run's remote host class)."""
        return net.addHost(
            name, ip=None, server=self._mn_server(server), user=self._settings(server).user
        )

    def _subtract_tunnels(self) -> None:
        """Measure what each crossing link's tunnel adds (nothing is shaped yet), shape with
        the topology less it, and give the nodes that topology (the run's shared file, which
        `start` copies to every server)."""
        assert self._plan is not None and self._spec is not None and self.placement is not None
        here = next(s.name for s in self.cluster.servers if s.is_local)
        self.tunnel_delays = measure(
            self._spec,
            self.placement,
            here,
            lambda a, b: ping_rtts(self._hosts[a], self.address_on(b, a), COUNT, INTERVAL_S),
        )
        self._shaped = subtract(self._spec, self.tunnel_delays)
        for d in self.tunnel_delays:
            ref = "-".join(d.reference) if d.reference else "no link here"
            line = (
                f"tunnel {d.src}-{d.dst} ({d.kind}): adds {d.added_ms:.3f} ms one way (RTT "
                f"{d.rtt_ms:.3f} ms against {d.reference_rtt_ms:.3f} ms on {ref}, "
                f"spread ±{d.spread_ms:.3f}); shaped with {d.shaped_ms:.3f} of the configured "
                f"{d.configured_ms:.3f} ms"
            )
            if d.unreachable:
                log.warning("%s: the configured delay is below the tunnel's own", line)
            else:
                log.info("%s", line)
        shared = self.run_dir / "shared.json"
        if self.tunnel_delays and shared.exists():
            fields = json.loads(shared.read_text())
            fields["topology"] = self._shaped.to_dict()
            shared.write_text(json.dumps(fields))

    def _end(self, node: str, neighbour: str) -> Any:
        """The Mininet node at `node`'s end of its link to `neighbour`: a daemon's host, or a
        base station's bridge on the neighbour's server."""
        if node in self._hosts:
            return self._hosts[node]
        return self._bridges[(node, self._where[neighbour])]

    @property
    def shaped_topology(self) -> TopologySpec:
        """The topology tc and the nodes shape with: crossing links less what their tunnel
        adds (after `start_network`)."""
        assert self._spec is not None
        return self._shaped or self._spec

    def python_for(self, node: str) -> str:
        """The project's interpreter on the server `node` runs on."""
        server = self._settings(self._where[node])
        return sys.executable if server.is_local else (server.python or sys.executable)

    def write_for(self, node: str, tmp: Path, name: str, text: str) -> Path:
        """Write `tmp/name` on the server `node` runs on (the same path on every server)."""
        path = tmp / name
        server = self._settings(self._where[node])
        if server.is_local:
            path.write_text(text)
        else:
            self._remote(
                server,
                f"mkdir -p {shlex.quote(str(tmp))} && cat > {shlex.quote(str(path))}",
                text.encode(),
            )
        return path

    def _done_with(self, tmp: Path) -> None:
        """Remove the set-up scripts' copies on the other servers."""
        for server in self.cluster.servers:
            if not server.is_local:
                self._remote(server, f"rm -rf {shlex.quote(str(tmp))}")

    def _bridge_owner(self, link: LinkSpec) -> str:
        """A link leaving a base station leaves the bridge part on its other end's server."""
        return f"bridge:{self._where[link.dst]}"

    def _tc_on_bridges(self, owner: str, tmp: Path, text: str) -> str:
        """The bridge ports' tc batch in the root namespace of the server `owner` names."""
        server = self._settings(owner.split(":", 1)[1])
        if server.is_local:
            return super()._tc_on_bridges(owner, tmp, text)
        return self._remote(server, TC_FROM_STDIN, text.encode())

    def start_capture_into(self, pcap_dir: Path) -> None:
        """The mininet backend's captures; a remote host's tcpdump writes on its server (its
        pcaps come back with `stop`)."""
        for nid, _, _ in self._capture_points():
            server = self._settings(self._where[nid])
            if not server.is_local:
                self._remote(server, f"mkdir -p {shlex.quote(str(pcap_dir))}")
        super().start_capture_into(pcap_dir)

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Bring a link up or down (both ends, each on its server)."""
        assert self._plan is not None
        for x, y in ((a, b), (b, a)):
            name = self._plan.iface[(x, y)].name
            self._end(x, y).cmd(f"ip link set {name} {'up' if up else 'down'}")

    # --- daemons ------------------------------------------------------------------------------

    def prestart(self) -> None:
        """Launch a fork server on every server that has daemons (their imports overlap with
        the network's build)."""
        for server in self.cluster.servers:
            if server.name in self._servers or server.name not in set(self._where.values()):
                continue
            if server.is_local:
                fs = ForkServer()
            else:
                env = [f"{k}={v}" for k, v in SERVER_ENV.items()]
                python = server.python or sys.executable  # the preflight's default too
                words = ["env", *env, python, "-m", "node.forkserver", "--serve", "--kill-on-eof"]
                fs = ForkServer(
                    command=[*self._ssh(server), " ".join(shlex.quote(w) for w in words)],
                    ready_timeout_s=REMOTE_READY_TIMEOUT_S,
                )
            fs.launch()
            self._servers[server.name] = fs

    def start(self, launches: list[Launch]) -> None:
        """Copy the run directory out, forward the control sockets, fork every daemon."""
        from topologies.backends.local import preload_shared

        self.prestart()
        for fs in self._servers.values():
            if not fs.ready:
                fs.start()
        for name, own in self._ship(launches).items():
            preload_shared(self._servers[name], own)
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)

    def _ship(self, launches: list[Launch]) -> dict[str, list[Launch]]:
        """Copy the run directory to the other servers and forward their nodes' control
        sockets here; the launches by server."""
        by_server: dict[str, list[Launch]] = {}
        for launch in launches:
            by_server.setdefault(self._where[launch.node_id], []).append(launch)
        for name, own in by_server.items():
            server = self._settings(name)
            if not server.is_local:
                self._copy_out(server, [launch.node_id for launch in own])
                for launch in own:
                    sock = Path(launch.log_path).parent / "control.sock"
                    self._forwards.append((server, self._forward(server, sock)))
        return by_server

    def _copy_out(self, server: ServerSettings, node_ids: list[str]) -> None:
        """The run-level files and these nodes' directories, to the same path there."""
        run = self.run_dir
        names = [p.name for p in run.iterdir() if p.name not in ("nodes", "pcap")]
        names += [f"nodes/{nid}" for nid in node_ids if (run / "nodes" / nid).exists()]
        tar = subprocess.Popen(["tar", "-C", str(run), "-cf", "-", *names], stdout=subprocess.PIPE)
        quoted = shlex.quote(str(run))
        done = subprocess.run(
            [*self._ssh(server), f"mkdir -p {quoted} && tar -C {quoted} -xf -"],
            stdin=tar.stdout,
            capture_output=True,
            timeout=COPY_TIMEOUT_S,
        )
        tar.wait()
        self._copied_to.add(server.name)
        if done.returncode != 0 or tar.returncode != 0:
            said = done.stderr.decode(errors="replace")[-300:]
            raise RuntimeError(f"copying the run directory to {server.name} failed: {said}")

    def _copy_back(self, server: ServerSettings, node_ids: list[str]) -> None:
        """The remote nodes' directories and the captures made there, back into the run; then
        the server's copy of the run directory is removed (the runner refused a "remote"
        server that is this machine, so it is never the run directory itself)."""
        quoted = shlex.quote(str(self.run_dir))
        names = " ".join(shlex.quote(f"nodes/{nid}") for nid in node_ids)
        script = f"cd {quoted} && tar -cf - {names} $(test -d pcap && echo pcap) 2>/dev/null"
        get = subprocess.Popen([*self._ssh(server), script], stdout=subprocess.PIPE)
        done = subprocess.run(
            ["tar", "-C", str(self.run_dir), "-xf", "-"],
            stdin=get.stdout,
            capture_output=True,
            timeout=COPY_TIMEOUT_S,
        )
        get.wait()
        if done.returncode != 0 or get.returncode != 0:
            said = done.stderr.decode(errors="replace")[-300:]
            log.warning("copying back from %s failed (its copy is kept): %s", server.name, said)
            return
        self._remote(server, f"rm -rf {quoted}")

    def _forward(self, server: ServerSettings, sock: Path, remote: str | None = None) -> str:
        """Forward the unix socket `remote` (default: the same path as `sock`) on `server` to
        `sock` here, over the run's master connection; the forward's spec."""
        sock.unlink(missing_ok=True)
        spec = f"{sock}:{remote or sock}"
        subprocess.run(
            [*self._ssh(server, "-O", "forward", "-L", spec)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return spec

    def _cancel_forward(self, server: ServerSettings, spec: str) -> None:
        subprocess.run(
            [*self._ssh(server, "-O", "cancel", "-L", spec)], capture_output=True, timeout=30
        )
        Path(spec.split(":", 1)[0]).unlink(missing_ok=True)

    def _spawn(self, launch: Launch) -> None:
        host = self._hosts[launch.node_id]
        fs = self._servers[self._where[launch.node_id]]
        config = launch.argv[-1]
        self._pids[launch.node_id] = fs.spawn(
            [config], netns=host.pid, log=str(launch.log_path), seed=launch.seed
        )

    def pids(self) -> dict[str, int]:
        """PIDs of the daemons (each on its own server: meta.json's cluster placement)."""
        return dict(self._pids)

    def poll(self) -> dict[str, int | None]:
        """Exit codes (None while running), asked of every server's fork server (after
        `stop`: the codes they gave last)."""
        status = {name: fs.poll() for name, fs in self._servers.items() if fs.ready}
        status = {**self._final_by_server, **status}
        return {nid: status.get(self._where[nid], {}).get(pid) for nid, pid in self._pids.items()}

    def kill(self, node_id: str, sig: int = signal.SIGKILL, wait_s: float | None = 10.0) -> None:
        """Signal one daemon on its server (fault injection)."""
        self._servers[self._where[node_id]].kill(self._pids[node_id], sig)
        if wait_s is not None:
            end = time.monotonic() + wait_s
            while time.monotonic() < end and self.poll()[node_id] is None:
                time.sleep(0.05)

    def _stop_daemons(self, grace_s: float) -> None:
        """SIGTERM every running daemon on every server, SIGKILL what is left after grace_s."""
        final: dict[str, dict[int, int | None]] = {}
        for name, fs in list(self._servers.items()):
            if not fs.ready:
                fs.stop()
                continue
            running = [pid for pid, code in fs.poll().items() if code is None]
            for pid in running:
                fs.kill(pid, signal.SIGTERM)
            end = time.monotonic() + grace_s
            while time.monotonic() < end and any(fs.poll().get(p) is None for p in running):
                time.sleep(0.05)
            for pid in [p for p in running if fs.poll().get(p) is None]:
                fs.kill(pid, signal.SIGKILL)
            final[name] = fs.poll()
            fs.stop()
        self._servers = {}
        self._final_by_server = final

    def _collect(self) -> None:
        """Copy the remote nodes' directories and captures back, then cancel the control
        socket forwards."""
        for server in self.cluster.servers:
            own = [nid for nid, s in self._where.items() if s == server.name]
            if server.name in self._copied_to and own:
                try:
                    self._copy_back(server, own)
                except Exception as exc:
                    log.warning("copying back from %s failed: %s", server.name, exc)
        for server, spec in self._forwards:
            self._cancel_forward(server, spec)
        self._forwards = []

    def _before_disconnect(self) -> None:
        """What must still reach the other servers after the network is gone (nothing here)."""

    def _remove_network(self) -> None:
        """The mininet backend's removal (Mininet removes what it made on every server),
        then the other servers' FORWARD rules and the run's ssh connections."""
        try:
            super()._remove_network()
        finally:
            for fw in self._remote_fw:
                try:
                    fw.stop()
                except Exception as exc:  # bcfl clean removes a rule left over
                    log.warning("removing a remote FORWARD rule failed: %s", exc)
            self._remote_fw = []
            self._before_disconnect()
            for server in self.cluster.servers:
                if not server.is_local:
                    subprocess.run(
                        [*self._ssh(server, "-O", "exit")], capture_output=True, timeout=30
                    )
            shutil.rmtree(self._ssh_dir, ignore_errors=True)
