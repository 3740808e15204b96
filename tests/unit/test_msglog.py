"""The nodes' message records (node.msglog): the writer, and the daemon's send and receive
hooks over the in-memory transport (issue 17)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from node.codec import Codec, Message
from node.config import NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.metrics import MetricsWriter
from node.msglog import COLUMNS, MESSAGES_CSV, MessageLog, envelope_header, open_message_log
from node.roles.base import NodeContext, Role
from node.transport import InMemoryNetwork
from topologies import TopologySpec

NODES = ("a", "b")


class Recorder(Role):
    def __init__(self) -> None:
        self.got: list[Message] = []

    def start(self, ctx: NodeContext) -> None:
        pass

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        self.got.append(msg)


def _keys() -> dict[str, NodeKey]:
    return {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(NODES)}


def _daemon(
    tmp_path: Path, node: str, network: InMemoryNetwork, message_log: bool
) -> tuple[Daemon, Recorder]:
    keys = _keys()
    roster = Roster({n: k.public_key for n, k in keys.items()})
    node_dir = tmp_path / node
    node_dir.mkdir()
    role = Recorder()
    config = SimpleNamespace(node_id=node, node_dir=str(node_dir), message_log=message_log)
    daemon = Daemon(
        cast(NodeConfig, config),
        cast(TopologySpec, SimpleNamespace()),
        network.attach(node),
        Codec(node, keys[node], roster, first_seq=1000 * (NODES.index(node) + 1)),
        role,
        MetricsWriter(node_dir / "metrics.jsonl", {"node": node}),
    )
    return daemon, role


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_the_envelope_header_is_read_from_a_frames_first_bytes() -> None:
    keys = _keys()
    codec = Codec("a", keys["a"], Roster({"a": keys["a"].public_key}), first_seq=2**40)
    big = codec.encode("model.update", {"w": b"\x00" * 1_000_000})

    assert envelope_header(big) == ("model.update", "a", 2**40)
    for junk in (b"", b"\x93\x01\x02\x03", b"\xc1" * 200, b"\x97" + b"\xc0" * 10):
        with pytest.raises(ValueError, match="not a bcfl envelope"):
            envelope_header(junk)


def test_sent_and_received_rows_match_by_sender_and_seq(tmp_path: Path) -> None:
    # message types no other test registers (a typed message of that type elsewhere in the
    # process would refuse these payloads)
    network = InMemoryNetwork()
    a, _ = _daemon(tmp_path, "a", network, message_log=True)
    b, b_role = _daemon(tmp_path, "b", network, message_log=True)

    a.multicast(["b", "gone"], "msglog.ping", {"n": 1})  # "gone": not attached (still sent)
    a.send("b", "msglog.ping", {"n": 2})
    frames = [network.inbox("b").get_nowait() for _ in range(2)]
    assert network.inbox("b").empty()
    for frame in frames:
        b.handle_frame(frame)
    b.handle_frame(frames[0])  # a replay: dropped, not recorded
    b.handle_frame(b"\x00not a frame")  # malformed: dropped, not recorded
    b.send("a", "msglog.pong", {})
    a.close()
    b.close()

    sent = _rows(tmp_path / "a" / MESSAGES_CSV)
    recv = _rows(tmp_path / "b" / MESSAGES_CSV)
    assert [(r["dir"], r["type"], r["sender"], r["seq"], r["peer"]) for r in sent] == [
        ("sent", "msglog.ping", "a", "1000", "b"),
        ("sent", "msglog.ping", "a", "1000", "gone"),  # one multicast: one seq
        ("sent", "msglog.ping", "a", "1001", "b"),
    ]
    assert [r["bytes"] for r in sent] == [str(len(frames[0]))] * 2 + [str(len(frames[1]))]
    b_recv = [r for r in recv if r["dir"] == "recv"]
    assert [(r["type"], r["sender"], r["seq"], r["peer"]) for r in b_recv] == [
        ("msglog.ping", "a", "1000", ""),
        ("msglog.ping", "a", "1001", ""),
    ]
    assert [r["bytes"] for r in b_recv] == [str(len(f)) for f in frames]
    matched = {(r["sender"], r["seq"]) for r in sent} & {(r["sender"], r["seq"]) for r in b_recv}
    assert matched == {("a", "1000"), ("a", "1001")}
    for s_row, r_row in zip(sent[::2], b_recv, strict=True):
        assert float(s_row["wall_ms"]) <= float(r_row["wall_ms"])  # same host clock
    assert [(r["dir"], r["type"], r["seq"], r["peer"]) for r in recv if r["dir"] == "sent"] == [
        ("sent", "msglog.pong", "2000", "a")
    ]
    assert len(b_role.got) == 2
    assert b.drops == {"replay": 1, "malformed": 1}


def test_no_file_and_no_rows_when_off(tmp_path: Path) -> None:
    network = InMemoryNetwork()
    a, _ = _daemon(tmp_path, "a", network, message_log=False)
    b, b_role = _daemon(tmp_path, "b", network, message_log=False)

    a.send("b", "msglog.ping", {"n": 1})
    b.handle_frame(network.inbox("b").get_nowait())
    a.close()
    b.close()

    assert a.msglog is None and b.msglog is None
    assert len(b_role.got) == 1
    assert not list(tmp_path.glob(f"*/{MESSAGES_CSV}"))


def test_open_message_log_follows_the_config(tmp_path: Path) -> None:
    def config(on: Any) -> NodeConfig:
        return cast(NodeConfig, SimpleNamespace(node_id="a", node_dir=str(tmp_path), **on))

    assert open_message_log(config({"message_log": False})) is None
    assert open_message_log(config({})) is None  # a config without the field
    log = open_message_log(config({"message_log": True}))
    assert log is not None and log.path == tmp_path / MESSAGES_CSV
    log.close()


def test_rows_are_buffered_then_flushed_and_a_restart_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr("node.msglog.wall_ms", lambda: now[0])
    path = tmp_path / MESSAGES_CSV
    log = MessageLog(path, "a")

    log.received(now[0], "x.y", "b", 7, 100)
    assert path.read_text() == ""  # buffered: not even the header yet
    now[0] += 2_500.0  # past FLUSH_MS: the next row flushes
    log.received(now[0], "x.y", "b", 8, 100)
    assert [r["seq"] for r in _rows(path)] == ["7", "8"]
    log.close()
    log.close()  # twice: nothing

    again = MessageLog(path, "a")  # a restarted node: no second header
    again.received(now[0], "x.y", "b", 9, 100)
    again.close()
    assert [r["seq"] for r in _rows(path)] == ["7", "8", "9"]
    assert path.read_text().count("dir,") == 1


@pytest.mark.parametrize(
    ("metrics", "capture", "on"),
    [
        ({}, [], False),  # the default: off (a 1,000-node run writes none)
        ({}, ["mec0"], True),  # a run that captures packets
        ({"message_log": True}, [], True),
        ({"message_log": False}, ["mec0"], False),  # said off: off, captures or not
    ],
)
def test_the_scenario_says_whether_nodes_record_their_messages(
    metrics: dict[str, Any], capture: list[str], on: bool
) -> None:
    from orchestrator.scenario import parse_scenario

    scenario = parse_scenario({"metrics": metrics, "capture": capture})
    assert scenario.metrics.message_log_on(scenario.capture) is on
