"""The `mininet` backend: hosts with their own network stacks, Linux bridges, tc shaping,
node daemons forked into the hosts' namespaces. Needs root and Debian's `mininet`.

How it works
------------
`start_network` builds the spec into Mininet: every base station is a Linux bridge (no
controller), every daemon node a host; each physical link becomes a veth pair with our
interface names. Addresses and static routes come from `addressing.plan` (identity
addresses on loopback, one subnet per bridge, /30s for host-host links, /32 routes along
the spec's fewest-hops paths, forwarding on). Each directed link is shaped on its egress
interface with tc: HTB for bandwidth and, where the kernel has netem, a netem child for
delay, jitter and loss. Without netem the run is refused unless the delay mode is
``userspace``; then the nodes apply delay, jitter and loss themselves (bandwidth stays in
the kernel), and meta.json says which parameter was shaped where.

Daemons are forked by the `ForkServer` (torch imported once) and join their host's
namespace with setns before they open a socket. `stop` kills the daemons by PID, stops
any tcpdump, and has Mininet remove exactly the hosts, links and bridges it created; every
name starts with the run's token, which `clean` uses for leftovers of a crashed run.
Never `mn -c`: it kills by name and deletes /tmp/*.log machine-wide.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from topologies.backends.addressing import PORT, AddressPlan, plan, route_batch
from topologies.backends.base import Launch
from topologies.backends.tc import link_argv, shaping_plan
from topologies.spec import NodeKind, TopologySpec

log = logging.getLogger(__name__)

MININET_PATH = "/usr/lib/python3/dist-packages"
TOKEN_RE = re.compile(r"[a-z][a-z0-9]{2}")


class MininetUnavailable(RuntimeError):
    """Mininet cannot run here; the message says why and what to install or do."""


def import_mininet() -> Any:
    """Debian's mininet package (reached from a venv through its dist-packages path)."""
    if os.geteuid() != 0:
        raise MininetUnavailable("the mininet backend needs root (run bcfl as root)")
    if MININET_PATH not in sys.path:
        sys.path.append(MININET_PATH)
    try:
        import mininet.net
    except ImportError:
        raise MininetUnavailable(
            "Mininet is not installed: apt-get install mininet bridge-utils iputils-ping "
            "ethtool tcpdump"
        ) from None
    import mininet

    return mininet


def short_names(spec: TopologySpec, token: str) -> dict[str, str]:
    """Mininet names (<= 9 characters, so interfaces stay within Linux's 15)."""
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"run token {token!r} must match {TOKEN_RE.pattern}")
    out = {}
    for i, node in enumerate(spec.nodes):
        letter = "s" if node.kind == NodeKind.BS else "h"
        out[node.id] = f"{token}{letter}{i}"
    return out


class MininetBackend:
    """Runs a run's daemons inside Mininet hosts."""

    name = "mininet"

    def __init__(
        self, token: str, delay_mode: str, netem: bool, capture: list[str | list[str]]
    ) -> None:
        self.token = token
        self.delay_in_kernel = delay_mode == "kernel"
        if self.delay_in_kernel and not netem:
            raise MininetUnavailable("netem is not available on this kernel")
        self.shaping = "none" if self.delay_in_kernel else "userspace-delay"
        self.capture = capture
        self._net: Any = None
        self._plan: AddressPlan | None = None
        self._hosts: dict[str, Any] = {}
        self._server: Any = None
        self._pids: dict[str, int] = {}
        self._launches: dict[str, Launch] = {}
        self._dumps: list[subprocess.Popen[bytes]] = []
        self._spec: TopologySpec | None = None
        self._final: dict[int, int | None] = {}

    def endpoints(self, spec: TopologySpec) -> dict[str, str]:
        """Each daemon's identity address and the fixed port."""
        self._spec = spec
        self._plan = plan(spec, short_names(spec, self.token))
        return {nid: f"tcp://{addr}:{PORT}" for nid, addr in self._plan.identity.items()}

    def shaping_meta(self) -> dict[str, Any]:
        """Where each parameter of each link class is shaped."""
        assert self._spec is not None
        out: dict[str, Any] = {}
        for link in self._spec.links:
            out.setdefault(str(link.kind), shaping_plan(link, self.delay_in_kernel))
        return out

    def start_network(self) -> None:
        """Build and start the emulated network (hosts, bridges, links, addresses, tc)."""
        import_mininet()
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        assert self._plan is not None and self._spec is not None
        setLogLevel("warning")
        p, spec = self._plan, self._spec
        net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
        self._net = net
        nodes = {}
        for node in spec.nodes:
            name = p.short[node.id]
            if node.kind == NodeKind.BS:
                nodes[node.id] = self._add_switch(net, name)
            else:
                nodes[node.id] = self._hosts[node.id] = self._add_host(net, node.id, name)
        seen: set[frozenset[str]] = set()
        for link in spec.links:
            pair = frozenset((link.src, link.dst))
            if pair in seen:
                continue
            seen.add(pair)
            a, b = link.src, link.dst
            net.addLink(
                nodes[a],
                nodes[b],
                intfName1=p.iface[(a, b)].name,
                intfName2=p.iface[(b, a)].name,
            )
        net.build()
        for sw in net.switches:
            sw.start([])
        self._configure_hosts()
        self._shape()
        self._start_capture()

    def host(self, node_id: str) -> Any:
        """The Mininet host of a daemon node (after `start_network`)."""
        return self._hosts[node_id]

    def interface(self, a: str, b: str) -> str:
        """The name of a's interface on its link to b."""
        assert self._plan is not None
        return self._plan.iface[(a, b)].name

    def _add_switch(self, net: Any, name: str) -> Any:
        """A base station: a Linux bridge without a controller."""
        from mininet.nodelib import LinuxBridge

        return net.addSwitch(name, cls=LinuxBridge, stp=False)

    def _add_host(self, net: Any, node_id: str, name: str) -> Any:
        """A daemon node's host: a plain Mininet host (a shell in its own network namespace)."""
        return net.addHost(name, ip=None)

    def _configure_hosts(self) -> None:
        assert self._plan is not None
        with tempfile.TemporaryDirectory(prefix=f"{self.token}-") as tmp:
            for nid, host in self._hosts.items():
                script = Path(tmp) / f"{nid}.ip"
                script.write_text(route_batch(self._plan, nid))
                host.cmd("ip link set lo up")
                out = host.cmd(f"ip -batch {script} 2>&1; echo rc=$?")
                if not out.strip().endswith("rc=0"):
                    raise RuntimeError(f"configuring {nid} failed: {out.strip()}")
                keys = [
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ]
                keys += [
                    f"net.ipv4.conf.{i.name}.rp_filter=0"
                    for (o, _), i in self._plan.iface.items()
                    if o == nid
                ]
                host.cmd("sysctl -qw " + " ".join(keys))

    def _shape(self) -> None:
        assert self._plan is not None and self._spec is not None
        for link in self._spec.links:
            dev = self._plan.iface[(link.src, link.dst)].name
            for argv in link_argv(dev, link, self.delay_in_kernel):
                host = self._hosts.get(link.src)
                if host is None:  # a bridge port: the root namespace
                    subprocess.run(argv, check=True, capture_output=True)
                else:
                    out = host.cmd(" ".join(argv) + " 2>&1; echo rc=$?")
                    if not out.strip().endswith("rc=0"):
                        raise RuntimeError(f"tc on {dev} failed: {out.strip()}")

    def _capture_points(self) -> list[tuple[str, str, str]]:
        """(host node, interface or "any", pcap file stem) for each `capture` entry: a node id
        (all its interfaces) or a link [A, B] (A's interface on that link; B may be a BS)."""
        assert self._plan is not None
        points = []
        for entry in self.capture:
            if isinstance(entry, str):
                points.append((entry, "any", entry))
            else:
                a, b = entry
                if a not in self._hosts:
                    a, b = b, a
                points.append((a, self._plan.iface[(a, b)].name, f"{a}_{b}"))
        return points

    def _start_capture(self) -> None:
        assert self._plan is not None
        for nid, itf_name, _ in self._capture_points():
            host = self._hosts[nid]
            names = [i.name for (o, _), i in self._plan.iface.items() if o == nid]
            for name in names if itf_name == "any" else [itf_name]:
                host.cmd(f"ethtool -K {name} tx off rx off tso off gso off gro off")

    def start_capture_into(self, pcap_dir: Path) -> None:
        """Run tcpdump for each capture point into pcap_dir/STEM.pcap (wire-sized packets)."""
        for nid, itf_name, stem in self._capture_points():
            pcap_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                "tcpdump",
                "-i",
                itf_name,
                "-U",
                "-s",
                "256",
                "-w",
                str(pcap_dir / f"{stem}.pcap"),
            ]
            self._dumps.append(
                self._hosts[nid].popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def start(self, launches: list[Launch]) -> None:
        """Fork every daemon into its host's namespace."""
        from node.forkserver import ForkServer

        if self._server is None:
            self._server = ForkServer()
            self._server.start()
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)

    def _spawn(self, launch: Launch) -> None:
        host = self._hosts[launch.node_id]
        config = launch.argv[-1]
        self._pids[launch.node_id] = self._server.spawn(
            [config], netns=host.pid, log=str(launch.log_path)
        )

    def pids(self) -> dict[str, int]:
        """PIDs of the daemons."""
        return dict(self._pids)

    def poll(self) -> dict[str, int | None]:
        """Exit codes (None while running)."""
        status = self._server.poll() if self._server is not None else self._final
        return {nid: status.get(pid) for nid, pid in self._pids.items()}

    def kill(self, node_id: str, sig: int = signal.SIGKILL, wait_s: float | None = 10.0) -> None:
        """Signal one daemon (fault injection)."""
        self._server.kill(self._pids[node_id], sig)
        if wait_s is not None:
            _wait(lambda: self.poll()[node_id] is not None, wait_s)

    def restart(self, node_id: str) -> int:
        """Fork a dead daemon again into its host."""
        if self.poll()[node_id] is None:
            raise RuntimeError(f"{node_id} is still running")
        self._spawn(self._launches[node_id])
        return self._pids[node_id]

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Bring a link up or down (both ends)."""
        assert self._plan is not None
        for x, y in ((a, b), (b, a)):
            name = self._plan.iface[(x, y)].name
            host = self._hosts.get(x)
            cmd = ["ip", "link", "set", name, "up" if up else "down"]
            if host is None:
                subprocess.run(cmd, check=True, capture_output=True)
            else:
                host.cmd(" ".join(cmd))

    def stop(self, grace_s: float = 10.0) -> None:
        """Kill what this run started and remove its network."""
        if self._server is not None:
            running = [pid for pid, code in self._server.poll().items() if code is None]
            for pid in running:
                self._server.kill(pid, signal.SIGTERM)
            if not _wait(
                lambda: all(self._server.poll().get(p) is not None for p in running), grace_s
            ):
                for pid in running:
                    self._server.kill(pid, signal.SIGKILL)
                _wait(lambda: all(self._server.poll().get(p) is not None for p in running), 5)
            self._final = self._server.poll()
            self._server.stop()
            self._server = None
        for dump in self._dumps:
            dump.terminate()
            dump.wait(timeout=5)
        self._dumps = []
        if self._net is not None:
            self._net.stop()
            self._net = None


def _wait(done: Any, timeout_s: float) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if done():
            return True
        time.sleep(0.05)
    return bool(done())


def clean(token: str) -> list[str]:
    """Remove what a crashed run with `token` left: Mininet host shells (by the exact name
    in their command line), interfaces and bridges whose names start with the token."""
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"run token {token!r} must match {TOKEN_RE.pattern}")
    removed = []
    name_re = re.compile(rf"mininet:{token}[hs]\d+$")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and name_re.fullmatch(
            cmdline[-2].decode(errors="replace") if len(cmdline) > 1 else ""
        ):
            os.kill(int(pid_dir.name), signal.SIGKILL)
            removed.append(f"process {pid_dir.name}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(token) and re.fullmatch(rf"{token}[hs]\d+(-eth\d+)?", name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            removed.append(f"link {name}")
    return removed
