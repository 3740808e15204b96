"""The node daemon's event loop: receive, verify, dispatch to the role, fire timers.

How it works
------------
One thread runs the loop. It waits on the transport for at most the time to the next
timer, decodes and verifies each frame with the codec (a bad frame is counted under its
reason, logged, and dropped; the loop goes on), hands verified messages to the role,
and fires due timers. The role sends through this object (the `NodeContext`), so roles
never touch sockets, clocks or keys. The loop ends when the role calls `stop()` or on
SIGTERM/SIGINT; pending shaped sends are then flushed and the counters are written.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any

from node.codec import Codec, DecodeError
from node.config import NodeConfig
from node.metrics import MetricsWriter
from node.roles.base import Role
from node.transport.base import Transport
from topologies import NodeSpec, TopologySpec

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.5
LOG_FIRST_DROPS = 20


class Daemon:
    """Runs one role over one transport; implements `NodeContext` for the role."""

    def __init__(
        self,
        config: NodeConfig,
        topology: TopologySpec,
        transport: Transport,
        codec: Codec,
        role: Role,
        metrics: MetricsWriter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = config.node_id
        self.config = config
        self.topology = topology
        self.metrics = metrics
        self.drops: Counter[str] = Counter()
        self._transport = transport
        self._codec = codec
        self._role = role
        self._clock = clock
        self._timers: dict[str, float] = {}
        self._stopping = False

    # -- NodeContext -------------------------------------------------------------------
    @property
    def me(self) -> NodeSpec:
        """This node's spec."""
        return self.topology.node(self.node_id)

    def now(self) -> float:
        """Monotonic seconds."""
        return self._clock()

    def send(self, dst: str, msg_type: str, payload: Mapping[str, Any]) -> None:
        """Sign and send one message."""
        self.multicast((dst,), msg_type, payload)

    def multicast(self, dsts: Iterable[str], msg_type: str, payload: Mapping[str, Any]) -> None:
        """Encode once, send to each destination."""
        try:
            frame = self._codec.encode(msg_type, payload)
        except ValueError as exc:
            self.drop("unsendable", str(exc))
            return
        for dst in dsts:
            self._transport.send(dst, frame)

    def set_timer(self, name: str, delay_s: float) -> None:
        """Fire `name` after `delay_s`."""
        self._timers[name] = self._clock() + delay_s

    def cancel_timer(self, name: str) -> None:
        """Forget timer `name`."""
        self._timers.pop(name, None)

    def stop(self) -> None:
        """End the loop after the current callback."""
        self._stopping = True

    def drop(self, reason: str, detail: str = "") -> None:
        """Count (and log, at first) a message dropped for `reason`."""
        self.drops[reason] += 1
        n = self.drops[reason]
        if n <= LOG_FIRST_DROPS or n % 100 == 0:
            log.warning("dropped message #%d for %s%s", n, reason, f": {detail}" if detail else "")

    # -- loop ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the transport and the metrics file."""
        self._transport.close()
        self.metrics.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        self._stopping = True

    def _fire_due_timers(self) -> None:
        now = self._clock()
        for name, due in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if due <= now and self._timers.get(name) == due:
                del self._timers[name]
                self._role.on_timer(self, name)

    def _wait_s(self) -> float:
        if not self._timers:
            return MAX_WAIT_S
        return max(0.0, min(MAX_WAIT_S, min(self._timers.values()) - self._clock()))

    def handle_frame(self, frame: bytes) -> None:
        """Verify one frame and dispatch it (or count why it was dropped)."""
        try:
            msg = self._codec.decode(frame)
        except DecodeError as exc:
            self.drop(exc.reason, exc.detail)
            return
        self._role.on_message(self, msg)

    def run(self, install_signal_handlers: bool = True) -> None:
        """Run until the role stops the node or a signal arrives."""
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._role.start(self)
        while not self._stopping:
            frame = self._transport.recv(self._wait_s())
            if frame is not None:
                self.handle_frame(frame)
            self._fire_due_timers()
        self._role.finish(self)
        flush = getattr(self._transport, "flush", None)
        if flush is not None and not flush(10.0):
            log.warning("some shaped frames were still pending at exit")
        stats = self._transport.stats
        dropped = dict(self.drops + stats.dropped)
        self.metrics.write(
            "counters",
            sent_msgs=stats.sent_msgs,
            sent_bytes=stats.sent_bytes,
            recv_msgs=stats.recv_msgs,
            recv_bytes=stats.recv_bytes,
            dropped=dropped,
        )
        log.info(
            "stopped; sent %d msgs, received %d, dropped %s",
            stats.sent_msgs,
            stats.recv_msgs,
            dropped or "none",
        )
