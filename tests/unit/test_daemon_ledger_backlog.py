"""The daemon handles ledger messages (``chain.*``/``blob.*``) after the round's messages:
a block that arrived first must not delay a device's training or a MEC's forwarding."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from node.codec import Codec, Message
from node.config import NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.ledger.replica import Replica
from node.ledger.sync import Outgoing
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.transport import InMemoryNetwork
from topologies import TopologySpec


class RecordingSync:
    """Stands in for the replica's ChainSync: records what the daemon hands it."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.failures: dict[str, int] = {}
        self.received: dict[str, float | None] = {}

    def handle(
        self,
        sender: str,
        msg_type: str,
        payload: dict[str, Any],
        now: float,
        received_ms: float | None = None,
    ) -> list:
        self.seen.append(f"ledger:{msg_type}")
        self.received[msg_type] = received_ms
        return []

    def tick(self, now: float) -> list[Outgoing]:
        return []


class RecordingRole(Role):
    """Records its messages; stops once `expected` entries were seen (polling a timer)."""

    def __init__(self, seen: list[str], expected: int) -> None:
        self.seen = seen
        self.expected = expected

    def start(self, ctx: NodeContext) -> None:
        ctx.set_timer("check", 0.01)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.seen.append(f"role:{msg.type}")
        self.handled_ms = time.time_ns() / 1e6

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        if len(self.seen) >= self.expected:
            ctx.stop()
        else:
            ctx.set_timer("check", 0.01)


class DeferredStore:
    """Stands in for a ledger store with deferred writes and no writer thread."""

    deferred = True

    def __init__(self, seen: list[str], pending: int) -> None:
        self.seen = seen
        self.pending = pending

    def pending_blocks(self) -> int:
        return self.pending

    def write_pending(self) -> int:
        written, self.pending = self.pending, 0
        self.seen.append(f"store:wrote {written}")
        return written


def _daemon(
    tmp_path: Path, role: Role, seen: list[str], store: object | None = None
) -> tuple[Daemon, InMemoryNetwork, Codec]:
    keys = {"a": NodeKey.generate(), "b": NodeKey.generate()}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    network = InMemoryNetwork()
    if store is None:  # writes as it appends: nothing left for idle time
        store = SimpleNamespace(deferred=False)
    chain = SimpleNamespace(store=store)
    replica = SimpleNamespace(sync=RecordingSync(seen), height=0, chain=chain, blobs=None)
    daemon = Daemon(
        cast(NodeConfig, SimpleNamespace(node_id="a")),
        cast(TopologySpec, SimpleNamespace()),
        network.attach("a"),
        Codec("a", keys["a"], roster),
        role,
        MetricsWriter(tmp_path / "metrics.jsonl", {"node": "a"}),
        replica=cast(Replica, replica),
    )
    return daemon, network, Codec("b", keys["b"], roster)


def test_a_queued_block_waits_for_the_round_message_behind_it(tmp_path: Path) -> None:
    seen: list[str] = []
    daemon, network, peer = _daemon(tmp_path, RecordingRole(seen, expected=4), seen)
    network.deliver("a", peer.encode("chain.block", {"block": b"x", "height": 1}))
    network.deliver("a", peer.encode("chain.status", {"height": 1, "head": b""}))
    # round messages of types no scheme registers (node.messages): the role gets their maps
    network.deliver("a", peer.encode("round.start", {"round": 1}))
    network.deliver("a", peer.encode("round.reply", {"round": 1}))
    daemon.run(install_signal_handlers=False)
    daemon.metrics.close()
    # the first ledger frame is taken off the socket before the round's frames are there to
    # see; it is still handled only once no frame is waiting; ledger order is kept
    assert seen == [
        "role:round.start",
        "role:round.reply",
        "ledger:chain.block",
        "ledger:chain.status",
    ]


def test_deferred_ledger_writes_wait_until_no_frame_is_waiting(tmp_path: Path) -> None:
    seen: list[str] = []
    store = DeferredStore(seen, pending=2)
    daemon, network, peer = _daemon(tmp_path, RecordingRole(seen, expected=3), seen, store)
    # round messages of types no scheme registers (node.messages): the role gets their maps
    network.deliver("a", peer.encode("round.start", {"round": 1}))
    network.deliver("a", peer.encode("round.reply", {"round": 1}))
    daemon.run(install_signal_handlers=False)
    daemon.metrics.close()
    assert seen == ["role:round.start", "role:round.reply", "store:wrote 2"]


def test_a_deferred_block_is_recorded_as_received_when_it_arrived(tmp_path: Path) -> None:
    """The chains get the wall-clock time a ledger frame arrived (its blocks' ``received_ms``),
    not the later time the backlog handed it over."""
    seen: list[str] = []
    role = RecordingRole(seen, expected=3)
    daemon, network, peer = _daemon(tmp_path, role, seen)
    before_ms = time.time_ns() / 1e6
    network.deliver("a", peer.encode("chain.block", {"block": b"x", "height": 1}))
    network.deliver("a", peer.encode("round.start", {"round": 1}))
    network.deliver("a", peer.encode("round.reply", {"round": 1}))
    daemon.run(install_signal_handlers=False)
    daemon.metrics.close()
    sync = cast(RecordingSync, daemon.chains.only().replica.sync)
    assert seen[-1] == "ledger:chain.block"  # handled after the role's messages ...
    received = sync.received["chain.block"]
    assert received is not None
    assert before_ms <= received <= role.handled_ms  # ... but received before them
