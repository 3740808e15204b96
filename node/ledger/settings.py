"""The ledger section of a scenario: defined once here, embedded in `Scenario`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from node.settings import Settings


class LedgerSettings(Settings):
    """Every node's ledger: the task's reward pool, SQLite durability, and, for schemes that
    let it be chosen, who orders the blocks (``single``: one writer; ``pbft``: a committee)."""

    reward_pool: Annotated[int, Field(ge=0, le=2**62)] = 10_000
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    consensus: Literal["single", "pbft"] = "single"
