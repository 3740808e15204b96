"""`Daemon.run_background`: a long job runs on the node's worker thread while the loop goes on
handling messages; its result (or error) comes back on the loop's thread, in order; a node
that stops with a job out leaves at once (the worker is a daemon thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from node.codec import Codec, Message
from node.config import NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.transport import InMemoryNetwork
from topologies import TopologySpec

DEADLINE_S = 60.0  # generous: the machine may be loaded


class JobsRole(Role):
    """Starts `jobs` at start; records messages and outcomes; stops after `stop_after`
    outcomes, or on a ``background.halt`` message (types no scheme or other test registers:
    the message registry is global)."""

    def __init__(self, jobs: list[Callable[[], Any]], stop_after: int) -> None:
        self.jobs = jobs
        self.stop_after = stop_after
        self.seen: list[str] = []
        self.outcomes: list[tuple[int, Any, BaseException | None]] = []
        self.gate = threading.Event()  # set when the loop handles a ``background.ping``
        self.loop_thread = 0

    def start(self, ctx: NodeContext) -> None:
        self.loop_thread = threading.get_ident()

        def done(result: Any, error: BaseException | None) -> None:
            self._done(ctx, result, error)

        for job in self.jobs:
            ctx.run_background(job, done)

    def _done(self, ctx: NodeContext, result: Any, error: BaseException | None) -> None:
        self.seen.append(f"done {len(self.outcomes) + 1}")
        self.outcomes.append((threading.get_ident(), result, error))
        if len(self.outcomes) == self.stop_after:
            ctx.stop()

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.seen.append(f"role:{msg.type}")
        if msg.type == "background.ping":
            self.gate.set()
        elif msg.type == "background.halt":
            ctx.stop()


def _daemon(tmp_path: Path, role: Role) -> tuple[Daemon, InMemoryNetwork, Codec]:
    keys = {"a": NodeKey.generate(), "b": NodeKey.generate()}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    network = InMemoryNetwork()
    daemon = Daemon(
        cast(NodeConfig, SimpleNamespace(node_id="a")),
        cast(TopologySpec, SimpleNamespace()),
        network.attach("a"),
        Codec("a", keys["a"], roster),
        role,
        MetricsWriter(tmp_path / "metrics.jsonl", {"node": "a"}),
    )
    return daemon, network, Codec("b", keys["b"], roster)


def _run(daemon: Daemon) -> None:
    thread = threading.Thread(target=daemon.run, kwargs={"install_signal_handlers": False})
    thread.start()
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "the daemon did not stop"
    daemon.metrics.close()


def test_results_come_back_on_the_loop_thread_in_order_while_the_loop_runs(
    tmp_path: Path,
) -> None:
    box: list[JobsRole] = []

    def waits_for_ping() -> int:
        # the loop must handle the ping while this job holds the worker
        assert box[0].gate.wait(DEADLINE_S), "the loop handled nothing while the job ran"
        return threading.get_ident()

    def fails() -> int:
        raise ValueError("boom")

    role = JobsRole([waits_for_ping, fails, lambda: 3], stop_after=3)
    box.append(role)
    daemon, network, peer = _daemon(tmp_path, role)
    network.deliver("a", peer.encode("background.ping", {}))
    _run(daemon)
    assert role.seen == ["role:background.ping", "done 1", "done 2", "done 3"]
    assert all(thread == role.loop_thread for thread, _, _ in role.outcomes)
    (_, worker, err1), (_, r2, err2), (_, r3, err3) = role.outcomes
    assert worker != role.loop_thread and err1 is None
    assert r2 is None and isinstance(err2, ValueError) and str(err2) == "boom"
    assert r3 == 3 and err3 is None


def test_a_node_stopping_with_a_job_out_leaves_without_waiting_for_it(tmp_path: Path) -> None:
    release = threading.Event()
    role = JobsRole([lambda: release.wait(DEADLINE_S)], stop_after=1)
    daemon, network, peer = _daemon(tmp_path, role)
    network.deliver("a", peer.encode("background.halt", {}))
    try:
        _run(daemon)
        assert role.seen == ["role:background.halt"] and role.outcomes == []  # on_done never called
        assert daemon._worker is not None and daemon._worker.daemon  # cannot keep a process up
        assert daemon._worker.is_alive()
    finally:
        release.set()
    assert daemon._worker is not None
    daemon._worker.join(DEADLINE_S)
    assert not daemon._worker.is_alive()  # told to end after its job


def test_the_worker_keeps_torchs_configured_thread_count(tmp_path: Path) -> None:
    import torch

    from node.learning.train import configure_torch_threads

    configure_torch_threads(1)
    role = JobsRole([torch.get_num_threads], stop_after=1)
    daemon, _, _ = _daemon(tmp_path, role)
    _run(daemon)
    assert [r for _, r, _ in role.outcomes] == [1]
    assert torch.get_num_threads() == 1
