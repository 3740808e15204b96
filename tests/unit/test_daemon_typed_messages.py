"""The daemon hands roles typed messages (node.messages): a registered type's map is checked
once and becomes its instance; a malformed one is dropped and counted before the role sees it;
ledger and unregistered types stay maps. Roles send instances; ledger sync sends maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, cast

import pytest

from node.codec import Codec, Message
from node.config import NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.messages import Bounds, message
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.transport import InMemoryNetwork
from topologies import TopologySpec


@message("test.ping")
@dataclass(frozen=True)
class Ping:
    round: Annotated[int, Bounds(ge=0)]
    note: str


@dataclass(frozen=True)
class Unregistered:
    x: int


class Recorder(Role):
    def __init__(self) -> None:
        self.got: list[Message] = []

    def start(self, ctx: NodeContext) -> None:
        pass

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.got.append(msg)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Daemon, Recorder, Codec, InMemoryNetwork]:
    keys = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(("a", "b"))}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    network = InMemoryNetwork()
    role = Recorder()
    daemon = Daemon(
        cast(NodeConfig, SimpleNamespace(node_id="a")),
        cast(TopologySpec, SimpleNamespace()),
        network.attach("a"),
        Codec("a", keys["a"], roster),
        role,
        MetricsWriter(tmp_path / "metrics.jsonl", {"node": "a"}),
    )
    return daemon, role, Codec("b", keys["b"], roster), network


def test_a_registered_message_reaches_the_role_as_its_instance(setup: tuple) -> None:
    daemon, role, peer, _ = setup

    daemon.handle_frame(peer.encode("test.ping", {"round": 2, "note": "hi"}))

    assert [(m.type, m.sender, m.payload) for m in role.got] == [("test.ping", "b", Ping(2, "hi"))]
    assert not daemon.drops


@pytest.mark.parametrize(
    "payload",
    [{"round": -1, "note": "hi"}, {"round": "2", "note": "hi"}, {"round": 2}, {"x": 1}],
)
def test_a_malformed_registered_message_is_dropped_as_bad_payload(
    setup: tuple, payload: dict
) -> None:
    daemon, role, peer, _ = setup

    daemon.handle_frame(peer.encode("test.ping", payload))

    assert role.got == []
    assert daemon.drops == {"bad_payload": 1}


def test_an_unregistered_type_reaches_the_role_as_its_map(setup: tuple) -> None:
    daemon, role, peer, _ = setup

    daemon.handle_frame(peer.encode("test.other", {"k": 1}))

    assert [m.payload for m in role.got] == [{"k": 1}]


def test_roles_send_instances_and_ledger_sync_sends_maps(setup: tuple) -> None:
    daemon, _, peer, network = setup
    inbox = network.attach("b")

    daemon.send("b", Ping(3, "x"))
    daemon.multicast(["b"], "chain.status", {"height": 1})

    first, second = (peer.decode(inbox.recv(5.0) or b"") for _ in range(2))
    assert (first.type, first.payload) == ("test.ping", {"round": 3, "note": "x"})
    assert (second.type, second.payload) == ("chain.status", {"height": 1})
    with pytest.raises(TypeError, match="not a registered message"):
        daemon.send("b", Unregistered(1))
