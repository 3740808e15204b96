"""The orchestrator's client of the nodes' control plane, and ``bcfl control``.

How it works
------------
`NodeClient(run_dir, node_id)` talks gRPC to ``RUN_DIR/nodes/<id>/control.sock``
(`node.control.server`), through ``/proc/self/fd/N`` when the path is too long for a Unix
socket address. The mutating calls carry the run's token, read from ``RUN_DIR/control.token``
(written by the runner, mode 0600) as metadata ``x-bcfl-token``. Every failure is a
`ControlError` with a one-line message (``gone``: no socket; gRPC's status code otherwise).

`deliver_schedule` is how the runner drives the fault schedule (nodes started with
``await_start``): it waits for the node's socket to answer (`NodeClient.wait_ready`: gRPC's
wait-for-ready with a short reconnect back-off, in slices so that an abort is seen), sends
each of the node's ``malicious``/``recover`` entries in round order with ``SetBehaviour``,
then ``Start``.

``bcfl control RUN_DIR NODE status|stop|malicious BEHAVIOUR [--param K=V ...]
[--from-round R]|recover [--from-round R]`` steers a live run. A ``--param`` value is read as
JSON where it parses (``3``, ``0.5``, ``true``, ``[1,2]``), else taken as a string.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from node.control import control_pb2 as pb
from node.control import control_pb2_grpc as pb_grpc
from node.control.server import MAX_UNIX_PATH, SOCKET_NAME, TOKEN_KEY, socket_path

TOKEN_FILE = "control.token"
TIMEOUT_S = 5.0
READY_SLICE_S = 1.0  # wait_ready checks its abort event this often
# a node's socket appears when its control plane binds: retry connecting soon (gRPC's default
# back-off starts at 1 s and grows to 120 s)
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    # a channel's connections are its own: gRPC's global pool shares a connection between
    # channels of the same target string, so one node's call could go to another's socket
    ("grpc.use_local_subchannel_pool", 1),
)
_LINKS_LOCK = threading.Lock()
_links_dir: Path | None = None


def client_target(node_dir: Path) -> str:
    """The gRPC target of a node's control socket. A path too long for sun_path goes through
    a symlink to the node's directory in this process's own temporary directory, named by
    the directory's hash, so every node has a target of its own for the process's life (a
    ``/proc/self/fd/N`` path, as the node binds with, names whatever N is open as when gRPC
    connects or reconnects, and N is reused once closed: with 16 nodes served at a time a
    Start went to the wrong node and another node never got its own)."""
    path = socket_path(node_dir)
    if len(os.fsencode(str(path))) <= MAX_UNIX_PATH:
        return f"unix:{path}"
    global _links_dir
    digest = hashlib.sha256(os.fsencode(str(Path(node_dir).resolve()))).hexdigest()[:16]
    with _LINKS_LOCK:
        if _links_dir is None:
            _links_dir = Path(tempfile.mkdtemp(prefix="bcfl-ctl-"))
            atexit.register(shutil.rmtree, _links_dir, True)
        link = _links_dir / digest
        if not link.is_symlink():
            link.symlink_to(Path(node_dir).resolve(), target_is_directory=True)
    return f"unix:{link / SOCKET_NAME}"


class ControlError(Exception):
    """A control call that failed; `code`: ``gone`` or a gRPC status code's name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_token(run_dir: Path) -> str | None:
    """The run's control token (None: the run has no token file)."""
    try:
        return (run_dir / TOKEN_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def write_token(run_dir: Path, token: str) -> Path:
    """Write the run's token to ``RUN_DIR/control.token``, readable by its owner only."""
    path = run_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return path


class NodeClient:
    """One node's control plane, as a client (a context manager; `close` when done)."""

    def __init__(
        self,
        run_dir: Path | str,
        node_id: str,
        token: str | None = None,
        timeout_s: float = TIMEOUT_S,
        node_dir: Path | str | None = None,
    ) -> None:
        """`token`: default: the run's token file; `node_dir`: default RUN_DIR/nodes/<id>."""
        self.run_dir = Path(run_dir)
        self.node_id = node_id
        self.node_dir = Path(node_dir) if node_dir is not None else self.run_dir / "nodes" / node_id
        self.token = token if token is not None else read_token(self.run_dir)
        self.timeout_s = timeout_s
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    @property
    def socket(self) -> Path:
        """The node's control socket."""
        return socket_path(self.node_dir)

    def _connect(self, must_exist: bool = True) -> Any:
        if self._stub is not None:
            return self._stub
        if must_exist and not self.socket.exists():
            raise ControlError("gone", f"{self.node_id}: no control socket at {self.socket}")
        self._channel = grpc.insecure_channel(
            client_target(self.node_dir), options=RECONNECT_OPTIONS
        )
        self._stub = pb_grpc.NodeControlStub(self._channel)
        return self._stub

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TOKEN_KEY, self.token),) if self.token else ()

    def _call(self, method: str, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        stub = self._connect()
        try:
            return getattr(stub, method)(request, timeout=self.timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            raise _error(self.node_id, method, exc) from None

    def status(self) -> pb.NodeStatus:
        """The node's status (no token needed)."""
        return self._call("Status", pb.StatusRequest())

    def wait_ready(self, timeout_s: float, abort: threading.Event | None = None) -> None:
        """Wait until the node's control plane answers ``Status`` (its socket may not exist
        yet); ControlError ``gone`` after `timeout_s` or once `abort` is set."""
        stub = self._connect(must_exist=False)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (abort is not None and abort.is_set()):
                why = "gave up" if left > 0 else f"no answer within {timeout_s:g} s"
                raise ControlError("gone", f"{self.node_id}: control plane at {self.socket}: {why}")
            try:
                stub.Status(
                    pb.StatusRequest(), timeout=min(left, READY_SLICE_S), wait_for_ready=True
                )
                return
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise _error(self.node_id, "Status", exc) from None

    def watch(self, timeout_s: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, fields) of every metrics record the node writes from now on, until it
        stops (or `timeout_s` passes: then ControlError DEADLINE_EXCEEDED)."""
        stub = self._connect()
        stream = stub.WatchMetrics(pb.WatchRequest(), timeout=timeout_s)
        try:
            for record in stream:
                yield record.event, json.loads(record.fields_json)
        except grpc.RpcError as exc:
            raise _error(self.node_id, "WatchMetrics", exc) from None
        finally:
            stream.cancel()

    def set_behaviour(
        self, behaviour: str, params: dict[str, Any] | None = None, from_round: int = 1
    ) -> int:
        """Schedule `behaviour` (``recover``: honest again) from `from_round`; returns the
        round it takes effect (the first at or after `from_round` the node has not begun)."""
        request = pb.BehaviourRequest(
            behaviour=behaviour, params_json=json.dumps(params or {}), from_round=from_round
        )
        reply = self._call("SetBehaviour", request, self._metadata())
        return int(reply.from_round)

    def stop(self) -> None:
        """Stop the node as SIGTERM does (its counters are written)."""
        self._call("Stop", pb.StopRequest(), self._metadata())

    def start(self) -> bool:
        """Start the role of a node waiting for it (``await_start``); True if it had
        started already (nothing done)."""
        return bool(self._call("Start", pb.StartRequest(), self._metadata()).already_started)

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(node_id: str, method: str, exc: grpc.RpcError) -> ControlError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if name == "UNAVAILABLE":
        return ControlError("gone", f"{node_id}: {method}: the node does not answer ({details})")
    return ControlError(name, f"{node_id}: {method}: {name}: {details}")


def deliver_schedule(
    run_dir: Path,
    node_id: str,
    entries: Sequence[tuple[str, dict[str, Any], int]],
    timeout_s: float,
    abort: threading.Event | None = None,
) -> list[int]:
    """Wait (up to `timeout_s`) for a node started with ``await_start`` to answer, send its
    schedule `entries` ((behaviour or ``recover``, params, from_round), in round order) with
    ``SetBehaviour``, then ``Start``; the rounds the entries take effect (before Start:
    exactly their from_round). ControlError (naming the node) if it cannot be done."""
    with NodeClient(run_dir, node_id, timeout_s=TIMEOUT_S) as client:
        client.wait_ready(timeout_s, abort)
        rounds = [client.set_behaviour(b, params, r) for b, params, r in entries]
        client.start()
    return rounds


def stop_nodes(
    run_dir: Path, node_ids: list[str], timeout_s: float = 2.0, budget_s: float = 10.0
) -> list[str]:
    """Send ``Stop`` to each node (16 at a time, each call waiting at most `timeout_s`, all
    within `budget_s`); the ids of those that did not take it."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + budget_s

    def one(nid: str) -> str | None:
        left = min(timeout_s, deadline - time.monotonic())
        if left <= 0:
            return nid
        try:
            with NodeClient(run_dir, nid, timeout_s=left) as client:
                client.stop()
        except ControlError:
            return nid
        return None

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(node_ids)))) as pool:
        return [nid for nid in pool.map(one, node_ids) if nid is not None]


# -- bcfl control ---------------------------------------------------------------------------
def as_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as plain JSON-able values, every field present and integers as
    numbers (protobuf's own JSON mapping writes 64-bit integers as strings)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.message_type is not None and field.is_repeated:
            out[field.name] = [as_dict(item) for item in value]
        elif field.message_type is not None:
            out[field.name] = as_dict(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param: {item!r} is invalid; allowed: K=V")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cmd_control(args: argparse.Namespace) -> int:
    """``bcfl control``: exit 0 done, 1 refused or the node is gone, 2 bad usage."""
    run_dir: Path = args.run_dir
    if not (run_dir / "nodes").is_dir():
        print(f"bcfl: error: run_dir: {str(run_dir)!r} is not a run directory", file=sys.stderr)
        return 2
    try:
        params = _params(getattr(args, "param", []))
    except ValueError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 2
    try:
        with NodeClient(run_dir, args.node) as client:
            if args.control_command == "status":
                print(json.dumps(as_dict(client.status()), indent=1, sort_keys=True))
            elif args.control_command == "stop":
                client.stop()
                print(f"{args.node}: stopping")
            else:
                name = "recover" if args.control_command == "recover" else args.behaviour
                start = client.set_behaviour(name, params, args.from_round)
                print(f"{args.node}: {name} from round {start}")
    except ControlError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 1
    return 0
