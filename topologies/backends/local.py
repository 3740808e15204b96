"""The `local` backend: one OS process per node on its own loopback address, no root.

Each daemon binds ``tcp://127.1.X.Y:PORT`` (Linux answers on all of 127.0.0.0/8, so every
node has its own address, which keeps captures and logs readable). Links are shaped in
user space by the nodes themselves (see `node.transport.shaping`). Processes are started
in their own session so the terminal's Ctrl-C reaches only the orchestrator, which then
stops them by PID; nothing is killed by name.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time

from topologies.backends.base import Launch
from topologies.spec import TopologySpec

log = logging.getLogger(__name__)


def loopback_address(index: int) -> str:
    """The loopback address of the `index`-th daemon (127.1.0.1, 127.1.0.2, ...)."""
    if not 0 <= index < 250 * 250:
        raise ValueError(f"node index {index} out of range for loopback addresses")
    return f"127.1.{index // 250}.{index % 250 + 1}"


def free_port(address: str) -> int:
    """A TCP port that is free on `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


class LocalBackend:
    """Runs every daemon as a child process of the orchestrator."""

    name = "local"

    def __init__(self, shaping: str = "userspace") -> None:
        self.shaping = shaping
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._launches: dict[str, Launch] = {}

    def endpoints(self, spec: TopologySpec) -> dict[str, str]:
        """One loopback address and free port per daemon."""
        out = {}
        for i, node in enumerate(spec.daemons()):
            addr = loopback_address(i)
            out[node.id] = f"tcp://{addr}:{free_port(addr)}"
        return out

    def start(self, launches: list[Launch]) -> None:
        """Start each daemon with its output in its log file."""
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)
        log.info("started %d node processes", len(launches))

    def _spawn(self, launch: Launch) -> None:
        env = {**os.environ, **launch.env}
        with launch.log_path.open("ab") as out:
            self._procs[launch.node_id] = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def restart(self, node_id: str) -> int:
        """Start a daemon again with its original launch (after it died); returns the new PID."""
        proc = self._procs[node_id]
        if proc.poll() is None:
            raise RuntimeError(f"{node_id} is still running (PID {proc.pid})")
        self._spawn(self._launches[node_id])
        return self._procs[node_id].pid

    def pids(self) -> dict[str, int]:
        """PIDs of the started daemons."""
        return {nid: p.pid for nid, p in self._procs.items()}

    def poll(self) -> dict[str, int | None]:
        """Exit codes (None while running)."""
        return {nid: p.poll() for nid, p in self._procs.items()}

    def kill(self, node_id: str, sig: int = signal.SIGKILL, wait_s: float | None = 10.0) -> None:
        """Send `sig` to one daemon (fault injection) and wait up to `wait_s` for it to exit."""
        proc = self._procs[node_id]
        if proc.poll() is None:
            proc.send_signal(sig)
            if wait_s is not None:
                proc.wait(timeout=wait_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every running daemon, SIGKILL those still alive after `grace_s`."""
        running = [p for p in self._procs.values() if p.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in running:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("node pid %d ignored SIGTERM; killing it", p.pid)
                p.kill()
                p.wait()
