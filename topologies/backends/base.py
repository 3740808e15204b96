"""The `Backend` interface: where node daemons run and how their links are shaped."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from topologies.spec import TopologySpec


@dataclass(frozen=True)
class Launch:
    """One node daemon to start: its argv, extra environment, log file and the seed a forked
    daemon's global RNGs (`random`, numpy, torch) start from (None: the fork server's choice)."""

    node_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_path: Path
    seed: int | None = None


def child_seed(scenario_seed: int, node_id: str) -> int:
    """A node's RNG seed from the scenario's seed and its id (the same in every run, different
    per node; a 63-bit integer, which torch, numpy (mod 2**32) and `random` all accept)."""
    digest = hashlib.sha256(f"{scenario_seed}:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Backend(Protocol):
    """Starts node processes for a topology and stops exactly those."""

    name: str
    shaping: str

    def endpoints(self, spec: TopologySpec) -> dict[str, str]:
        """The ZeroMQ endpoint each daemon binds (and its peers connect to)."""
        ...

    def start(self, launches: list[Launch]) -> None:
        """Start every daemon."""
        ...

    def pids(self) -> dict[str, int]:
        """Node id -> PID of the processes this backend started."""
        ...

    def poll(self) -> dict[str, int | None]:
        """Node id -> exit code, or None while running."""
        ...

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate what is still running (SIGTERM, then SIGKILL after `grace_s`)."""
        ...
