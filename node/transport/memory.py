"""An in-process transport for tests: a hub of queues, one per node id."""

from __future__ import annotations

import queue

from node.transport.base import TransportStats


class InMemoryNetwork:
    """Delivers frames between `InMemoryTransport`s attached to it."""

    def __init__(self) -> None:
        self._inboxes: dict[str, queue.Queue[bytes]] = {}

    def attach(self, node_id: str) -> InMemoryTransport:
        """A transport for `node_id` on this network."""
        if node_id in self._inboxes:
            raise ValueError(f"node {node_id!r} is already attached")
        self._inboxes[node_id] = queue.Queue()
        return InMemoryTransport(node_id, self)

    def detach(self, node_id: str) -> None:
        """Forget `node_id`: frames to it are dropped from now on."""
        self._inboxes.pop(node_id, None)

    def deliver(self, dst: str, frame: bytes) -> bool:
        """Put `frame` into `dst`'s inbox; False if `dst` is not attached."""
        inbox = self._inboxes.get(dst)
        if inbox is None:
            return False
        inbox.put(frame)
        return True

    def inbox(self, node_id: str) -> queue.Queue[bytes]:
        """The queue of frames waiting for `node_id`."""
        return self._inboxes[node_id]


class InMemoryTransport:
    """A `Transport` whose peers live in the same process."""

    def __init__(self, node_id: str, network: InMemoryNetwork) -> None:
        self.node_id = node_id
        self.stats = TransportStats()
        self._network = network

    def send(self, dst: str, frame: bytes) -> None:
        """Deliver at once; count a drop if `dst` is unknown."""
        if self._network.deliver(dst, frame):
            self.stats.sent_msgs += 1
            self.stats.sent_bytes += len(frame)
        else:
            self.stats.dropped["peer_unreachable"] += 1

    def recv(self, timeout_s: float | None) -> bytes | None:
        """The next frame, or None on timeout."""
        try:
            frame = self._network.inbox(self.node_id).get(timeout=timeout_s)
        except queue.Empty:
            return None
        self.stats.recv_msgs += 1
        self.stats.recv_bytes += len(frame)
        return frame

    def close(self) -> None:
        """Leave the network."""
        self._network.detach(self.node_id)
