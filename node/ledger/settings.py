"""The ledger section of a scenario: defined once here, embedded in `Scenario`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from node.settings import Settings


class LedgerSettings(Settings):
    """Every node's ledger: the task's reward pool, SQLite durability, for schemes that
    let it be chosen, who orders the blocks (``single``: one writer; ``pbft``: a committee),
    and how devices that do not order blocks keep the task chain (``full``: validate and
    execute every block; ``light``: check each block's header link, certificate and Merkle
    root only, `node.ledger.light`; the default: a vanilla device never reads the chain's
    state, and keeping it cost each device ~2.5 ms of CPU per round, bench/round_cpu.py),
    and whether every node's ledger emulates the two-layer paper's block storage time t
    (``storage_time``: ``none``, the default, appends at full speed; ``t``: every append of
    a block above genesis takes at least the topology's ``t_ms``, `node.ledger.storage_time`;
    either way each node records when each block was proposed, received and stored)."""

    reward_pool: Annotated[int, Field(ge=0, le=2**62)] = 10_000
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    consensus: Literal["single", "pbft"] = "single"
    device_replica: Literal["full", "light"] = "light"
    storage_time: Literal["none", "t"] = "none"

    def storage_time_ms(self, t_ms: float) -> float:
        """The storage time each node's ledger emulates, given the topology's unit `t_ms`
        (0: none)."""
        return float(t_ms) if self.storage_time == "t" else 0.0
