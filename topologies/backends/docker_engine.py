"""Talking to a Docker engine: the client, a private dockerd for tests and benchmarks, and
removal of a run's containers by label.

The containernet backend and `bcfl image build` use whatever engine `DOCKER_HOST` (or the
default socket) names. Tests and `bench/containers.py` start their own `PrivateDockerd`:
its own data root, exec root, socket and pidfile, no bridge and no iptables rules (nodes'
containers use `--network none`; Mininet gives them their interfaces), stopped by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

RUN_LABEL = "bcfl.run"


class DockerUnavailable(RuntimeError):
    """No Docker engine or client library; the message says what to install or start."""


def client() -> Any:
    """A docker-py client for DOCKER_HOST (or the default socket), checked with a ping."""
    try:
        from docker.client import DockerClient
    except ImportError:
        raise DockerUnavailable(
            "the Python Docker client is missing: pip install 'bcfl-testbed[containers]'"
        ) from None
    try:
        c = DockerClient.from_env(timeout=300)
        c.ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(
            f"no Docker engine answers at {where} ({type(exc).__name__}); start dockerd "
            "(apt-get install docker.io) or set DOCKER_HOST"
        ) from None
    return c


def remove_run_containers(token: str) -> list[str]:
    """Remove (force) every container of this run: labelled with its token (our hosts) or
    named `mn.TOKENh<i>` (the containernet package's hosts, which carry no label of ours).
    Without docker-py (another server of a cluster run may have only Docker's CLI) the
    `docker` command does it."""
    package_name = re.compile(rf"mn\.{re.escape(token)}h\d+")
    try:
        c = client()
    except DockerUnavailable:
        return _remove_with_cli(token, package_name)
    removed = []
    for container in c.containers.list(all=True):
        if container.labels.get(RUN_LABEL) == token or package_name.fullmatch(container.name):
            container.remove(force=True)
            removed.append(f"container {container.name}")
    return removed


def _remove_with_cli(token: str, package_name: re.Pattern[str]) -> list[str]:
    docker = _which("docker")
    if docker is None:
        return []
    fmt = '{{.ID}} {{.Names}} {{.Label "' + RUN_LABEL + '"}}'
    listed = subprocess.run(
        [docker, "ps", "-a", "--format", fmt], capture_output=True, text=True, timeout=120
    )
    if listed.returncode != 0:  # no engine answers: nothing of ours can be there
        return []
    removed = []
    for line in listed.stdout.splitlines():
        cid, name, label = [*line.split(), "", "", ""][:3]
        if (label == token or package_name.fullmatch(name)) and subprocess.run(
            [docker, "rm", "-f", cid], capture_output=True, timeout=300
        ).returncode == 0:
            removed.append(f"container {name}")
    return removed


class PrivateDockerd:
    """A dockerd of our own under `root`, reached at unix://ROOT/docker.sock."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.socket = self.root / "docker.sock"
        self.pidfile = self.root / "docker.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sysctls: dict[Path, str] = {}
        self._lock_fh: IO[str] | None = None

    @property
    def host(self) -> str:
        """The DOCKER_HOST value for this engine."""
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start dockerd and wait until it answers; raises DockerUnavailable otherwise."""
        if os.geteuid() != 0:
            raise DockerUnavailable("starting a private dockerd needs root")
        exe = _which("dockerd")
        if exe is None:
            raise DockerUnavailable("dockerd is not installed: apt-get install docker.io")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock(timeout_s=900.0)
        # A dockerd of ours that outlived its test session (kill -9): stop it by its pidfile.
        self._kill_stale()
        # dockerd turns on br_netfilter's bridge-nf-call-* (machine-wide); put them back on
        # stop, so later Linux-bridge runs see the machine as it was.
        self._sysctls = {
            f: f.read_text() for f in Path("/proc/sys/net/bridge").glob("bridge-nf-call-*")
        }
        log = (self.root / "dockerd.log").open("ab")
        argv = [
            exe,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--host", self.host,
            "--pidfile", str(self.pidfile),
            "--bridge", "none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise DockerUnavailable(
                    f"dockerd exited with {code}; see {self.root / 'dockerd.log'}"
                )
            if self.socket.exists() and self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise DockerUnavailable(f"dockerd did not answer within {timeout_s:.0f} s")

    def _lock(self, timeout_s: float) -> None:
        """Hold ROOT/lock while this engine runs: a second user of the same root (another
        test session) waits for it instead of killing its dockerd as a stale one."""
        self._lock_fh = (self.root / "lock").open("a+")
        end = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > end:
                    self._lock_fh.close()
                    raise DockerUnavailable(
                        f"{self.root} stayed in use by another dockerd of ours for "
                        f"{timeout_s:.0f} s"
                    ) from None
                time.sleep(1.0)

    def _answers(self) -> bool:
        from docker.client import DockerClient

        try:
            return bool(DockerClient(base_url=self.host, timeout=5).ping())
        except Exception:
            return False

    def _kill_stale(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"dockerd" in cmdline and str(self.root).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 20.0)

    def stop(self) -> None:
        """Stop dockerd by PID (SIGTERM, then SIGKILL after 20 s); release the root."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for path, value in self._sysctls.items():
            with contextlib.suppress(OSError):
                path.write_text(value)
        if self._lock_fh is not None:
            self._lock_fh.close()  # releases the lock
            self._lock_fh = None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _wait_gone(pid: int, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
