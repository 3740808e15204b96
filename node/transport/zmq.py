"""The ZeroMQ transport: one PULL socket bound per node, one PUSH socket per peer.

Frames are opaque here; who sent a frame is established by the codec's signature, not
by the socket it came from. Sends never block: a peer that is down or too slow fills its
queue (high-water mark) and further frames to it are dropped and counted.

At scale (a publisher with 1,000 peers) the context's socket limit is set from the peer count
before the first socket, and the process's soft RLIMIT_NOFILE is raised (`node.limits`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import zmq

from node.limits import fds_needed, raise_nofile, zmq_max_sockets
from node.transport.base import TransportStats

log = logging.getLogger(__name__)

SEND_HWM = 64  # frames queued per peer; bounds memory when a peer is dead (models are MBs)


class ZmqTransport:
    """A `Transport` over real ZeroMQ TCP sockets. `peers` maps node ids to endpoints (this
    node's own entry, if there, is ignored); it is kept, not copied, and must not change."""

    def __init__(
        self,
        node_id: str,
        bind: str,
        peers: Mapping[str, str],
        max_frame_bytes: int,
    ) -> None:
        self.node_id = node_id
        self.stats = TransportStats()
        count = len(peers) - (node_id in peers)
        raise_nofile(fds_needed(count))
        self._ctx = zmq.Context()
        self._ctx.set(zmq.MAX_SOCKETS, zmq_max_sockets(count))  # before any socket
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.MAXMSGSIZE, 2 * max_frame_bytes)
        self._pull.setsockopt(zmq.RCVHWM, 10_000)
        self._pull.bind(bind)
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)
        # Kept, not copied: read only (a run's endpoints, shared by its forked daemons).
        self._peers = peers
        self._push: dict[str, zmq.Socket[bytes]] = {}

    def _socket_to(self, dst: str) -> zmq.Socket[bytes] | None:
        sock = self._push.get(dst)
        if sock is None:
            endpoint = self._peers.get(dst) if dst != self.node_id else None
            if endpoint is None:
                return None
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.connect(endpoint)
            self._push[dst] = sock
        return sock

    def send(self, dst: str, frame: bytes) -> None:
        """Queue `frame` for `dst` without blocking."""
        sock = self._socket_to(dst)
        if sock is None:
            self.stats.dropped["unknown_peer"] += 1
            log.warning("no endpoint for %s; frame dropped", dst)
            return
        try:
            sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.Again:
            self.stats.dropped["peer_backlog"] += 1
            return
        self.stats.sent_msgs += 1
        self.stats.sent_bytes += len(frame)

    def recv(self, timeout_s: float | None) -> bytes | None:
        """The next frame, or None after `timeout_s`."""
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._poller.poll(timeout_ms):
            return None
        frame = self._pull.recv(copy=True)
        self.stats.recv_msgs += 1
        self.stats.recv_bytes += len(frame)
        return frame

    def close(self) -> None:
        """Close every socket and the context (pending frames get LINGER time)."""
        for sock in self._push.values():
            sock.close()
        self._pull.close()
        self._ctx.term()
