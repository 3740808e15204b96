"""The containernet backend's scenario section (its node image and container limits): defined
once here and embedded in the orchestrator's `Scenario`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from topologies.settings import Settings


class ContainerLimits(Settings):
    """CPU and memory limits of one container (None: no limit)."""

    cpus: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False)] | None = None
    memory_mb: Annotated[int, Field(ge=64, le=1 << 22)] | None = None


class ContainersSection(ContainerLimits):
    """The containernet backend: the node image and per-container limits; `cpus` and
    `memory_mb` here apply to every container unless its role's entry sets them."""

    image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")] | None = None
    mec: ContainerLimits = ContainerLimits()
    device: ContainerLimits = ContainerLimits()
    publisher: ContainerLimits = ContainerLimits()

    def limits(self, role: str) -> ContainerLimits:
        """The limits of a container of this role (mec, device or publisher)."""
        own: ContainerLimits = getattr(self, role)
        return ContainerLimits(
            cpus=own.cpus if own.cpus is not None else self.cpus,
            memory_mb=own.memory_mb if own.memory_mb is not None else self.memory_mb,
        )
