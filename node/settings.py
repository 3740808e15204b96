"""The node's scenario sections share `Settings` (frozen, strict, unknown fields refused;
defined in `topologies.settings`) and the `Seconds` bound. Each section is defined
once, in the package that owns the setting (`node.learning.settings`, `node.ledger.settings`,
`topologies.settings`, `topologies.backends.settings`), and embedded both in the
orchestrator's `Scenario` and, where a node needs it, in its `NodeConfig`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from topologies.settings import Settings

Seconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]

__all__ = ["Seconds", "Settings"]
