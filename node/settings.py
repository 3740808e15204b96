"""The base of every scenario section: a frozen, strict pydantic model that forbids unknown
fields (a typo is an error, not a silently ignored setting), and the bounded number types the
sections share. Each section is defined once, in the package that owns the setting
(`node.learning.settings`, `node.ledger.settings`, `topologies.settings`, ...), and embedded
both in the orchestrator's `Scenario` and, where a node needs it, in its `NodeConfig`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]


class Settings(BaseModel):
    """A scenario section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
