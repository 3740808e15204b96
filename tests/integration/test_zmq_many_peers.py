"""A node with more peers than a ZeroMQ context's default socket limit (1023) reaches them all:
the context's limit follows the peer count, and the soft RLIMIT_NOFILE is raised to the hard
limit (the publisher of a 1,000-device run sends to every node)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
import zmq

from node.limits import ZMQ_DEFAULT_MAX_SOCKETS, fds_needed, zmq_max_sockets
from node.transport.zmq import ZmqTransport
from topologies.backends.local import free_port

pytestmark = pytest.mark.integration

PEERS = ZMQ_DEFAULT_MAX_SOCKETS + 77  # 1,100: past the default limit
MAX_FRAME = 1024 * 1024
DEADLINE_S = 120.0


@pytest.fixture
def low_soft_nofile() -> Iterator[None]:
    """The usual desktop/CI soft limit (1024) for the test; the hard limit is left alone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * fds_needed(PEERS)  # sender and receiver live in this one process
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below the {need} fds this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_context_socket_limit_follows_the_peer_count() -> None:
    assert zmq_max_sockets(3) == ZMQ_DEFAULT_MAX_SOCKETS
    assert zmq_max_sockets(PEERS) > PEERS
    bind = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    peers = {f"n{i}": "tcp://127.0.0.1:1" for i in range(PEERS)}
    t = ZmqTransport("pub", bind, peers, MAX_FRAME)
    try:
        assert t._ctx.get(zmq.MAX_SOCKETS) == zmq_max_sockets(PEERS)
    finally:
        t.close()


def test_a_node_sends_to_more_peers_than_the_default_socket_limit(low_soft_nofile: None) -> None:
    rx_bind = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    receiver = ZmqTransport("rx", rx_bind, {}, MAX_FRAME)
    # every peer id resolves to the receiver: one PUSH socket (and connection) per peer
    peers = {f"dev{i}": rx_bind for i in range(PEERS)}
    sender = ZmqTransport("pub", f"tcp://127.0.0.1:{free_port('127.0.0.1')}", peers, MAX_FRAME)
    try:
        for i in range(PEERS):
            sender.send(f"dev{i}", f"frame {i}".encode())
        got = set()
        while len(got) < PEERS:
            frame = receiver.recv(DEADLINE_S)
            assert frame is not None, f"only {len(got)}/{PEERS} frames arrived"
            got.add(frame)

        assert got == {f"frame {i}".encode() for i in range(PEERS)}
        assert sender.stats.sent_msgs == PEERS and not sender.stats.dropped
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= fds_needed(PEERS)
    finally:
        sender.close()
        receiver.close()
