"""The `local` backend: one OS process per node on its own loopback address, no root.

Each daemon binds ``tcp://127.1.X.Y:PORT`` (Linux answers on all of 127.0.0.0/8, so every
node has its own address, which keeps captures and logs readable). Links are shaped in
user space by the nodes themselves (see `node.transport.shaping`).

Daemons are forked by a `node.forkserver.ForkServer` with no namespace to join: torch and
the `node` package are imported and warmed up once in the server, and every
daemon shares those pages copy-on-write instead of importing them itself. The server is
started with the launches' common environment (``PYTHONHASHSEED`` and the thread counts
cannot change after a process has started, so a launch asking for another environment is
refused), and each child is reseeded from its launch's seed (the scenario's seed and the node
id), never from its PID. When the node configs name a run's shared file (`node.runfiles`), the
server parses it once before forking and the daemons share the parsed topology. The server
and its children run in their own sessions, so the terminal's Ctrl-C reaches only the
orchestrator, which then stops the daemons by PID through the server and ends the server;
nothing is killed by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from node.forkserver import ForkServer, ForkServerError
from node.runfiles import shared_path_of
from topologies.backends.base import Launch
from topologies.spec import TopologySpec

log = logging.getLogger(__name__)

POLL_S = 0.05


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


def common_env(launches: list[Launch]) -> dict[str, str]:
    """The environment every launch asks for; ValueError when they differ (a forked child
    inherits its server's environment and cannot change e.g. ``PYTHONHASHSEED``)."""
    if not launches:
        return {}
    env = dict(launches[0].env)
    for launch in launches[1:]:
        if dict(launch.env) != env:
            raise ValueError(
                f"{launch.node_id}: environment {dict(launch.env)} differs from "
                f"{launches[0].node_id}'s {env}; the fork server gives every node the same one"
            )
    return env


def node_config_path(launch: Launch) -> str:
    """The config argument of a ``python -m node CONFIG`` launch; ValueError for any other."""
    argv = launch.argv
    if len(argv) != 4 or tuple(argv[1:3]) != ("-m", "node"):
        raise ValueError(
            f"{launch.node_id}: the fork server runs 'python -m node CONFIG' launches only, "
            f"not {list(argv)}"
        )
    return argv[3]


def preload_shared(server: ForkServer, launches: list[Launch]) -> None:
    """Have the server parse the run's shared file (if the configs name one) before forking,
    so that the daemons share the parsed topology instead of each parsing it."""
    path = shared_path_of(node_config_path(launches[0])) if launches else None
    if path is not None:
        log.info("fork server parsed %s in %.2f s", path, server.preload(path))


def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)  # polling the server for exit codes, not synchronising on time
    return True


class LocalBackend:
    """Forks every daemon from one fork server (a child process of the orchestrator)."""

    name = "local"

    def __init__(self, shaping: str = "userspace", log_dir: Path | None = None) -> None:
        """`log_dir`: where the fork server writes its own log (``forkserver.log``)."""
        self.shaping = shaping
        self.log_dir = log_dir
        self._server: ForkServer | None = None
        self._env: dict[str, str] | None = None
        self._pids: dict[str, int] = {}
        self._launches: dict[str, Launch] = {}
        self._final: dict[int, int | None] = {}
        self._last: dict[int, int | None] = {}  # the server's latest answer to `poll`

    @property
    def server_pid(self) -> int | None:
        """The fork server's PID while it runs."""
        return self._server.pid if self._server is not None else None

    def endpoints(self, spec: TopologySpec) -> dict[str, str]:
        """One loopback address and free port per daemon."""
        out = {}
        for i, node in enumerate(spec.daemons()):
            addr = loopback_address(i)
            out[node.id] = f"tcp://{addr}:{free_port(addr)}"
        return out

    def prestart(self, env: Mapping[str, str]) -> None:
        """Launch the fork server now, without waiting for its imports (they take seconds),
        so that they overlap with writing the run's files; `start` waits for it."""
        if self._server is None:
            self._env = dict(env)
            stderr = self.log_dir / "forkserver.log" if self.log_dir is not None else None
            self._server = ForkServer(stderr_path=stderr, env=self._env)
            self._server.launch()

    def start(self, launches: list[Launch]) -> None:
        """Start the fork server (raises ForkServerError if it cannot), then fork each daemon
        with its output in its log file."""
        env = common_env(launches) if launches else dict(self._env or {})
        for launch in launches:
            node_config_path(launch)
        if self._server is not None and not self._server.ready and env != self._env:
            self._server.stop()  # prestarted with another environment
            self._server = None
        self.prestart(env)
        server = self._server
        assert server is not None
        if not server.ready:
            try:
                server.start()  # raises ForkServerError (its import failed, ...) before any node
            except BaseException:
                self._server = None
                raise
        preload_shared(server, launches)
        for launch in launches:
            self._launches[launch.node_id] = launch
            self._spawn(launch)
        log.info("forked %d node processes", len(launches))

    def _spawn(self, launch: Launch) -> None:
        if self._server is None:
            raise ForkServerError("fork server is not started")
        if dict(launch.env) != self._env:
            raise ValueError(
                f"{launch.node_id}: environment {dict(launch.env)} differs from the fork "
                f"server's {self._env}"
            )
        self._pids[launch.node_id] = self._server.spawn(
            [node_config_path(launch)], log=launch.log_path, seed=launch.seed
        )

    def restart(self, node_id: str) -> int:
        """Fork a daemon again with its original launch (after it died); returns the new PID."""
        if self.poll()[node_id] is None:
            raise RuntimeError(f"{node_id} is still running (PID {self._pids[node_id]})")
        self._spawn(self._launches[node_id])
        return self._pids[node_id]

    def pids(self) -> dict[str, int]:
        """PIDs of the started daemons."""
        return dict(self._pids)

    def poll(self) -> dict[str, int | None]:
        """Exit codes (negative: killed by that signal; None while running)."""
        status: Mapping[int, int | None] = (
            self._server.poll() if self._server is not None else self._final
        )
        self._last = dict(status)
        return {nid: status.get(pid) for nid, pid in self._pids.items()}

    def kill(self, node_id: str, sig: int = signal.SIGKILL, wait_s: float | None = 10.0) -> None:
        """Send `sig` to one daemon (fault injection) and wait up to `wait_s` for it to exit."""
        if self._server is None:
            return
        self._server.kill(self._pids[node_id], sig)
        if wait_s is not None and not _wait(lambda: self.poll()[node_id] is not None, wait_s):
            raise TimeoutError(f"{node_id} (PID {self._pids[node_id]}) did not exit in {wait_s} s")

    def _stop_daemons(self, grace_s: float) -> None:
        server = self._server
        if server is None:
            return
        if not server.ready:  # its start failed, was interrupted, or never came
            server.stop()
            self._server = None
            return
        running = [pid for pid, code in server.poll().items() if code is None]
        for pid in running:
            server.kill(pid, signal.SIGTERM)

        def all_exited() -> bool:
            return all(server.poll().get(p) is not None for p in running)

        if not _wait(all_exited, grace_s):
            for pid in running:
                if server.kill(pid, signal.SIGKILL):
                    log.warning("node pid %d ignored SIGTERM; killed it", pid)
            _wait(all_exited, 5.0)
        self._final = server.poll()
        server.stop()
        self._server = None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every running daemon, SIGKILL those still alive after `grace_s`, then end
        the fork server; a failure (e.g. a server left mid-request by Ctrl-C) still ends it."""
        try:
            self._stop_daemons(grace_s)
        except Exception as exc:
            log.warning("stopping the daemons failed (%s); ending the fork server", exc)
            if self._server is not None:
                # not reaped by the server yet, so these PIDs cannot have been reused
                for pid in self._pids.values():
                    if self._last.get(pid, None) is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                self._server.stop(timeout_s=2.0)
                self._server = None
