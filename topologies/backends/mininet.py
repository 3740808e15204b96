"""The `mininet` backend: hosts with their own network stacks, Linux bridges, tc shaping,
node daemons forked into the hosts' namespaces. Needs root and Debian's `mininet`.

How it works
------------
`start_network` builds the spec into Mininet: every base station is a switch, every daemon
node a host; each physical link becomes a veth pair with our interface names. Addresses
and static routes come from `addressing.plan` (identity addresses on loopback, one subnet
per bridge, /30s for host-host links, /32 routes along the spec's fewest-hops paths,
forwarding on). Each directed link is shaped on its egress
interface with tc: HTB for bandwidth and, where the kernel has netem, a netem child for
delay, jitter and loss. Without netem the run is refused unless the delay mode is
``userspace``; then the nodes apply delay, jitter and loss themselves (bandwidth stays in
the kernel), and meta.json says which parameter was shaped where. tc commands run as one
``tc -batch`` per host (and one for the bridge ports in the root namespace).

Switches (``switch`` in the scenario): ``linux`` (default) makes each base station a Linux
bridge without a controller; ``ovs-user`` makes it a bridge of Open vSwitch's user-space
datapath on a private ovsdb-server/ovs-vswitchd that the run starts and stops itself
(`topologies.backends.ovs`: standalone fail mode, all bridges in one transaction, OVS told
to leave the ports' qdiscs alone); the hosts' interfaces towards a bridge then get tx
offload off, since the user-space datapath does not complete offloaded checksums.

Daemons are forked by the `ForkServer` (torch imported once) and join their host's
namespace with setns before they open a socket. `stop` kills the daemons by PID, stops
any tcpdump, and has Mininet remove exactly the hosts, links and bridges it created; every
name starts with the run's token, which `clean` uses for leftovers of a crashed run.
Where Docker (or anyone) turned on br_netfilter, the Linux bridges get a FORWARD ACCEPT rule
tagged with the token (`topologies.backends.bridgefw`), removed by `stop` and by `clean`.
Never `mn -c`: it kills by name and deletes /tmp/*.log machine-wide.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from topologies.backends import bridgefw, ovs
from topologies.backends.addressing import PORT, AddressPlan, plan, route_batch
from topologies.backends.base import Launch
from topologies.backends.names import SWITCHES
from topologies.backends.tc import link_argv, shaping_plan
from topologies.spec import LinkSpec, NodeKind, TopologySpec

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
        self,
        token: str,
        delay_mode: str,
        netem: bool,
        capture: list[str | list[str]],
        switch: str = "linux",
        log_dir: Path | None = None,
    ) -> None:
        """`switch`: one of SWITCHES; `log_dir`: where a private OVS writes its logs."""
        if switch not in SWITCHES:
            raise ValueError(f"switch: {switch!r} is invalid; allowed: {', '.join(SWITCHES)}")
        if switch == "ovs-user":
            ovs.check_installed()
        self.token = token
        self.switch = switch
        self.log_dir = log_dir
        self.private_ovs: ovs.PrivateOVS | None = None
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
        self._bridge_fw: bridgefw.BridgeForwarding | None = None

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
        self.prestart()  # the fork server's imports overlap with the build
        setLogLevel("warning")
        p, spec = self._plan, self._spec
        if self.switch == "linux":
            self._start_bridge_forwarding()
        net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
        self._net = net
        nodes = {}
        for node in spec.nodes:
            name = p.short[node.id]
            if node.kind == NodeKind.BS:
                nodes[node.id] = self._add_switch(net, name)
            else:
                nodes[node.id] = self._hosts[node.id] = self._add_host(net, node.id, name)
        for link in spec.physical_links():
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
        if self.switch == "ovs-user":  # after the build: vswitchd would follow every new veth
            self.private_ovs = ovs.PrivateOVS(self.token, self.log_dir)
            self.private_ovs.start()
            bridges: dict[str, list[str]] = {p.short[n.id]: [] for n in spec.of_kind(NodeKind.BS)}
            for (owner, _), itf in p.iface.items():
                if p.short[owner] in bridges:
                    bridges[p.short[owner]].append(itf.name)
            self.private_ovs.add_bridges(bridges)
        self._configure_hosts()
        self._shape()
        self._start_capture()

    def _start_bridge_forwarding(self) -> None:
        """Docker's br_netfilter + FORWARD DROP must not matter: the run's rules here, and
        Mininet's warning about the sysctls they handle silenced."""
        self._bridge_fw = bridgefw.BridgeForwarding(self.token, f"{self.token}s")
        self._bridge_fw.start()
        mn_log = logging.getLogger("mininet")
        for old in [f for f in mn_log.filters if isinstance(f, bridgefw.HandledWarning)]:
            mn_log.removeFilter(old)
        mn_log.addFilter(bridgefw.HandledWarning(self._bridge_fw.added))

    def address_on(self, node: str, neighbour: str) -> str:
        """`node`'s address on its link towards `neighbour` (after `endpoints`)."""
        assert self._plan is not None
        return self._plan.address_on(node, neighbour)

    def host(self, node_id: str) -> Any:
        """The Mininet host of a daemon node (after `start_network`)."""
        return self._hosts[node_id]

    def interface(self, a: str, b: str) -> str:
        """The name of a's interface on its link to b."""
        assert self._plan is not None
        return self._plan.iface[(a, b)].name

    def _add_switch(self, net: Any, name: str) -> Any:
        """A base station: a Linux bridge without a controller, or (``ovs-user``) a node whose
        bridge `start_network` creates on the run's private Open vSwitch."""
        if self.switch == "ovs-user":
            return net.addSwitch(name, cls=_ovs_bridge_class())
        from mininet.nodelib import LinuxBridge

        return net.addSwitch(name, cls=LinuxBridge, stp=False)

    def _add_host(self, net: Any, node_id: str, name: str) -> Any:
        """A daemon node's host: a plain Mininet host (a shell in its own network namespace)."""
        return net.addHost(name, ip=None)

    def write_for(self, node: str, tmp: Path, name: str, text: str) -> Path:
        """Write the file `tmp/name` where `node`'s shell can read it (here: this machine;
        the cluster backend writes it on the node's server). Scripts go through files: a
        host's shell reads its commands from a terminal, whose line discipline cuts a line at
        4,095 bytes (a host's set-up at 1,000 devices is longer: a MEC with 100 backhaul links
        has an rp_filter key for each)."""
        path = tmp / name
        path.write_text(text)
        return path

    def _done_with(self, tmp: Path) -> None:
        """After the set-up scripts in `tmp` ran (the cluster backend removes its copies on
        the other servers; the temporary directory itself goes with its context)."""

    def _configure_hosts(self) -> None:
        """Per host, in one shell call: loopback up, the `ip -batch` of addresses and routes,
        forwarding sysctls and (``ovs-user``) tx offload off towards the bridges."""
        assert self._plan is not None
        with tempfile.TemporaryDirectory(prefix=f"{self.token}-") as tmp_name:
            tmp = Path(tmp_name)
            try:
                for nid, host in self._hosts.items():
                    routes = self.write_for(nid, tmp, f"{nid}.ip", route_batch(self._plan, nid))
                    path = self.write_for(nid, tmp, f"{nid}.sh", self._setup_script(nid, routes))
                    out = str(host.cmd(f"sh {path}"))
                    if not out.strip().endswith("rc=0"):
                        raise RuntimeError(f"configuring {nid} failed: {out.strip()}")
            finally:
                self._done_with(tmp)

    def _setup_script(self, nid: str, routes: Path) -> str:
        """The shell script that sets host `nid` up; it ends by printing ``rc=N``."""
        assert self._plan is not None
        bs = {n.id for n in self._plan.spec.of_kind(NodeKind.BS)}
        own = [(peer, i.name) for (o, peer), i in self._plan.iface.items() if o == nid]
        keys = [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]
        keys += [f"net.ipv4.conf.{name}.rp_filter=0" for _, name in own]
        cmd = f"ip link set lo up; ip -batch {routes} 2>&1; r=$?; "
        cmd += "sysctl -qw " + " ".join(keys) + "; "
        if self.switch == "ovs-user":
            for peer, name in own:
                if peer in bs:
                    cmd += f"ethtool -K {name} {ovs.TX_OFFLOAD_OFF} >/dev/null 2>&1 || r=$?; "
        return cmd + "echo rc=$r\n"

    @property
    def shaped_topology(self) -> TopologySpec:
        """The topology tc shapes (the cluster backend's: less what its tunnels add)."""
        assert self._spec is not None
        return self._spec

    def _bridge_owner(self, link: LinkSpec) -> str:
        """The key of the tc batch for a link leaving a bridge: one for all of them here
        (the root namespace); the cluster backend's, one per server."""
        return ""

    def _tc_on_bridges(self, owner: str, tmp: Path, text: str) -> str:
        """Run a bridge ports' tc batch; its output, ending in ``rc=N``."""
        script = tmp / "bridges.tc"
        script.write_text(text)
        proc = subprocess.run(["tc", "-batch", str(script)], capture_output=True, text=True)
        return f"{proc.stdout}{proc.stderr}rc={proc.returncode}"

    def _shape(self) -> None:
        """Shape every directed link on its egress interface: one ``tc -batch`` per host,
        and one for the bridge ports (they live in the root namespace)."""
        assert self._plan is not None
        batches = tc_batches(
            self.shaped_topology, self._plan, self.delay_in_kernel, self._bridge_owner
        )
        with tempfile.TemporaryDirectory(prefix=f"{self.token}-") as tmp_name:
            tmp = Path(tmp_name)
            try:
                for owner, text in batches.items():
                    host = self._hosts.get(owner)
                    if host is None:
                        out = self._tc_on_bridges(owner, tmp, text)
                    else:
                        path = self.write_for(owner, tmp, f"{owner}.tc", text)
                        out = str(host.cmd(f"tc -batch {path} 2>&1; echo rc=$?"))
                    if not out.strip().endswith("rc=0"):
                        raise RuntimeError(f"tc on {owner or 'the bridges'} failed: {out.strip()}")
            finally:
                self._done_with(tmp)

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
        """Run tcpdump for each capture point into pcap_dir/STEM.pcap (whole packets)."""
        for nid, itf_name, stem in self._capture_points():
            pcap_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                "tcpdump",
                "-i",
                itf_name,
                "-U",
                # Every packet handed over at once: with the default buffering (TPACKET_V3
                # blocks) the last second of traffic was still in the kernel ring when `stop`
                # ended tcpdump, and was never written.
                "--immediate-mode",
                # Whole packets (`bcfl pcap latency` finds ZMTP frame headers and bcfl
                # envelopes, which can start anywhere in a TCP segment; a 256-byte snaplen lost
                # most of them): 65,600 bytes hold the largest IP packet and its link header
                # (offloads are off on captured interfaces, so none is larger). Not -s 0: the
                # immediate mode's ring has one slot per snaplen, and 256 KiB slots in the
                # default 2 MiB buffer dropped packets. 32 MiB: about 490 slots.
                "-s",
                "65600",
                "-B",
                "32768",
                "-w",
                str(pcap_dir / f"{stem}.pcap"),
            ]
            self._dumps.append(
                self._hosts[nid].popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def prestart(self) -> None:
        """Launch the fork server without waiting for its imports (they overlap with the
        network's build; `start` waits for it)."""
        from node.forkserver import ForkServer

        if self._server is None:
            self._server = ForkServer()
            self._server.launch()

    def start(self, launches: list[Launch]) -> None:
        """Fork every daemon into its host's namespace."""
        from topologies.backends.local import preload_shared

        self.prestart()
        if not self._server.ready:
            try:
                self._server.start()
            except BaseException:
                self._server = None
                raise
        preload_shared(self._server, launches)
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)

    def _spawn(self, launch: Launch) -> None:
        host = self._hosts[launch.node_id]
        config = launch.argv[-1]
        self._pids[launch.node_id] = self._server.spawn(
            [config], netns=host.pid, log=str(launch.log_path), seed=launch.seed
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

    def _stop_daemons(self, grace_s: float) -> None:
        """SIGTERM every running daemon, SIGKILL what is left after grace_s."""
        if self._server is not None and not self._server.ready:  # never started or interrupted
            self._server.stop()
            self._server = None
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

    def stop(self, grace_s: float = 10.0) -> None:
        """Kill what this run started and remove its network; a failure in one step (e.g. a
        fork server left mid-request by Ctrl-C) is logged and the later steps still run."""
        try:
            self._stop_daemons(grace_s)
        except Exception as exc:
            log.warning("stopping the daemons failed (%s); removing the network anyway", exc)
            if self._server is not None:
                self._server.stop(timeout_s=2.0)
                self._server = None
        for dump in self._dumps:
            dump.terminate()
            dump.wait(timeout=5)
        self._dumps = []
        self._collect()
        self._remove_network()

    def _collect(self) -> None:
        """What must happen after the daemons and captures stopped and before the network
        goes (nothing here; the cluster backend copies the remote directories back)."""

    def _remove_network(self) -> None:
        """Remove the hosts, links and bridges, the private Open vSwitch and the run's
        FORWARD rules (these even when Mininet's removal fails)."""
        try:
            if self.private_ovs is not None:
                self.private_ovs.remove_bridges()
            if self._net is not None:
                self._net.stop()
                self._net = None
        finally:
            if self.private_ovs is not None:
                self.private_ovs.stop()
                self.private_ovs = None
            if self._bridge_fw is not None:
                self._bridge_fw.stop()
                self._bridge_fw = None


def run_script(host: Any, script: str, path: Path) -> str:
    """Run `script` in a Mininet host's shell through the file `path` (see
    `MininetBackend.write_for`: a terminal line holds 4,095 bytes)."""
    path.write_text(script + "\n")
    return str(host.cmd(f"sh {path}"))


def tc_batches(
    spec: TopologySpec,
    p: AddressPlan,
    delay_in_kernel: bool,
    bridge_owner: Callable[[LinkSpec], str] = lambda _link: "",
) -> dict[str, str]:
    """A ``tc -batch`` script per daemon node with the tc commands of the links leaving it,
    and for the links leaving the bridges one per `bridge_owner` key (default ``""``: all of
    them, the root namespace)."""
    out: dict[str, list[str]] = {}
    daemons = {n.id for n in spec.daemons()}
    for link in spec.links:
        dev = p.iface[(link.src, link.dst)].name
        owner = link.src if link.src in daemons else bridge_owner(link)
        for argv in link_argv(dev, link, delay_in_kernel):
            assert argv[0] == "tc"
            out.setdefault(owner, []).append(" ".join(argv[1:]))
    return {owner: "\n".join(lines) + "\n" for owner, lines in out.items()}


@functools.cache
def _ovs_bridge_class() -> type:
    """The Mininet node class of an ``ovs-user`` base station: a switch in the root namespace
    whose bridge `ovs.PrivateOVS.add_bridges` creates (all bridges in one transaction)."""
    from mininet.node import Switch

    class OVSUserBridge(Switch):
        """A bridge on the run's private Open vSwitch (user-space datapath, standalone)."""

        def start(self, controllers: list[Any]) -> None:
            """Nothing to do: the backend creates every bridge at once."""

        def connected(self) -> bool:
            """A standalone bridge forwards at once."""
            return True

    return OVSUserBridge


def _wait(done: Any, timeout_s: float) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if done():
            return True
        time.sleep(0.05)
    return bool(done())


def process_cmdlines() -> Iterator[tuple[int, list[bytes]]]:
    """(PID, command line split at NULs) of every process that can be read."""
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0]:
                yield int(pid_dir.name), cmdline


def clean(token: str) -> list[str]:
    """Remove what a crashed run with `token` left: Mininet host shells (by the exact name
    in their command line), interfaces and bridges whose names start with the token, and a
    private Open vSwitch (``switch: ovs-user``) by the PIDs in its pidfiles."""
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"run token {token!r} must match {TOKEN_RE.pattern}")
    removed = ovs.clean(token) + bridgefw.clean(token)
    name_re = re.compile(rf"mininet:{token}[hs]\d+(p\d+)?$")
    for pid, cmdline in process_cmdlines():
        if name_re.fullmatch(cmdline[-2].decode(errors="replace") if len(cmdline) > 1 else ""):
            os.kill(pid, signal.SIGKILL)
            removed.append(f"process {pid}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        # pN: a base station's bridge on another server, -tNa/-tNb: the trunks between them
        # (the mininet-cluster backend)
        pattern = rf"{token}[hs]\d+(p\d+)?(-eth\d+|-t\d+[ab])?"
        if name.startswith(token) and re.fullmatch(pattern, name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            removed.append(f"link {name}")
    return removed
