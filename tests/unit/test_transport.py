"""Unit tests for the in-memory and ZeroMQ transports."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from node.transport import InMemoryNetwork
from node.transport.zmq import ZmqTransport
from topologies.backends.local import free_port

RECV_TIMEOUT_S = 5.0
MAX_FRAME = 8 * 1024 * 1024

# --- InMemoryNetwork -----------------------------------------------------------------------


def test_in_memory_delivers_in_order_and_counts_bytes() -> None:
    net = InMemoryNetwork()
    a, b = net.attach("a"), net.attach("b")

    a.send("b", b"one")
    a.send("b", b"two!")
    got = [b.recv(RECV_TIMEOUT_S), b.recv(RECV_TIMEOUT_S)]

    assert got == [b"one", b"two!"]
    assert (a.stats.sent_msgs, a.stats.sent_bytes) == (2, 7)
    assert (b.stats.recv_msgs, b.stats.recv_bytes) == (2, 7)
    assert a.recv(0) is None


def test_in_memory_unknown_destination_is_peer_unreachable() -> None:
    net = InMemoryNetwork()
    a = net.attach("a")

    a.send("nobody", b"x")

    assert a.stats.dropped["peer_unreachable"] == 1
    assert a.stats.sent_msgs == 0


def test_in_memory_closed_peer_is_unreachable() -> None:
    net = InMemoryNetwork()
    a, b = net.attach("a"), net.attach("b")
    b.close()

    a.send("b", b"x")

    assert a.stats.dropped["peer_unreachable"] == 1


def test_in_memory_recv_times_out_with_none() -> None:
    net = InMemoryNetwork()
    a = net.attach("a")

    start = time.monotonic()
    got = a.recv(0.05)

    assert got is None
    assert time.monotonic() - start >= 0.04
    assert a.stats.recv_msgs == 0


def test_in_memory_attach_twice_is_an_error() -> None:
    net = InMemoryNetwork()
    net.attach("a")

    with pytest.raises(ValueError, match="already attached"):
        net.attach("a")


# --- ZmqTransport --------------------------------------------------------------------------


@pytest.fixture
def zmq_pair() -> Iterator[tuple[ZmqTransport, ZmqTransport]]:
    ends = {nid: f"tcp://127.0.0.1:{free_port('127.0.0.1')}" for nid in ("a", "b")}
    made: list[ZmqTransport] = []
    try:
        for nid in ("a", "b"):
            peers = {p: e for p, e in ends.items() if p != nid}
            made.append(ZmqTransport(nid, ends[nid], peers, max_frame_bytes=MAX_FRAME))
        yield made[0], made[1]
    finally:
        for t in made:
            t.close()


def test_zmq_exchanges_frames_both_ways(zmq_pair: tuple[ZmqTransport, ZmqTransport]) -> None:
    a, b = zmq_pair

    a.send("b", b"ping")
    got_b = b.recv(RECV_TIMEOUT_S)
    b.send("a", b"pong")
    got_a = a.recv(RECV_TIMEOUT_S)

    assert got_b == b"ping"
    assert got_a == b"pong"
    assert (a.stats.sent_msgs, a.stats.recv_msgs) == (1, 1)
    assert (b.stats.sent_bytes, b.stats.recv_bytes) == (4, 4)


def test_zmq_carries_a_5_mb_frame_intact(zmq_pair: tuple[ZmqTransport, ZmqTransport]) -> None:
    a, b = zmq_pair
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256)

    a.send("b", big)
    got = b.recv(RECV_TIMEOUT_S)

    assert got == big
    assert b.stats.recv_bytes == len(big) == a.stats.sent_bytes


def test_zmq_keeps_order_from_one_sender(zmq_pair: tuple[ZmqTransport, ZmqTransport]) -> None:
    a, b = zmq_pair

    for i in range(50):
        a.send("b", i.to_bytes(1, "big"))
    got = [b.recv(RECV_TIMEOUT_S) for _ in range(50)]

    assert got == [i.to_bytes(1, "big") for i in range(50)]


def test_zmq_unknown_peer_is_counted(zmq_pair: tuple[ZmqTransport, ZmqTransport]) -> None:
    a, _ = zmq_pair

    a.send("nobody", b"x")

    assert a.stats.dropped["unknown_peer"] == 1
    assert a.stats.sent_msgs == 0


def test_zmq_recv_times_out_with_none(zmq_pair: tuple[ZmqTransport, ZmqTransport]) -> None:
    _, b = zmq_pair

    start = time.monotonic()
    got = b.recv(0.05)

    assert got is None
    assert time.monotonic() - start >= 0.04
    assert b.stats.recv_msgs == 0
