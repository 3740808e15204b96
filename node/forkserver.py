"""A fork server: import torch once, then fork node daemons (optionally into network namespaces).

How it works
------------
`ForkServer.start()` launches ``python -m node.forkserver --serve`` as its own session (so a
Ctrl-C on the orchestrator's terminal does not reach it). The server, before anything else:

1. moves its protocol off fds 0/1 (stray prints from libraries then go to stderr, not into
   the protocol) and points fd 0 at /dev/null;
2. sets torch's intra-op and inter-op threads to 1 *before any torch op* (otherwise forked
   children deadlock in libgomp), imports torch, numpy, zmq (import only: the server never
   creates a ZeroMQ context) and every module of the `node` package; an ImportError ends the
   server loudly (unlike multiprocessing's forkserver preload, which swallows it);
3. warms torch up once (forward, backward and an SGD step of a small CNN and the MLP, through
   the nodes' own `train_local`, whose written-out SGD step does not pull in torch._dynamo
   and sympy as ``torch.optim``'s first step did: ~1.2 s of every run's start-up), then
   ``gc.collect(); gc.freeze()`` so that children share those pages copy-on-write instead of
   each paying for them;
4. says ``{"ready": true, ...}`` and serves JSON lines (one request, one reply; the
   orchestrator is the only client, and nothing is unpickled).

Requests and replies::

    {"op": "spawn", "argv": ["CONFIG.json"], "netns": PID | "/run/netns/NAME" | null,
     "log": "/path/stdout.log", "target": "node", "seed": INT | null}  -> {"pid": N}
    {"op": "status"}                                -> {"PID": exit code | null, ...}
    {"op": "kill", "pid": N, "sig": 9}              -> {"sent": true | false}
    {"op": "preload", "path": "RUN/shared.json"}    -> {"ok": true, "s": SECONDS}
    {"op": "stop"}                                  -> {"ok": true}, then the server exits
    anything wrong                                  -> {"error": "..."}

``preload`` parses a run's shared file (`node.runfiles`: endpoints, roster, topology, chain)
in the server and freezes it again, so children find it parsed and share it copy-on-write
instead of each parsing a 7 MB topology at 1,000 devices; it also builds what every node would
build identically (the chain config's genesis state and encoding, the roster's keys, the
topology's compact route index, the run's genesis store that new ledgers copy). Measured by
``bench/daemon_memory.py``: a device's private memory grows by ~0.5 KB per member of the run
(was ~10 KB: 1,000 devices cost each daemon ~10 MB more than 100 did).

Used by the local backend (``netns`` null, ``seed`` from the scenario's seed and the node id)
and the mininet backend (``netns`` the host's PID).

The server raises its soft RLIMIT_NOFILE to the hard limit first (`node.limits.raise_nofile`),
so every child starts with it (a publisher with 1,000 peers holds ~3,000 fds).

A spawned child: ``os.setsid()``; SIGINT back to Python's default (the server ignores it);
stdin from /dev/null, stdout and stderr appended to
``log``; joins ``netns`` with `setns_net` FIRST, before anything creates a socket (a socket
made earlier keeps sending from the root namespace); reseeds `random`, numpy and torch (fork
copies the RNG state) from ``seed`` or its PID; runs the target (``node``:
``node.__main__.main(argv)``; ``probe``, ``idle`` and ``idle_torch`` are built-in targets for
tests) and leaves with ``os._exit`` (no interpreter teardown). The server reaps children on
SIGCHLD (``waitpid(-1, WNOHANG)`` via a wakeup fd) and keeps their exit codes (negative: killed
by that signal). Children are the server's, not the client's, so only the server can wait
for them: poll through `ForkServer.poll`. ``stop`` leaves children running; ``kill`` sends a
signal only to a child this server forked and has not yet reaped (no PID-reuse accidents).
If the client goes away (EOF on the request pipe) the server exits too; with
``--kill-on-eof`` (a fork server on another server, over ssh) it SIGKILLs its running
children first, so a killed orchestrator leaves no daemon there.

Memory (measured by tests/emu/test_forkserver.py on the 2-core development machine): 10
``idle_torch`` children (small CNN built, one training step done) average 40.5 MB PSS and
331 MB RSS each, of which only ~12 MB is private; the rest is the server's torch pages shared
copy-on-write, so PSS falls toward that private part as children are added (DESIGN.md: 16-18
MB at 300 nodes), against ~145 MB PSS for a fresh ``python`` with torch. After `setns`,
/sys/class/net still shows the root namespace; `socket.if_nameindex()` (used by ``probe``)
shows the joined one.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
TARGETS = ("node", "probe", "idle", "idle_torch")
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0


# the server's environment (a remote server's `command` sets it with ``env``)
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


class ForkServerError(RuntimeError):
    """The fork server refused a request, died, or did not answer in time."""


def setns_net(target: int | str) -> None:
    """Move the calling thread into a network namespace: a PID's, or one given by path.

    Raises OSError (with errno) when the namespace cannot be opened or joined.
    """
    path = f"/proc/{target}/ns/net" if isinstance(target, int) else str(target)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


class ForkServer:
    """Client of one fork server process; each method is one request/reply round trip."""

    def __init__(
        self,
        stderr_path: Path | None = None,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        command: list[str] | None = None,
    ) -> None:
        """`stderr_path`: where the server's own diagnostics go (default: inherited stderr);
        `command`: what starts the server instead of this interpreter's ``-m node.forkserver
        --serve`` (e.g. that command over ssh on another server, its environment in it: `env`
        and PYTHONPATH apply to a local server only)."""
        self.stderr_path = stderr_path
        self.command = command
        self.env = env or {}
        self.ready_timeout_s = ready_timeout_s
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._owed = 0  # replies of requests interrupted (e.g. by Ctrl-C) before being read
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The server process's PID while it is started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def ready(self) -> bool:
        """Whether the server has preloaded and answers requests."""
        return self._proc is not None and bool(self.info.get("ready"))

    def launch(self) -> None:
        """Start the server process without waiting for its imports, so that they overlap
        with other start-up work (a Mininet build, writing node configs); `start` waits."""
        if self._proc is not None:
            raise ForkServerError("fork server already started")
        root = str(Path(__file__).resolve().parents[1])
        pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        env = {
            **os.environ,
            **SERVER_ENV,
            **self.env,
            "PYTHONPATH": pythonpath,
        }
        stderr: IO[bytes] | None = None
        if self.stderr_path is not None:
            stderr = self.stderr_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.command or [sys.executable, "-m", "node.forkserver", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        finally:
            if stderr is not None:
                stderr.close()

    def start(self) -> None:
        """Launch the server (unless `launch` did) and wait until it has preloaded and
        warmed up."""
        if self._proc is None:
            self.launch()
        elif self.ready:
            raise ForkServerError("fork server already started")
        assert self._proc is not None
        try:
            self.info = self._read_reply(self.ready_timeout_s)
        except BaseException:  # also Ctrl-C: a half-started server would answer out of turn
            self._terminate()
            raise
        if not self.info.get("ready"):
            info, self.info = self.info, {}
            self._terminate()
            raise ForkServerError(f"fork server did not start: {info}")
        log.info("fork server %d ready: %s", self._proc.pid, self.info)

    def spawn(
        self,
        argv: list[str],
        netns: int | str | Path | None = None,
        log: Path | str = os.devnull,
        target: str = "node",
        seed: int | None = None,
    ) -> int:
        """Fork a child running `target` with `argv`, in `netns` (PID or path) if given; its PID."""
        ns: int | str | None = str(netns) if isinstance(netns, Path) else netns
        reply = self._request(
            {
                "op": "spawn",
                "argv": [str(a) for a in argv],
                "netns": ns,
                "log": str(log),
                "target": target,
                "seed": seed,
            }
        )
        pid: int = reply["pid"]
        return pid

    def poll(self) -> dict[int, int | None]:
        """Every child's exit code (negative: killed by that signal), or None while it runs."""
        reply = self._request({"op": "status"})
        return {int(pid): code for pid, code in reply.items()}

    def preload(self, path: Path | str) -> float:
        """Parse a run's shared file in the server (children inherit it); seconds it took."""
        seconds: float = self._request({"op": "preload", "path": str(path)})["s"]
        return seconds

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> bool:
        """Signal a child of this server; False when it had already exited."""
        sent: bool = self._request({"op": "kill", "pid": pid, "sig": int(sig)})["sent"]
        return sent

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the server (its children keep running); idempotent."""
        if self._proc is None:
            return
        if not self.ready:  # launched, not (yet) answering: nothing to ask it
            self._terminate()
            return
        try:
            if self._proc.poll() is None:
                self._request({"op": "stop"})
                self._proc.wait(timeout_s)
        except (ForkServerError, subprocess.TimeoutExpired, OSError) as exc:
            log.warning("fork server did not stop cleanly (%s); terminating it", exc)
        finally:
            self._terminate()

    def __enter__(self) -> ForkServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        self._buf, self._owed, self.info = b"", 0, {}
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or not self.ready:
                raise ForkServerError("fork server is not started")
            while self._owed:  # skip the answers to interrupted requests
                self._read_reply(REQUEST_TIMEOUT_S)
                self._owed -= 1
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                raise ForkServerError(f"fork server exited ({proc.poll()})") from None
            self._owed += 1
            reply = self._read_reply(REQUEST_TIMEOUT_S)
            self._owed -= 1
        if "error" in reply:
            raise ForkServerError(f"{request.get('op')}: {reply['error']}")
        return reply

    def _read_reply(self, timeout_s: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ForkServerError(f"fork server gave no answer in {timeout_s:.0f} s")
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = proc.wait()
                    raise ForkServerError(f"fork server exited with code {code}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply


# --- built-in targets (run in a forked child; return the exit code) --------------------------


def _target_node(argv: list[str], log_path: str) -> int:
    from node.__main__ import main

    sys.argv = ["node", *argv]
    return main(argv)


def _target_probe(argv: list[str], log_path: str) -> int:
    """Write this process's network namespace and interface names as one JSON line."""
    import resource

    from node import runfiles

    record = {
        "pid": os.getpid(),
        "netns": os.readlink("/proc/self/ns/net"),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "runfiles": [key[0] for key in runfiles._CACHE],  # what the server preloaded
    }
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


def _pause_forever() -> int:
    while True:
        signal.pause()


def _target_idle(argv: list[str], log_path: str) -> int:
    """Say "ready" and wait for a signal (a namespace holder for tests)."""
    with open(log_path, "a") as f:
        f.write("ready\n")
    return _pause_forever()


def _target_idle_torch(argv: list[str], log_path: str) -> int:
    """Build the small CNN, take one training step, say "ready", wait for a signal."""
    import torch

    from node.learning.models import build_model

    _train_step(build_model("small-cnn", (1, 28, 28), 10, seed=1), torch)
    with open(log_path, "a") as f:
        f.write("ready\n")
    return _pause_forever()


_TARGETS: dict[str, Callable[[list[str], str], int]] = {
    "node": _target_node,
    "probe": _target_probe,
    "idle": _target_idle,
    "idle_torch": _target_idle_torch,
}


def _train_step(model: Any, torch: Any) -> None:
    """One SGD step of `model` on random 28x28 inputs, as a node trains (`train_local`)."""
    from node.learning.train import train_local

    x = torch.randn(8, 1, 28, 28).numpy()
    y = torch.randint(0, 10, (8,)).numpy()
    train_local(model, x, y, 1, 8, 0.01, seed=0)


# --- the server ------------------------------------------------------------------------------


def _preload() -> dict[str, Any]:
    """Import and warm up everything children will need; ImportError propagates."""
    import importlib
    import pkgutil

    started = time.monotonic()
    from node.learning.train import configure_torch_threads

    configure_torch_threads(1)  # before any torch op: else children deadlock in libgomp
    import numpy
    import torch
    import zmq  # import only: a context made here would be shared by every child

    import node

    modules = 0
    for info in pkgutil.walk_packages(node.__path__, "node."):
        if info.name != "node.forkserver":
            importlib.import_module(info.name)
            modules += 1
    importlib.import_module("node.__main__")  # nodes never import scikit-learn: not preloaded

    from node.learning.models import build_model

    for name in ("small-cnn", "mlp"):
        _train_step(build_model(name, (1, 28, 28), 10, seed=0), torch)
    _warm_learner(numpy)
    _warm_node()
    gc.collect()
    gc.freeze()
    return {
        "modules": modules,
        "preload_s": round(time.monotonic() - started, 3),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zmq": zmq.__version__,
    }


def _warm_learner(numpy: Any) -> None:
    """What a device's Learner does at start, once here: read .npy files, copy a model, and
    the node's own `train_local` and `evaluate` (their first call in each child cost ~2 MB of
    private memory more than after this warm-up: lazy set-up done once here is shared)."""
    import copy
    import tempfile

    from node.learning.models import build_model
    from node.learning.train import evaluate, train_local

    with tempfile.TemporaryDirectory(prefix="bcfl-forkserver-") as tmp:
        path = Path(tmp) / "x.npy"
        numpy.save(path, numpy.zeros((4, 1, 8, 8), numpy.float32))
        for mode in ("c", None):
            numpy.load(path, mmap_mode=mode, allow_pickle=False)
    x = numpy.zeros((4, 1, 8, 8), numpy.float32)
    y = numpy.arange(4, dtype=numpy.int64)
    for name in ("small-cnn", "mlp"):
        model = copy.deepcopy(build_model(name, (1, 8, 8), 10, seed=0))
        train_local(model, x, y, 1, 2, 1e-3, seed=0)
        evaluate(model, x, y)


def _warm_node() -> None:
    """A node's own paths once here, so that their lazy set-up is shared, not redone in each
    child: SQLite's library set-up (~0.7 MB per child), a signed message encoded and decoded,
    a block built, validated and appended to a ledger in a temporary directory."""
    import tempfile

    from node.codec import Codec
    from node.contracts.runtime import Genesis
    from node.core.finality import SingleWriter
    from node.keys import NodeKey, Roster
    from node.ledger.chain import Chain, ChainConfig
    from node.ledger.store import open_store

    keys = {nid: NodeKey.from_seed(bytes([i + 1]) * 32) for i, nid in enumerate(("a", "b"))}
    roster = Roster({nid: k.public_key for nid, k in keys.items()})
    frame = Codec("a", keys["a"], roster, 1 << 16).encode("hello", {"kind": "device"})
    Codec("b", keys["b"], roster, 1 << 16).decode(frame)
    members = {nid: (k.public_key, "device") for nid, k in keys.items()}
    config = ChainConfig(Genesis(members, {}, "warm-up"), SingleWriter(keys["a"].public_key))
    with tempfile.TemporaryDirectory(prefix="bcfl-forkserver-") as tmp:
        store = open_store(Path(tmp))
        try:
            chain = Chain(store, config)
            chain.append(chain.build((), keys["a"], timestamp_ms=1))
        finally:
            store.close()


class _Server:
    """The server loop: JSON-line requests on `fd_in`, replies on `fd_out`."""

    def __init__(self, fd_in: int, fd_out: int, kill_on_eof: bool = False) -> None:
        self.fd_in = fd_in
        self.kill_on_eof = kill_on_eof
        self.fd_out = fd_out
        self.children: dict[int, int | None] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._buf = b""
        self.selector: selectors.BaseSelector | None = None

    def send(self, reply: dict[str, Any]) -> None:
        data = json.dumps(reply).encode() + b"\n"
        while data:
            data = data[os.write(self.fd_out, data) :]

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children[pid] = os.waitstatus_to_exitcode(status)

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        with selectors.DefaultSelector() as sel:
            self.selector = sel
            sel.register(self.fd_in, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fd == self.wake_r:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self.wake_r, 4096):
                                pass
                        self.reap()
                        continue
                    chunk = os.read(self.fd_in, 65536)
                    if not chunk:
                        log.info("client went away; fork server exits")
                        if self.kill_on_eof:
                            self.kill_all()
                        return
                    self._buf += chunk
                    while b"\n" in self._buf:
                        line, self._buf = self._buf.split(b"\n", 1)
                        if not self.handle(line):
                            return

    def kill_all(self) -> None:
        """SIGKILL every child still running (``--kill-on-eof``: the client is gone)."""
        self.reap()
        for pid, code in self.children.items():
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                log.info("killed child %d: the client went away", pid)

    def handle(self, line: bytes) -> bool:
        """Answer one request; False when the server should stop."""
        self.reap()
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            op = request.get("op")
            if op == "spawn":
                self.send({"pid": self.spawn(request)})
            elif op == "status":
                self.send({str(pid): code for pid, code in self.children.items()})
            elif op == "kill":
                self.send({"sent": self.kill(request)})
            elif op == "preload":
                self.send({"ok": True, "s": self.preload(request)})
            elif op == "stop":
                self.send({"ok": True})
                return False
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError, KeyError, OSError) as exc:
            self.send({"error": f"{type(exc).__name__}: {exc}"})
        return True

    def preload(self, request: dict[str, Any]) -> float:
        path = request["path"]
        if not isinstance(path, str):
            raise TypeError("path must be a string")
        from node import runfiles

        started = time.monotonic()
        runfiles.load(path)
        gc.collect()
        gc.freeze()
        return round(time.monotonic() - started, 3)

    def kill(self, request: dict[str, Any]) -> bool:
        pid, sig = request["pid"], request.get("sig", signal.SIGTERM)
        if not isinstance(pid, int) or not isinstance(sig, int):
            raise TypeError("pid and sig must be integers")
        if pid not in self.children:
            raise ValueError(f"{pid} is not a child of this fork server")
        if self.children[pid] is not None:
            return False
        os.kill(pid, sig)
        return True

    def spawn(self, request: dict[str, Any]) -> int:
        argv, netns, target = request.get("argv", []), request.get("netns"), request["target"]
        log_path, seed = request.get("log") or os.devnull, request.get("seed")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a list of strings")
        if netns is not None and not isinstance(netns, int | str):
            raise TypeError("netns must be a PID, a path or null")
        if seed is not None and not isinstance(seed, int):
            raise TypeError("seed must be an integer or null")
        if target not in _TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
        fd_log = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(fd_log)
            raise
        if pid == 0:  # the child: never returns
            self._child(fd_log, argv, netns, target, str(log_path), seed)
        os.close(fd_log)
        self.children[pid] = None
        return pid

    def _child(
        self,
        fd_log: int,
        argv: list[str],
        netns: int | str | None,
        target: str,
        log_path: str,
        seed: int | None,
    ) -> None:
        code = 1
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the server ignores it
            if self.selector is not None:
                self.selector.close()
            for fd in (self.fd_in, self.fd_out, self.wake_r, self.wake_w):
                os.close(fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(fd_log, 1)
            os.dup2(fd_log, 2)
            os.close(fd_log)
            logging.root.handlers.clear()  # so the target's logging.basicConfig takes effect
            if netns is not None:
                setns_net(netns)  # FIRST: nothing may have made a socket before this
            _reseed(os.getpid() if seed is None else seed)
            code = _TARGETS[target](argv, log_path)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _reseed(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def serve(kill_on_eof: bool = False) -> int:
    """Run the server on fds 0 (requests) and 1 (replies); returns the exit code.
    `kill_on_eof`: when the client goes away, SIGKILL the children still running (a fork
    server on another server, whose client is an ssh connection: an orchestrator killed with
    -9 must not leave daemons running there)."""
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s forkserver: %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from node.limits import raise_nofile

    raise_nofile()  # children inherit it: a node with 1,000 peers holds ~3,000 fds
    server = _Server(fd_in, fd_out, kill_on_eof)
    try:
        info = _preload()
    except BaseException as exc:
        server.send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    server.send({"ready": True, "pid": os.getpid(), **info})
    server.serve()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] not in (["--serve"], ["--serve", "--kill-on-eof"]):
        sys.stderr.write("usage: python -m node.forkserver --serve [--kill-on-eof]\n")
        sys.exit(2)
    exit_code = serve(kill_on_eof=sys.argv[2:] == ["--kill-on-eof"])
    logging.shutdown()
    sys.stderr.flush()
    os._exit(exit_code)
