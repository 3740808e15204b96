"""The node's control plane (`node.control.server`) with a real gRPC server on a Unix socket
in tmp_path, inside a real `Daemon` loop (in-memory transport): the token refused and
counted, a behaviour scheduled or refused naming the field, a long node directory, Stop
reaching the loop, metrics watched."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec, Message
from node.control.server import MAX_UNIX_PATH, WATCH_QUEUE, ControlPlane, _Watcher
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.roles.threats import active_behaviour
from node.transport import InMemoryNetwork
from orchestrator.collect import read_records
from orchestrator.control import ControlError, NodeClient
from tests.unit.node_configs import learning_config, node_config

TOKEN = "s3cret-token"
WAIT_S = 30.0


class RoundRole(Role):
    """A device-like role that is in round `round` and writes a record when told."""

    kind = "device"

    def __init__(self) -> None:
        self.round = 3

    def start(self, ctx: NodeContext) -> None:
        pass

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        ctx.metrics.write("note", round=self.round, text=msg.type)


class Node:
    """A daemon running on its own thread, with a peer to send it frames."""

    def __init__(self, node_dir: Path, token: str | None = TOKEN) -> None:
        node_dir.mkdir(parents=True, exist_ok=True)
        self.dir = node_dir
        keys = {"dev0-0": NodeKey.generate(), "peer": NodeKey.generate()}
        roster = Roster({n: k.public_key for n, k in keys.items()})
        self.network = InMemoryNetwork()
        self.config = node_config(learning_config(), node_dir=str(node_dir), control_token=token)
        self.role = RoundRole()
        self.daemon = Daemon(
            self.config,
            self.config.topology,
            self.network.attach("dev0-0"),
            Codec("dev0-0", keys["dev0-0"], roster),
            self.role,
            MetricsWriter(node_dir / "metrics.jsonl", {"node": "dev0-0"}),
        )
        self.peer = Codec("peer", keys["peer"], roster)
        self.network.attach("peer")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run(install_signal_handlers=False)
        finally:
            self.daemon.close()

    def wait_up(self) -> None:
        deadline = threading.Event()
        for _ in range(int(WAIT_S / 0.01)):
            if (self.dir / "control.sock").exists() and self.records("ready"):
                return
            deadline.wait(0.01)
        raise AssertionError("the control socket never appeared")

    def send(self, msg_type: str) -> None:
        """Deliver a frame of `msg_type` (a type no scheme registers: the role gets a map)."""
        self.network.deliver("dev0-0", self.peer.encode(msg_type, {}))

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in read_records(self.dir) if r.get("event") == event]

    def client(self, token: str | None = TOKEN) -> NodeClient:
        return NodeClient(self.dir.parent, "dev0-0", token=token or "", node_dir=self.dir)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "nodes" / "dev0-0")
    n.wait_up()
    yield n
    if n.thread.is_alive():
        n.daemon.stop()
        n.thread.join(WAIT_S)


def _stop(node: Node) -> dict[str, Any]:
    with node.client() as client:
        client.stop()
    node.thread.join(WAIT_S)
    assert not node.thread.is_alive()
    return node.records("counters")[-1]


def test_status_answers_from_the_loops_snapshot(node: Node) -> None:
    with node.client(token=None) as client:  # read-only: no token needed
        status = client.status()
    assert (status.node_id, status.role, status.scheme) == ("dev0-0", "device", "vanilla")
    assert status.round == 3 and status.view == -1 and status.pid == os.getpid()
    assert status.behaviour == ""


def test_a_wrong_or_missing_token_is_refused_and_counted(node: Node) -> None:
    for token in ("wrong", None):
        with node.client(token=token) as client, pytest.raises(ControlError) as err:
            client.stop()
        assert err.value.code == "PERMISSION_DENIED" and "x-bcfl-token" in str(err.value)
    with node.client(token="nope") as client, pytest.raises(ControlError) as err:
        client.set_behaviour("label_flip", {}, 5)
    assert err.value.code == "PERMISSION_DENIED"
    assert node.thread.is_alive() and node.config.behaviours == []  # nothing happened
    counters = _stop(node)  # the right token is taken
    assert counters["dropped"]["control_refused"] == 3


def test_stop_reaches_the_loop_and_the_socket_goes(node: Node) -> None:
    counters = _stop(node)
    assert counters["event"] == "counters"
    assert not (node.dir / "control.sock").exists()
    with node.client() as client, pytest.raises(ControlError) as err:
        client.status()
    assert err.value.code == "gone"


@pytest.mark.parametrize(
    ("behaviour", "params", "from_round", "field"),
    [
        ("no_such_attack", {}, 5, "behaviour"),
        ("tamper", {}, 5, "behaviour"),  # a MEC's fault, not a device's
        ("withhold_blobs", {}, 5, "behaviour"),  # not live
        ("label_flip", {"no_such_param": 1}, 5, "params_json"),
        ("recover", {"x": 1}, 5, "params_json"),
        ("label_flip", {"strength": 1.0}, 0, "from_round"),
    ],
)
def test_a_bad_behaviour_is_refused_naming_the_field(
    node: Node, behaviour: str, params: dict[str, Any], from_round: int, field: str
) -> None:
    with node.client() as client, pytest.raises(ControlError) as err:
        client.set_behaviour(behaviour, params, from_round)
    assert err.value.code == "INVALID_ARGUMENT"
    assert f": {field}: " in str(err.value)
    assert node.config.behaviours == []


def test_a_behaviour_takes_effect_at_the_first_round_not_begun(node: Node) -> None:
    with node.client() as client:
        assert client.set_behaviour("label_flip", {"strength": 1.0}, 1) == 4  # in round 3
        assert client.set_behaviour("gaussian", {"sigma": 0.1}, 7) == 7
        assert client.set_behaviour("recover", {}, 9) == 9
    behaviour = [(r, getattr(active_behaviour(node.config, r), "name", "")) for r in range(3, 10)]
    assert behaviour == [
        (3, ""),
        (4, "label_flip"),
        (5, "label_flip"),
        (6, "label_flip"),
        (7, "gaussian"),
        (8, "gaussian"),
        (9, ""),
    ]
    records = node.records("control_behaviour")
    assert [(r["behaviour"], r["from_round"]) for r in records] == [
        ("label_flip", 4),
        ("gaussian", 7),
        ("recover", 9),
    ]
    node.role.round = 4
    node.send("t.tick")  # a wake-up: the next snapshot shows round 4's behaviour
    with node.client() as client:
        for _ in range(int(WAIT_S / 0.01)):
            if client.status().behaviour == "label_flip":
                break
            threading.Event().wait(0.01)
        assert client.status().behaviour == "label_flip"


def test_watch_metrics_streams_the_records_written_after_the_call(node: Node) -> None:
    with node.client(token=None) as client:
        stream = client.watch(timeout_s=WAIT_S)
        plane = node.daemon.control
        assert isinstance(plane, ControlPlane)
        got: list[tuple[str, dict[str, Any]]] = []
        reader = threading.Thread(target=lambda: got.append(next(stream)), daemon=True)
        reader.start()
        for _ in range(int(WAIT_S / 0.01)):  # the watcher is registered when the call arrives
            if plane._watchers:
                break
            threading.Event().wait(0.01)
        node.send("t.hello")
        reader.join(WAIT_S)
    assert got == [("note", {"round": 3, "text": "t.hello"})]


def test_a_full_watcher_queue_drops_and_counts(node: Node) -> None:
    plane = node.daemon.control
    assert isinstance(plane, ControlPlane)
    slow = _Watcher()
    plane._watchers.append(slow)
    try:
        for i in range(WATCH_QUEUE + 5):
            plane.observe("x", {"i": i})
    finally:
        plane._watchers.remove(slow)
    assert slow.dropped == 5 and plane.watch_dropped == 5
    assert slow.records.qsize() == WATCH_QUEUE


def test_a_long_node_directory_binds_through_a_short_path(tmp_path: Path) -> None:
    deep = tmp_path
    while len(os.fsencode(str(deep / "control.sock"))) <= MAX_UNIX_PATH + 40:
        deep = deep / ("d" * 30)
    n = Node(deep / "nodes" / "dev0-0")
    n.wait_up()
    assert len(os.fsencode(str(n.dir / "control.sock"))) > MAX_UNIX_PATH
    with n.client() as client:
        assert client.status().node_id == "dev0-0"
    counters = _stop(n)
    assert counters["event"] == "counters"
    assert not (n.dir / "control.sock").exists()


def test_no_token_no_control_plane(tmp_path: Path) -> None:
    n = Node(tmp_path / "nodes" / "dev0-0", token=None)
    for _ in range(int(WAIT_S / 0.01)):
        if n.records("ready"):
            break
        threading.Event().wait(0.01)
    assert n.daemon.control is None and not (n.dir / "control.sock").exists()
    n.daemon.stop()
    n.send("t.wake")
    n.thread.join(WAIT_S)
    assert not n.thread.is_alive()
