"""The orchestrator's fault schedule delivered through the control plane (``await_start``):
a real `Daemon` (in-memory transport) serving its real gRPC control plane on a Unix socket
in tmp_path. The role does not start before ``Start``; the delivered entries take effect at
exactly their rounds, the same as the config path's (`behaviour_schedules`), also for a
process whose round counter is already past some of them (a restart mid-run); ``Start``
without the token is refused and counted; no ``Start`` within startup_timeout_s ends the
node with an error; ``Stop`` while waiting ends it cleanly; `deliver_schedule` gives up on a
node that never answers."""

from __future__ import annotations

import csv
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec, Message
from node.config import Behaviour
from node.daemon import Daemon, StartTimeout
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.roles.threats import active_behaviour
from node.transport import InMemoryNetwork
from orchestrator.collect import read_records
from orchestrator.control import ControlError, NodeClient, deliver_schedule, write_token
from orchestrator.faults import FaultEvent, behaviour_schedules
from tests.unit.node_configs import learning_config, node_config

TOKEN = "s3cret-token"
WAIT_S = 30.0
NODE = "dev0-0"
# malicious sign_flip from 3, recover at 6, free_rider from 8 (dev0-0's part of a schedule)
EVENTS = [
    FaultEvent(0, 3, "malicious", (NODE,), "sign_flip", {"scale": 2.0}),
    FaultEvent(1, 6, "recover", (NODE,)),
    FaultEvent(2, 8, "malicious", (NODE, "dev0-1"), "free_rider", {"mode": "global"}),
]
ENTRIES = [
    (ev.behaviour or "recover", dict(ev.params), ev.round)
    if ev.action == "malicious"
    else ("recover", {}, ev.round)
    for ev in EVENTS
]
EXPECTED = {3: "sign_flip", 4: "sign_flip", 5: "sign_flip", 8: "free_rider", 9: "free_rider"}


class CountingRole(Role):
    """A device-like role: each frame it receives begins its next round, recorded with the
    behaviour the schedule gives that round."""

    kind = "device"

    def __init__(self, first_round: int) -> None:
        self.round = first_round
        self.started = threading.Event()

    def start(self, ctx: NodeContext) -> None:
        self.started.set()
        ctx.metrics.write("role_started", round=self.round)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.round += 1
        b = active_behaviour(ctx.config, self.round)
        ctx.metrics.write("round", round=self.round, behaviour=None if b is None else b.name)


class Node:
    """A daemon on its own thread; `run_error`: what its run raised."""

    def __init__(self, node_dir: Path, first_round: int = 0, **config: Any) -> None:
        node_dir.mkdir(parents=True, exist_ok=True)
        self.dir = node_dir
        keys = {NODE: NodeKey.generate(), "peer": NodeKey.generate()}
        roster = Roster({n: k.public_key for n, k in keys.items()})
        self.network = InMemoryNetwork()
        settings: dict[str, Any] = {"control_token": TOKEN, "startup_timeout_s": WAIT_S} | config
        self.config = node_config(learning_config(), node_dir=str(node_dir), **settings)
        self.role = CountingRole(first_round)
        self.daemon = Daemon(
            self.config,
            self.config.topology,
            self.network.attach(NODE),
            Codec(NODE, keys[NODE], roster),
            self.role,
            MetricsWriter(node_dir / "metrics.jsonl", {"node": NODE}),
        )
        self.peer = Codec("peer", keys["peer"], roster)
        self.network.attach("peer")
        self.run_error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run(install_signal_handlers=False)
        except BaseException as exc:  # the test asserts on it
            self.run_error = exc
        finally:
            self.daemon.close()

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in read_records(self.dir) if r.get("event") == event]

    def play_rounds(self, n: int) -> list[tuple[int, str | None]]:
        """Begin `n` rounds (a frame each); (round, behaviour) of each, once all are in."""
        before = len(self.records("round"))
        for _ in range(n):
            self.network.deliver(NODE, self.peer.encode("tick", {}))
        waiter = threading.Event()
        for _ in range(int(WAIT_S / 0.01)):
            if len(self.records("round")) >= before + n:
                break
            waiter.wait(0.01)
        return [(r["round"], r["behaviour"]) for r in self.records("round")[before:]]

    def client(self, token: str = TOKEN) -> NodeClient:
        return NodeClient(self.dir.parent.parent, NODE, token=token, node_dir=self.dir)

    def end(self) -> None:
        if self.thread.is_alive():
            self.daemon.stop()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "run"


def _expected(rounds: range) -> list[tuple[int, str | None]]:
    return [(r, EXPECTED.get(r)) for r in rounds]


def test_the_role_starts_only_on_start_and_the_entries_apply_at_their_exact_rounds(
    run_dir: Path,
) -> None:
    node = Node(run_dir / "nodes" / NODE, await_start=True)
    try:
        with node.client() as client:
            client.wait_ready(WAIT_S)
            # waiting: control plane up, role not started, no ready record
            assert not node.role.started.is_set() and node.records("ready") == []
            assert client.status().round == 0
            rounds = [client.set_behaviour(b, p, r) for b, p, r in ENTRIES]
            assert rounds == [3, 6, 8]  # before Start: exactly from_round
            assert not node.role.started.is_set()
            # the delivered schedule is the config path's
            schedule = [Behaviour(**b) for b in behaviour_schedules(EVENTS)[NODE]]
            assert node.daemon.config.behaviours == schedule
            assert client.start() is False
            assert node.role.started.wait(WAIT_S)
            assert client.start() is True  # a second Start does nothing
        assert [r["round"] for r in node.records("role_started")] == [0]
        assert len(node.records("ready")) == 1 and len(node.records("control_start")) == 1
        assert node.play_rounds(9) == _expected(range(1, 10))
    finally:
        node.end()
    assert node.run_error is None


def test_a_restarted_process_gets_the_whole_schedule_and_its_round_counter_decides(
    run_dir: Path, tmp_path: Path
) -> None:
    # a process restarted mid-run whose role is already at round 4 when it starts: the
    # entries before it are history, round 5 on behaves as the config path does
    delivered = Node(run_dir / "nodes" / NODE, first_round=4, await_start=True)
    try:
        write_token(run_dir, TOKEN)  # deliver_schedule reads the run's token, as the runner's
        assert deliver_schedule(run_dir, NODE, ENTRIES, WAIT_S) == [3, 6, 8]
        assert delivered.role.started.wait(WAIT_S)
        got = delivered.play_rounds(5)
    finally:
        delivered.end()
    schedule = [Behaviour(**b) for b in behaviour_schedules(EVENTS)[NODE]]
    from_config = Node(tmp_path / "cfg" / "nodes" / NODE, first_round=4, behaviours=schedule)
    try:
        assert from_config.role.started.wait(WAIT_S)
        assert from_config.play_rounds(5) == got == _expected(range(5, 10))
    finally:
        from_config.end()


def test_a_start_without_the_token_is_refused_and_counted(run_dir: Path) -> None:
    node = Node(run_dir / "nodes" / NODE, await_start=True)
    try:
        with node.client(token="") as anonymous:
            anonymous.wait_ready(WAIT_S)
            with pytest.raises(ControlError) as refused:
                anonymous.start()
            assert refused.value.code == "PERMISSION_DENIED"
        with node.client(token="not-the-token") as wrong, pytest.raises(ControlError) as bad:
            wrong.set_behaviour("sign_flip", {}, 3)
        assert bad.value.code == "PERMISSION_DENIED"
        assert not node.role.started.is_set() and node.daemon.config.behaviours == []
        with node.client() as client:
            assert client.start() is False
        assert node.role.started.wait(WAIT_S)
        with node.client() as client:
            client.stop()
        node.thread.join(WAIT_S)
    finally:
        node.end()
    assert node.records("counters")[-1]["dropped"]["control_refused"] == 2


def test_no_start_within_the_startup_timeout_ends_the_node_with_an_error(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="node.daemon"):
        node = Node(run_dir / "nodes" / NODE, await_start=True, startup_timeout_s=0.3)
        node.thread.join(WAIT_S)
    assert isinstance(node.run_error, StartTimeout)
    assert "no Start from the orchestrator within 0.3 s" in str(node.run_error)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["no Start from the orchestrator within 0.3 s"]
    assert not node.role.started.is_set()
    assert not (node.dir / "control.sock").exists()  # closed


def test_stop_while_waiting_for_start_ends_the_node_cleanly(run_dir: Path) -> None:
    node = Node(run_dir / "nodes" / NODE, await_start=True)
    with node.client() as client:
        client.wait_ready(WAIT_S)
        with node.client(token="not-the-token") as wrong, pytest.raises(ControlError):
            wrong.start()
        client.stop()
    node.thread.join(WAIT_S)
    assert not node.thread.is_alive() and node.run_error is None
    assert not node.role.started.is_set() and node.records("ready") == []
    # its counters all the same: what it refused while it waited is not lost
    (counters,) = node.records("counters")
    assert counters["dropped"] == {"control_refused": 1}
    assert (counters["sent_msgs"], counters["recv_msgs"]) == (0, 0)


def test_deliver_schedule_names_a_node_that_never_answers(run_dir: Path) -> None:
    (run_dir / "nodes" / NODE).mkdir(parents=True)
    with pytest.raises(ControlError) as timed_out:
        deliver_schedule(run_dir, NODE, ENTRIES, 0.3)
    assert timed_out.value.code == "gone"
    assert str(timed_out.value).startswith(f"{NODE}: control plane at ")
    assert "no answer within 0.3 s" in str(timed_out.value)
    abort = threading.Event()
    abort.set()
    with pytest.raises(ControlError, match="gave up"):
        deliver_schedule(run_dir, NODE, ENTRIES, WAIT_S, abort)


def test_withhold_blobs_is_taken_before_start_only() -> None:
    from node.control.schedule import BehaviourError, check_request

    params = json.dumps({"fraction": 0.5})
    with pytest.raises(BehaviourError) as live:
        check_request("mec", "withhold_blobs", params, 2)
    assert live.value.field == "behaviour"
    assert check_request("mec", "withhold_blobs", params, 2, before_start=True)[0] == (
        "withhold_blobs"
    )


class FakeBackend:
    """A backend whose nodes never answer: running (`exit_code` None) or exited."""

    def __init__(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self.killed: list[str] = []

    def poll(self) -> dict[str, int | None]:
        return {NODE: -9 if self.killed else self.exit_code}

    def kill(self, node_id: str) -> None:
        self.killed.append(node_id)


def _bare_run(run_dir: Path, backend: FakeBackend) -> Any:
    """A `Run` with only what `_deliver` reads (no scenario to build)."""
    from types import SimpleNamespace

    from orchestrator.health import ExitWatch
    from orchestrator.runner import Run

    run = Run.__new__(Run)
    run.out_dir = run_dir
    run.scenario = SimpleNamespace(startup_timeout_s=0.3)  # type: ignore[assignment]
    run.faults = EVENTS
    run.backend = backend
    run.watch = ExitWatch(run_dir)
    run.control_plane = True
    run._undelivered = set()
    (run_dir / "nodes" / NODE).mkdir(parents=True)
    return run


def test_the_runner_names_kills_and_fails_a_node_that_never_answers(run_dir: Path) -> None:
    backend = FakeBackend(exit_code=None)
    run = _bare_run(run_dir, backend)

    run._deliver([NODE])

    assert backend.killed == [NODE] and run._undelivered == {NODE}
    [failure] = run.watch.failures
    assert failure.node == NODE and failure.after_round == 0
    assert failure.last_line.startswith(f"no Start delivered: {NODE}: control plane at ")
    assert failure.line().startswith(f"bcfl: node {NODE} died unexpectedly (signal SIGKILL)")
    assert run.watch.observe(backend.poll(), 0) == [], "counted once"


def test_the_runner_leaves_a_node_that_exited_to_the_exit_watch(run_dir: Path) -> None:
    backend = FakeBackend(exit_code=1)
    run = _bare_run(run_dir, backend)
    run.scenario.startup_timeout_s = WAIT_S  # given up on at once: the process is gone

    run._deliver([NODE])

    assert backend.killed == [] and run.watch.failures == []
    assert [
        f.node for f in run.watch.observe({NODE: None}, 0) + run.watch.observe(backend.poll(), 0)
    ] == [NODE]


@pytest.mark.parametrize("control_plane", [True, False], ids=["control-plane", "configs"])
def test_prepare_puts_the_schedule_where_the_control_plane_setting_says(
    tmp_path: Path, control_plane: bool
) -> None:
    from orchestrator.runner import Run
    from orchestrator.scenario import parse_scenario

    scenario = parse_scenario(
        {
            "name": "p",
            "seed": 1,
            "model": "mlp",
            "training": {"rounds": 4},
            "topology": {"mecs_per_bs": 1, "devices_per_mec": 2},
            "metrics": {"control_plane": control_plane},
            "faults": [
                {
                    "at_round": 2,
                    "action": "malicious",
                    "nodes": [NODE],
                    "behaviour": "sign_flip",
                    "params": {"scale": 3.0},
                },
                {"at_round": 4, "action": "recover", "nodes": [NODE]},
            ],
        }
    )
    run = Run(scenario, tmp_path / "run", progress=False)
    run.prepare()
    config = json.loads((run.node_dir(NODE) / "config.json").read_text())
    run._write_events()
    with (tmp_path / "run" / "events.csv").open() as f:
        events = [(e["applied_by"], e["detail"]) for e in csv.DictReader(f)]

    assert config["await_start"] is control_plane
    if control_plane:
        assert config["behaviours"] == []
        assert run._entries(NODE) == [("sign_flip", {"scale": 3.0}, 2), ("recover", {}, 4)]
        assert events == [
            ("orchestrator (control plane)", "SetBehaviour before start, from round 2"),
            ("orchestrator (control plane)", "SetBehaviour before start, from round 4"),
        ]
    else:
        assert config["behaviours"] == [
            {"name": "sign_flip", "params": {"scale": 3.0}, "from_round": 2, "until_round": 4}
        ]
        assert events == [("node (config)", "from its config, at the start of the round")] * 2
