"""The node's control plane: a gRPC server on the Unix socket ``<node dir>/control.sock``.

How it works
------------
`ControlPlane.start` (called by the daemon once its transport is up, on the loop's thread)
serves `NodeControl` (``control.proto``) with a thread pool of WORKERS threads on a Unix
socket in the node's directory: it never crosses the emulated links and works alike in
network namespaces and containers. A socket path longer than MAX_UNIX_PATH bytes (the
kernel's sun_path) is reached through ``/proc/self/fd/N/control.sock``, N an ``O_PATH``
descriptor of the node's directory (`short_socket_path`; a client goes through a symlink of
its own: `orchestrator.control.client_target`).

The gRPC threads never touch the node's state:

* the loop thread calls `tick()` once per wake-up: it publishes a `Snapshot` (a frozen
  dataclass, swapped in by one assignment) at most every SNAPSHOT_S, and drains the command
  queue (``SetBehaviour``, ``Stop``, ``Start``), answering each through its own one-slot
  queue; a node with ``await_start`` waits for a command with `wait_command` before its role
  starts (no busy loop);
* ``Status`` answers from the latest snapshot; ``WatchMetrics`` reads a bounded queue of its
  own (WATCH_QUEUE records) that the loop fills from the node's metrics writer (`observe`:
  the writer's ``write`` is wrapped; records are encoded as JSON on the loop's thread only
  while someone watches); a full queue drops the record and counts it.

Mutating calls (``SetBehaviour``, ``Stop``, ``Start``) must carry the run's token
(``control_token`` in the node config) as metadata TOKEN_KEY, compared with
`hmac.compare_digest`; a wrong or missing token is refused with PERMISSION_DENIED, logged,
and counted by the loop as the drop ``control_refused`` (in the node's counters). ``Status``
and ``WatchMetrics`` are read-only and need no token (our choice: the socket lives in the
run's directory, and reading what the node writes to its metrics file anyway gives nothing
away). A behaviour is checked on the gRPC thread (`node.control.schedule.check_request`:
INVALID_ARGUMENT naming the field) and scheduled on the loop's. ``Stop`` ends the loop as
SIGTERM does (the counters are written).
``Start`` sets `started` (the daemon then starts its role; a second one answers
``already_started``). Until then a ``SetBehaviour`` takes effect at exactly its
``from_round`` (the role keeps no round yet: the orchestrator delivers a node's fault
schedule this way, then ``Start``). `close()` stops the server and removes the socket file.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from node.config import NodeConfig
from node.control import control_pb2 as pb
from node.control import control_pb2_grpc as pb_grpc
from node.control.schedule import BehaviourError, check_request, schedule
from node.metrics import MetricsWriter

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
TOKEN_KEY = "x-bcfl-token"
MAX_UNIX_PATH = 107
WORKERS = 2  # our choice: Status, a watcher and a command at once; a second watcher waits
WATCH_QUEUE = 1000
SNAPSHOT_S = 0.5
COMMAND_WAIT_S = 10.0
WATCH_POLL_S = 0.5
REFUSED = "control_refused"


def socket_path(node_dir: str | Path) -> Path:
    """Where a node's control socket is."""
    return Path(node_dir) / SOCKET_NAME


def short_socket_path(node_dir: str | Path) -> tuple[str, int | None]:
    """(a path to the node's socket that fits sun_path, the descriptor it holds open or None);
    the caller closes the descriptor once bound or connected... or keeps it while it needs
    the path. Long directories go through ``/proc/self/fd/N`` (Linux)."""
    path = str(socket_path(node_dir))
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        return path, None
    fd = os.open(node_dir, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{SOCKET_NAME}", fd


@dataclass(frozen=True)
class Snapshot:
    """What ``Status`` answers, as the loop last published it."""

    node_id: str
    role: str
    scheme: str
    round: int = -1
    chains: tuple[tuple[str, int, str], ...] = ()  # (chain id, height, head hash hex)
    view: int = -1
    peers: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    behaviour: str = ""


class NodeState(Protocol):
    """What the control plane reads of a daemon, on the loop's thread only."""

    node_id: str
    config: NodeConfig
    metrics: MetricsWriter

    def drop(self, reason: str, detail: str = "") -> None:
        """Count a refusal."""
        ...

    def stop(self) -> None:
        """End the loop."""
        ...


@dataclass
class _Command:
    kind: str  # "behaviour" | "stop" | "start"
    args: tuple[Any, ...] = ()
    reply: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(1))


class _Watcher:
    def __init__(self) -> None:
        self.records: queue.Queue[tuple[str, str] | None] = queue.Queue(WATCH_QUEUE)
        self.dropped = 0


class ControlPlane:
    """One node's control server; `tick`, `observe`, `close` on the loop's thread."""

    def __init__(
        self,
        node: NodeState,
        token: str,
        snapshot: Callable[[], Snapshot],
        workers: int = WORKERS,
    ) -> None:
        """`snapshot()`: builds the status on the loop's thread (called by `tick`)."""
        self._node = node
        self._token = token.encode()
        self._make_snapshot = snapshot
        self._workers = workers
        self.kind = str(node.config.topology.node(node.node_id).kind)
        self.path = socket_path(node.config.node_dir)
        self.snapshot = snapshot()
        self._next_snapshot = 0.0
        self._started = time.monotonic()
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._refusals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._watchers: list[_Watcher] = []
        self._watch_lock = threading.Lock()
        self.watch_dropped = 0
        self._server: grpc.Server | None = None
        self._closed = threading.Event()
        self._queued = threading.Event()  # set when a command or a refusal is queued
        self.started = threading.Event()  # set by ``Start`` (on the loop's thread)

    # -- the loop's side -----------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket and serve; wraps the node's metrics writer (`observe`)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="control"),
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1 << 16)],
        )
        pb_grpc.add_NodeControlServicer_to_server(_Servicer(self), server)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a killed earlier start of this node
        target, fd = short_socket_path(self.path.parent)
        try:
            if server.add_insecure_port(f"unix:{target}") == 0:
                raise OSError(f"cannot bind the control socket {self.path}")
            server.start()
        finally:
            if fd is not None:
                os.close(fd)
        self._server = server
        inner = self._node.metrics.write

        def write(event: str, **fields: Any) -> None:
            inner(event, **fields)
            self.observe(event, fields)

        self._node.metrics.write = write  # type: ignore[method-assign]
        log.info("control plane on %s", self.path)

    def observe(self, event: str, fields: dict[str, Any]) -> None:
        """Hand a metrics record to every watcher (encoded once; counted if one is full)."""
        if not self._watchers:
            return
        line = json.dumps(fields, default=_jsonable)
        with self._watch_lock:
            for w in self._watchers:
                try:
                    w.records.put_nowait((event, line))
                except queue.Full:
                    w.dropped += 1
                    self.watch_dropped += 1

    def before_start(self) -> bool:
        """True while a node with ``await_start`` has not had ``Start`` (any thread)."""
        return bool(getattr(self._node.config, "await_start", False)) and not self.started.is_set()

    def wait_command(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a queued command or refusal (`tick` runs them); True if
        one came. For the daemon's wait before ``Start``."""
        came = self._queued.wait(timeout_s)
        self._queued.clear()
        return came

    def tick(self, now: float | None = None) -> None:
        """Count refusals, run queued commands, publish the snapshot when due."""
        while True:
            try:
                self._node.drop(REFUSED, self._refusals.get_nowait())
            except queue.Empty:
                break
        ran = False
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            command.reply.put(self._run(command))
            ran = True
        now = time.monotonic() if now is None else now
        if ran or now >= self._next_snapshot:
            self._next_snapshot = now + SNAPSHOT_S
            self.snapshot = self._make_snapshot()

    def _run(self, command: _Command) -> Any:
        if command.kind == "stop":
            log.info("control: Stop")
            self._node.stop()
            return None
        if command.kind == "start":
            if self.started.is_set():
                return True
            log.info("control: Start")
            self._node.metrics.write("control_start")
            self.started.set()
            return False
        behaviour, params, from_round = command.args
        # before Start the role keeps no round: exactly from_round (the orchestrator's schedule)
        before = self.before_start()
        current = self.snapshot.round if self.snapshot.round >= 0 and not before else None
        start = schedule(self._node.config, behaviour, params, from_round, current)
        log.info("control: %s %s from round %d", behaviour, params, start)
        self._node.metrics.write(
            "control_behaviour", behaviour=behaviour, params=params, from_round=start
        )
        return start

    def close(self) -> None:
        """Stop serving (watchers end), remove the socket file."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._watch_lock:
            for w in self._watchers:
                with contextlib.suppress(queue.Full):
                    w.records.put_nowait(None)
        if self._server is not None:
            self._server.stop(grace=0.5).wait(2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- the gRPC threads' side ----------------------------------------------------------
    def authorised(self, context: grpc.ServicerContext, method: str) -> bool:
        """True if the call carries the run's token; else aborts it (PERMISSION_DENIED)."""
        given = dict(context.invocation_metadata()).get(TOKEN_KEY, "")
        token = given.encode() if isinstance(given, str) else bytes(given)
        if self._token and hmac.compare_digest(token, self._token):
            return True
        why = "missing token" if not token else "wrong token"
        log.warning("control: %s refused (%s)", method, why)
        self._refusals.put(f"{method}: {why}")
        self._queued.set()
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{TOKEN_KEY}: {why}")
        return False

    def command(self, context: grpc.ServicerContext, kind: str, *args: Any) -> Any:
        """Queue a command for the loop and wait for its answer."""
        if self._closed.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "the node is stopping")
        cmd = _Command(kind, args)
        self._commands.put(cmd)
        self._queued.set()
        try:
            return cmd.reply.get(timeout=COMMAND_WAIT_S)
        except queue.Empty:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the node's loop did not answer")

    def watch(self, context: grpc.ServicerContext) -> Iterator[pb.MetricRecord]:
        """The records written from now on, until the call ends or the node stops."""
        watcher = _Watcher()
        with self._watch_lock:
            self._watchers.append(watcher)
        try:
            while context.is_active() and not self._closed.is_set():
                try:
                    item = watcher.records.get(timeout=WATCH_POLL_S)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield pb.MetricRecord(event=item[0], fields_json=item[1])
        finally:
            with self._watch_lock:
                self._watchers.remove(watcher)

    def status(self) -> pb.NodeStatus:
        """The latest snapshot as a `NodeStatus`."""
        s = self.snapshot
        return pb.NodeStatus(
            node_id=s.node_id,
            role=s.role,
            scheme=s.scheme,
            round=s.round,
            chains=[pb.ChainStatus(chain_id=c, height=h, head=x) for c, h, x in s.chains],
            view=s.view,
            peers=s.peers,
            drops=s.drops,
            behaviour=s.behaviour,
            uptime_s=time.monotonic() - self._started,
            pid=os.getpid(),
            watchers_dropped=self.watch_dropped,
        )


class _Servicer(pb_grpc.NodeControlServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.NodeStatus:
        return self.plane.status()

    def WatchMetrics(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.MetricRecord]:
        return self.plane.watch(context)

    def SetBehaviour(
        self, request: pb.BehaviourRequest, context: grpc.ServicerContext
    ) -> pb.BehaviourReply:
        if not self.plane.authorised(context, "SetBehaviour"):
            return pb.BehaviourReply()
        try:
            args = check_request(
                self.plane.kind,
                request.behaviour,
                request.params_json,
                request.from_round,
                self.plane.before_start(),
            )
        except BehaviourError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        start = self.plane.command(context, "behaviour", *args)
        return pb.BehaviourReply(from_round=start, behaviour=args[0])

    def Stop(self, request: pb.StopRequest, context: grpc.ServicerContext) -> pb.StopReply:
        if self.plane.authorised(context, "Stop"):
            self.plane.command(context, "stop")
        return pb.StopReply()

    def Start(self, request: pb.StartRequest, context: grpc.ServicerContext) -> pb.StartReply:
        if not self.plane.authorised(context, "Start"):
            return pb.StartReply()
        return pb.StartReply(already_started=bool(self.plane.command(context, "start")))


def _jsonable(obj: object) -> object:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def snapshot_of(daemon: Any) -> Snapshot:
    """A daemon's `Snapshot` (on its loop's thread): the role's ``round`` and, where it runs
    PBFT, its validator's view are read where the roles keep them (our choice: duck-typed,
    ``role.round`` and ``role.validator.core.view``; -1 where a role has none)."""
    from node.roles.threats import active_behaviour

    config: NodeConfig = daemon.config
    role = daemon._role
    round_no = getattr(role, "round", None)
    round_no = round_no if isinstance(round_no, int) and not isinstance(round_no, bool) else -1
    core = getattr(getattr(role, "validator", None), "core", None)
    view = getattr(core, "view", -1)
    chains = tuple(
        (cid, handle.height, handle.head.hash.hex()) for cid, handle in daemon.chains.items()
    )
    behaviour = active_behaviour(config, round_no) if round_no >= 0 else None
    stats = daemon._transport.stats
    drops = dict(daemon.drops + stats.dropped)
    return Snapshot(
        node_id=config.node_id,
        role=str(daemon.me.kind),
        scheme=config.scheme,
        round=round_no,
        chains=chains,
        view=view if isinstance(view, int) else -1,
        peers=len(config.plan.peers),
        drops=drops,
        behaviour="" if behaviour is None else behaviour.name,
    )


def start_control(daemon: Any) -> ControlPlane | None:
    """The daemon's control plane, started (None: the config has no ``control_token``, or
    the socket cannot be bound: logged, the node runs without one)."""
    token = getattr(daemon.config, "control_token", None)  # (tests' stand-in configs)
    if not token:
        return None
    plane = ControlPlane(daemon, token, lambda: snapshot_of(daemon))
    try:
        plane.start()
    except (OSError, RuntimeError) as exc:
        log.error("no control plane: %s", exc)
        plane.close()
        return None
    return plane
