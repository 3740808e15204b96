"""A seeded discrete-event network for sans-IO PBFT cores, checking safety at every step.

How it works: a heap of (time, tiebreak, event) holds deliveries, proposals and timer
expiries; the clock jumps to the next event. Before `stable_at` each delivery may be
dropped, duplicated, or cut by an active partition; delays are random, so messages reorder.
A `Send` goes to every endpoint with that id (Twins share one), a `Broadcast` to every
endpoint with another id. Every `Commit` of an honest endpoint is checked at once: no two
honest endpoints may commit different digests at one sequence number, and each endpoint
delivers sequence numbers in increasing order and each digest once.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.consensus.actions import Action, Broadcast, Commit, Send, StartTimer, StopTimer


class Endpoint(Protocol):
    """Anything that behaves like a PbftReplica towards the network."""

    id: str

    def propose(self, request: bytes, now: float) -> list[Action]: ...
    def handle(self, sender: str, msg: bytes, now: float) -> list[Action]: ...
    def on_timer(self, name: str, now: float) -> list[Action]: ...


@dataclass
class NetConfig:
    """Network faults; all stop at `stable_at` (partitions also at their own end)."""

    drop: float = 0.0
    dup: float = 0.0
    min_delay: float = 0.001
    max_delay: float = 0.02
    stable_at: float = 0.0
    partitions: list[tuple[frozenset[str], float, float]] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)  # extra delay to/from a replica id


class SafetyViolation(AssertionError):
    """Two honest replicas disagree, or one delivered out of order or twice."""


class Sim:
    """Endpoints, a fake clock and a priority queue of events."""

    def __init__(
        self, endpoints: list[Endpoint], honest: list[bool], net: NetConfig, seed: int
    ) -> None:
        self.endpoints = endpoints
        self.honest = honest
        self.net = net
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events = 0
        self._queue: list[tuple[float, int, str, int, Any]] = []
        self._tick = 0
        self._timers: dict[tuple[int, str], int] = {}
        self.commits: list[dict[int, bytes]] = [{} for _ in endpoints]
        self.digests: list[set[bytes]] = [set() for _ in endpoints]
        self._decided: dict[int, bytes] = {}

    def _push(self, at: float, kind: str, idx: int, payload: Any) -> None:
        self._tick += 1
        heapq.heappush(self._queue, (at, self._tick, kind, idx, payload))

    def submit(self, at: float, request: bytes, to: list[str] | None = None) -> None:
        """A client submits `request` at time `at` to `to` (default: every endpoint)."""
        for idx, ep in enumerate(self.endpoints):
            if to is None or ep.id in to:
                self._push(at, "propose", idx, request)

    def _cut(self, src: str, dst: str) -> bool:
        for side, start, end in self.net.partitions:
            if start <= self.now < min(end, self.net.stable_at) and (src in side) != (dst in side):
                return True
        return False

    def _deliver(self, src: str, dst_idx: int, data: bytes) -> None:
        dst = self.endpoints[dst_idx].id
        unstable = self.now < self.net.stable_at
        if unstable and (self.rng.random() < self.net.drop or self._cut(src, dst)):
            return
        copies = 2 if unstable and self.rng.random() < self.net.dup else 1
        for _ in range(copies):
            delay = self.rng.uniform(self.net.min_delay, self.net.max_delay)
            delay += self.net.slow.get(src, 0.0) + self.net.slow.get(dst, 0.0)
            self._push(self.now + delay, "msg", dst_idx, (src, data))

    def apply(self, idx: int, actions: list[Action]) -> None:
        """Carry out an endpoint's actions."""
        src = self.endpoints[idx].id
        for act in actions:
            if isinstance(act, Send):
                for j, ep in enumerate(self.endpoints):
                    if ep.id == act.dst and j != idx:
                        self._deliver(src, j, act.data)
            elif isinstance(act, Broadcast):
                for j, ep in enumerate(self.endpoints):
                    if ep.id != src:
                        self._deliver(src, j, act.data)
            elif isinstance(act, StartTimer):
                self._tick += 1
                self._timers[(idx, act.name)] = self._tick
                self._push(self.now + act.delay_s, "timer", idx, (act.name, self._tick))
            elif isinstance(act, StopTimer):
                self._timers.pop((idx, act.name), None)
            elif isinstance(act, Commit):
                self._on_commit(idx, act)

    def _on_commit(self, idx: int, c: Commit) -> None:
        if not self.honest[idx]:
            return
        mine = self.commits[idx]
        if mine and c.seq <= max(mine):
            raise SafetyViolation(f"endpoint {idx} delivered seq {c.seq} out of order")
        if c.digest in self.digests[idx]:
            raise SafetyViolation(f"endpoint {idx} delivered a digest twice")
        other = self._decided.setdefault(c.seq, c.digest)
        if other != c.digest:
            raise SafetyViolation(f"two honest replicas committed different requests at {c.seq}")
        mine[c.seq] = c.digest
        self.digests[idx].add(c.digest)

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if not self._queue:
            return False
        at, _, kind, idx, payload = heapq.heappop(self._queue)
        self.now = at
        self.events += 1
        ep = self.endpoints[idx]
        if kind == "msg":
            self.apply(idx, ep.handle(payload[0], payload[1], at))
        elif kind == "propose":
            self.apply(idx, ep.propose(payload, at))
        elif kind == "timer":
            name, token = payload
            if self._timers.get((idx, name)) == token:
                del self._timers[(idx, name)]
                self.apply(idx, ep.on_timer(name, at))
        return True

    def run(self, until: float, done: Callable[[], bool], max_events: int = 500_000) -> None:
        """Run until `done()` holds, the clock passes `until`, or events run out."""
        while self._queue and self._queue[0][0] <= until and self.events < max_events:
            self.step()
            if done():
                return
