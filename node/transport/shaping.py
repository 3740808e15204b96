"""User-space link shaping on the sending side: delay, jitter, bandwidth and loss.

How it works
------------
The local backend has no kernel shaping, so each node delays its own outgoing frames.
For a frame to `dst`, `LinkShaper.plan` walks the route the topology gives (the directed
links of the fewest-hops path). The first hop is this node's own link: the frame waits
until the link is free (a FIFO queue per directed link), then takes ``size * 8 / rate``
seconds to serialize. Every hop then adds its delay plus a Normal(0, jitter) sample
(the sum truncated at 0), later hops add their own serialization time (store and
forward), and every hop drops the frame with its loss probability. `ShapedTransport`
holds each frame in a heap until its delivery time and hands it to the real transport
from one sender thread.

Limit (said in the run's meta.json too): a node only knows its own traffic, so queueing
behind other nodes' traffic at a shared hop is not modelled; the kernel backends do that.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from node.transport.base import Transport, TransportStats
from topologies import LinkSpec, TopologyError, TopologySpec

log = logging.getLogger(__name__)


class LinkState:
    """Links the orchestrator has taken down, read from a JSON file it rewrites.

    The file holds ``[[src, dst], ...]`` (both directions are listed); it is re-read when
    its modification time changes, at most every POLL_S seconds.
    """

    POLL_S = 0.1

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._next_check = 0.0
        self.down: frozenset[tuple[str, str]] = frozenset()

    def _refresh(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + self.POLL_S
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            self.down = frozenset()
            return
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                pairs = json.loads(self._path.read_text())
                self.down = frozenset((str(a), str(b)) for a, b in pairs)
            except (ValueError, TypeError):
                log.warning("unreadable link state file %s; keeping the last state", self._path)

    def blocks(self, route: tuple[LinkSpec, ...], now: float) -> bool:
        """True if a link of `route` is down."""
        self._refresh(now)
        return any((link.src, link.dst) in self.down for link in route)


class LinkShaper:
    """Plans when (or whether) a frame sent now reaches its destination."""

    def __init__(
        self,
        topology: TopologySpec,
        node_id: str,
        rng: np.random.Generator,
        link_state: LinkState | None = None,
        bandwidth: bool = True,
    ) -> None:
        """`bandwidth=False`: the kernel shapes bandwidth (the mininet backend without
        netem); only delay, jitter and loss are applied here."""
        self._bandwidth = bandwidth
        self._topology = topology
        self._node_id = node_id
        self._rng = rng
        self._busy_until: dict[tuple[str, str], float] = {}
        self._link_state = link_state

    def route(self, dst: str) -> tuple[LinkSpec, ...]:
        """The directed links a frame to `dst` crosses."""
        return self._topology.route(self._node_id, dst)

    def plan(self, dst: str, nbytes: int, now: float) -> float | None:
        """The delivery time of a frame of `nbytes` sent at `now`, or None if a link loses it."""
        t = now
        route = self.route(dst)
        if self._link_state is not None and self._link_state.blocks(route, now):
            return None
        for hop, link in enumerate(route):
            serialization = nbytes * 8 / (link.bandwidth_mbit * 1e6) if self._bandwidth else 0.0
            if hop == 0 and self._bandwidth:
                key = (link.src, link.dst)
                t = max(t, self._busy_until.get(key, t)) + serialization
                self._busy_until[key] = t
            else:
                t += serialization
            delay = link.delay_ms
            if link.jitter_ms > 0:
                delay = max(0.0, delay + float(self._rng.normal(0.0, link.jitter_ms)))
            t += delay / 1000.0
            if link.loss_pct > 0 and float(self._rng.random()) * 100.0 < link.loss_pct:
                return None
        return t


class ShapedTransport:
    """Wraps a transport so that every frame is delayed and possibly lost as `LinkShaper` plans."""

    def __init__(
        self,
        inner: Transport,
        shaper: LinkShaper,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = inner.node_id
        self.stats: TransportStats = inner.stats
        self._inner = inner
        self._shaper = shaper
        self._clock = clock
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._in_flight = 0
        self._thread = threading.Thread(
            target=self._run, name=f"shaper-{self.node_id}", daemon=True
        )
        self._thread.start()

    def send(self, dst: str, frame: bytes) -> None:
        """Schedule `frame` for its planned delivery time (or count it lost)."""
        try:
            due = self._shaper.plan(dst, len(frame), self._clock())
        except TopologyError:
            self.stats.dropped["unknown_peer"] += 1
            return
        if due is None:
            self.stats.dropped["link_loss"] += 1  # random loss, or a link that is down
            return
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._counter), dst, frame))
            self._cond.notify()

    def recv(self, timeout_s: float | None) -> bytes | None:
        """Frames arrive unshaped: shaping happens at their senders."""
        return self._inner.recv(timeout_s)

    def pending(self) -> int:
        """Frames planned but not yet handed to the real transport."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def flush(self, timeout_s: float) -> bool:
        """Wait until every planned frame has been sent; False on timeout."""
        deadline = self._clock() + timeout_s
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Stop the sender thread (dropping pending frames), then close the inner transport."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._inner.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._cond.wait(wait)
                if self._closing:
                    return
                _, _, dst, frame = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._inner.send(dst, frame)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()
