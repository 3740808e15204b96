"""A run's own Open vSwitch (user-space datapath) for the mininet backend's base stations.

How it works
------------
The kernel here has no Open vSwitch datapath and the Debian package's service is not
running (no systemd in CI), so a run with ``switch: ovs-user`` starts a private OVS:

1. a fresh database (``ovsdb-tool create`` from the installed vswitch schema) in a temp
   dir ``/tmp/bcfl-ovs-<token>-XXXX`` (short: it holds the unix sockets), served by its own
   ``ovsdb-server`` (socket ``db.sock``), then ``ovs-vswitchd`` connected to that socket;
   both are our children in their own session (Ctrl-C reaches only the orchestrator, which
   then stops them in order), with pidfiles and control sockets in the temp dir and log
   files in the run's output dir (``OUT/ovs/``) when one is given;
2. every ``ovs-vsctl`` names that database (``--db``) and gets a timeout, so nothing ever
   talks to the system's OVS or waits forever;
3. `add_bridges` creates all base stations in one transaction: ``datapath_type=netdev``
   (user space), ``fail_mode=standalone`` (a MAC-learning switch, no controller), in-band
   control off, and every port with a ``linux-noop`` QoS row, so that OVS never replaces
   the tc qdiscs that shape the bridge ports; then it checks that ovs-vswitchd opened every
   bridge and port (the transaction succeeds even when it did not);
4. `stop` deletes the bridges (OVS then removes their tap devices), sends SIGTERM to
   ovs-vswitchd and ovsdb-server by PID (SIGKILL after a grace period), deletes any bridge
   device still present by its exact name, and removes the temp dir. `clean` does the same
   for a crashed run from the pidfiles in ``/tmp/bcfl-ovs-<token>-*``, checking each PID's
   command line first.

One at a time: the netdev datapath's own device is always named ``ovs-netdev``, so a second
ovs-vswitchd in the same network namespace cannot create its bridges. `start` therefore
holds ``/run/lock/bcfl-ovs-user.lock`` (flock: released by the kernel if the run dies) and
refuses, naming the holder, while another run holds it or a process (any ovs-vswitchd with
a user-space datapath) holds the ``ovs-netdev`` tap open. A killed ovs-vswitchd leaves that
tap behind, persistent and unheld; `stop` and `clean` delete it then.

A user-space datapath forwards frames with AF_PACKET sockets and does not complete
checksums that a veth left to "hardware": hosts attached to such a bridge must turn tx
offload off (``ethtool -K IF tx off``; `TX_OFFLOAD_OFF`), which the backend does.

Why not Mininet's ``OVSSwitch(datapath="user", failMode="standalone", batch=True)``: with
``batch=True`` its ``start()`` only queues the ovs-vsctl command; the bridges are created by
``OVSSwitch.batchStartup``, which ``Mininet.start()`` calls but the backend (which starts
its switches itself) did not, so the network came up with no bridge at all and the daemons
waited for peers until their startup timeout. It also reaches the system's database
(``ovs-vsctl`` without ``--db``, waiting forever without ``-t``) and calls ``exit(1)`` in
``setup()`` when that database is not running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "openvswitch-switch"
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
SCHEMA_DIRS = ("/usr/share/openvswitch", "/usr/local/share/openvswitch")
DIR_PREFIX = "bcfl-ovs-"
TX_OFFLOAD_OFF = "tx off"  # ethtool -K IF tx off (tso and friends follow)
START_TIMEOUT_S = 20.0
VSCTL_TIMEOUT_S = 60
DAEMONS = ("ovs-vswitchd", "ovsdb-server")  # stop order
NETDEV_DEVICE = "ovs-netdev"  # the netdev datapath's tap device: one per network namespace
LOCK_PATH = Path("/run/lock/bcfl-ovs-user.lock")


class OVSUnavailable(RuntimeError):
    """Open vSwitch cannot be used here; the message says what to install."""


class OVSBusy(RuntimeError):
    """Another user-space Open vSwitch runs on this machine; the message names it."""


def find_schema() -> Path | None:
    """The installed ``vswitch.ovsschema``, or None."""
    for d in SCHEMA_DIRS:
        path = Path(d) / "vswitch.ovsschema"
        if path.is_file():
            return path
    return None


def missing_parts() -> list[str]:
    """What of Open vSwitch is missing here (empty when everything is installed)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if find_schema() is None:
        missing.append("vswitch.ovsschema")
    return missing


def check_installed() -> None:
    """Raise OVSUnavailable naming the package unless Open vSwitch is installed."""
    missing = missing_parts()
    if missing:
        raise OVSUnavailable(
            f"Open vSwitch is not installed (missing: {', '.join(missing)}): "
            f"apt-get install {PACKAGE}"
        )


class PrivateOVS:
    """One run's ovsdb-server and ovs-vswitchd, and the bridges it created on them."""

    def __init__(self, token: str, log_dir: Path | None = None) -> None:
        self.token = token
        self.log_dir = log_dir
        self.dir: Path | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bridges: list[str] = []
        self._lock_fd: int | None = None

    @property
    def db(self) -> str:
        """The database's ovs-vsctl address."""
        assert self.dir is not None
        return f"unix:{self.dir / 'db.sock'}"

    def env(self) -> dict[str, str]:
        """Environment that points OVS tools at this instance (for anything not using --db)."""
        assert self.dir is not None
        d = str(self.dir)
        return os.environ | {
            "OVS_RUNDIR": d,
            "OVS_DBDIR": d,
            "OVS_LOGDIR": str(self.log_dir or d),
            "OVS_SYSCONFDIR": d,
        }

    def pids(self) -> dict[str, int]:
        """Daemon name -> PID."""
        return {name: p.pid for name, p in self.procs.items()}

    def _log(self, name: str) -> Path:
        assert self.dir is not None
        return (self.log_dir or self.dir) / f"{name}.log"

    def start(self) -> None:
        """Create the database and start both daemons; raises RuntimeError with their log,
        OVSBusy when another user-space OVS runs on this machine."""
        check_installed()
        schema = find_schema()
        assert schema is not None
        self._take_lock()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.token}-"))
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        _run(["ovsdb-tool", "create", str(d / "conf.db"), str(schema)], self.env())
        self._spawn(
            "ovsdb-server",
            [str(d / "conf.db"), f"--remote=punix:{d / 'db.sock'}"],
            ready=lambda: (d / "db.sock").exists(),
        )
        self.vsctl("--no-wait", "init")
        self._spawn("ovs-vswitchd", [self.db], ready=lambda: (d / "ovs-vswitchd.ctl").exists())
        log.info("private Open vSwitch in %s: %s", d, self.pids())

    def _take_lock(self) -> None:
        """Hold LOCK_PATH for this instance's life (the kernel drops it if we die); raises
        OVSBusy as `busy_reason` says."""
        fd, reason = _lock()
        if fd is None:
            raise OVSBusy(reason)
        os.ftruncate(fd, 0)
        os.write(fd, f"run {self.token} (PID {os.getpid()})\n".encode())
        self._lock_fd = fd

    def _spawn(self, name: str, args: Sequence[str], ready: Callable[[], bool]) -> None:
        assert self.dir is not None
        argv = [
            name,
            *args,
            f"--pidfile={self.dir / name}.pid",
            f"--unixctl={self.dir / name}.ctl",
            f"--log-file={self._log(name)}",
            "--no-chdir",
            "-vconsole:off",
        ]
        with open(self._log(name).with_suffix(".stderr"), "wb") as err:
            self.procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=self.env(),
                start_new_session=True,
            )
        end = time.monotonic() + START_TIMEOUT_S
        while not ready():
            code = self.procs[name].poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with {code}: {self.log_tail(name)}")
            if time.monotonic() > end:
                raise RuntimeError(f"{name} not ready after {START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of a daemon's log and stderr, for error messages."""
        out = []
        for path in (self._log(name), self._log(name).with_suffix(".stderr")):
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(out) or "(no log)"

    def vsctl(self, *args: str, timeout_s: int = VSCTL_TIMEOUT_S) -> str:
        """Run ovs-vsctl against this instance; raises RuntimeError with its stderr."""
        argv = ["ovs-vsctl", f"--db={self.db}", f"--timeout={timeout_s}", *args]
        try:
            return _run(argv, self.env(), timeout_s + 5)
        except RuntimeError as exc:
            if "ovs-vswitchd" in self.procs:
                raise RuntimeError(
                    f"{exc}; ovs-vswitchd: {self.log_tail('ovs-vswitchd')}"
                ) from None
            raise

    def add_bridges(self, ports: Mapping[str, Sequence[str]]) -> None:
        """Create every bridge (name -> its ports) in one transaction, user-space datapath,
        standalone (no controller), OVS leaving the ports' tc qdiscs alone."""
        if not ports:
            return
        self.bridges += list(ports)
        self.vsctl(*bridge_args(ports))
        self.check_interfaces()

    def check_interfaces(self) -> None:
        """Raise RuntimeError naming each bridge or port ovs-vswitchd failed to open (the
        transaction itself succeeds even then)."""
        out = self.vsctl("--format=json", "--columns=name,ofport,error", "list", "Interface")
        bad = []
        for name, ofport, error in json.loads(out)["data"]:  # unset columns: ["set", []]
            if not isinstance(ofport, int) or ofport < 0 or isinstance(error, str):
                bad.append(f"{name} ({error if isinstance(error, str) else 'no OpenFlow port'})")
        if bad:
            raise RuntimeError(
                f"Open vSwitch could not open {', '.join(bad)}; ovs-vswitchd: "
                f"{self.log_tail('ovs-vswitchd')}"
            )

    def remove_bridges(self) -> None:
        """Delete this run's bridges from OVS (before their ports' veths go away); logs, never
        raises: stopping must go on."""
        alive = len(self.procs) == 2 and all(p.poll() is None for p in self.procs.values())
        if self.bridges and alive:
            dels = [a for b in self.bridges for a in ("--", "--if-exists", "del-br", b)]
            try:
                self.vsctl(*dels, timeout_s=10)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log.warning("deleting the OVS bridges failed: %s", exc)

    def stop(self, grace_s: float = 5.0) -> None:
        """Delete the bridges, stop both daemons by PID, remove leftovers and the temp dir."""
        self.remove_bridges()
        for name in DAEMONS:
            proc = self.procs.get(name)
            if proc is not None:
                _terminate(proc, grace_s)
        for bridge in self.bridges:  # a user-space bridge is a tap device while OVS runs
            if Path(f"/sys/class/net/{bridge}").exists():
                subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        if self.procs:
            _remove_orphan_netdev()  # left when ovs-vswitchd had to be killed
        self.bridges = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _lock() -> tuple[int | None, str]:
    """(the fd holding LOCK_PATH, "") or (None, why another user-space OVS is in the way)."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = LOCK_PATH.read_text().strip() or "another run"
        os.close(fd)
        return None, (
            f"{holder} holds {LOCK_PATH}: Open vSwitch's user-space datapath can run once per "
            f"machine (its device {NETDEV_DEVICE}); wait for that run or use switch: linux"
        )
    holder_pid = netdev_holder()
    if holder_pid is not None:
        os.close(fd)
        return None, (
            f"process {holder_pid} holds the device {NETDEV_DEVICE}: another Open vSwitch with "
            "a user-space datapath runs on this machine (a crashed run's: bcfl clean TOKEN; "
            "the system's: stop it); or use switch: linux"
        )
    return fd, ""


def netdev_holder() -> int | None:
    """The PID of a process holding the tap device NETDEV_DEVICE open (an ovs-vswitchd with
    a user-space datapath), or None. A persistent ``ovs-netdev`` that nobody holds (left by
    a killed ovs-vswitchd) is no obstacle: the next ovs-vswitchd attaches to it."""
    if not Path(f"/sys/class/net/{NETDEV_DEVICE}").exists():
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) != "/dev/net/tun":
                    continue
                info = (proc / "fdinfo" / fd.name).read_text()
            except OSError:
                continue
            if f"iff:\t{NETDEV_DEVICE}\n" in info:
                return int(proc.name)
    return None


def _remove_orphan_netdev() -> None:
    """Delete a persistent ``ovs-netdev`` tap that no process holds (a killed
    ovs-vswitchd's); one that is held belongs to a running OVS and stays."""
    if Path(f"/sys/class/net/{NETDEV_DEVICE}").exists() and netdev_holder() is None:
        subprocess.run(["ip", "link", "del", NETDEV_DEVICE], capture_output=True)


def busy_reason() -> str | None:
    """Why a private user-space OVS cannot start now, or None (a check: `start` locks)."""
    fd, reason = _lock()
    if fd is None:
        return reason
    os.close(fd)
    return None


def bridge_args(ports: Mapping[str, Sequence[str]]) -> list[str]:
    """ovs-vsctl arguments of one transaction creating every bridge (name -> its ports):
    user-space datapath, standalone, no in-band control, ports with a linux-noop QoS."""
    args = ["--", "--id=@noop", "create", "QoS", "type=linux-noop"]
    for bridge, names in ports.items():
        args += ["--", "add-br", bridge]
        args += ["--", "set", "Bridge", bridge, "datapath_type=netdev"]
        args += ["fail_mode=standalone", "other-config:disable-in-band=true"]
        for port in names:
            args += ["--", "add-port", bridge, port, "--", "set", "Port", port, "qos=@noop"]
    return args


def _run(argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 30.0) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, env=dict(env), timeout=timeout_s
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} {argv[1] if len(argv) > 1 else ''} ... failed "
            f"(exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc.stdout


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def clean(token: str) -> list[str]:
    """Stop a crashed run's private OVS: PIDs from its pidfiles (only when the process's
    command line names that run's dir), then remove the dir. Returns what was removed."""
    removed = []
    for d in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}{token}-*"):
        for name in DAEMONS:
            try:
                pid = int((d / f"{name}.pid").read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(d).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"{name} {pid}")
                _wait_gone(pid)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"dir {d}")
    if removed and Path(f"/sys/class/net/{NETDEV_DEVICE}").exists():
        _remove_orphan_netdev()
        if not Path(f"/sys/class/net/{NETDEV_DEVICE}").exists():
            removed.append(f"link {NETDEV_DEVICE}")
    return removed


def _wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    """Wait until `pid` has exited (a zombie counts: its files are closed)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)
