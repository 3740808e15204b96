"""The topology sections of a scenario (the hierarchy's shape and its link classes): defined
once here, in the package that builds topologies, and embedded in the orchestrator's
`Scenario`; `TopologySection.to_params()` gives the builder's `HierarchyParams`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from topologies.builders import CellularParams, DelayDist, FixedLink, HierarchyParams


class Settings(BaseModel):
    """The base of every scenario section (here: the lowest package that holds sections):
    frozen, strict, unknown fields refused (a typo is an error, not an ignored setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


MAX_NODES = 10_000
MAX_LINKS = 500_000

LossPct = Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)]
Mbit = Annotated[float, Field(ge=0.001, le=1e6, allow_inf_nan=False)]
Millis = Annotated[float, Field(ge=0, le=60_000, allow_inf_nan=False)]
Dbm = Annotated[float, Field(ge=-60, le=80, allow_inf_nan=False)]
Metres = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]
TimesT = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


class DelayDistSection(Settings):
    """A link class whose delay is drawn per link from Normal(mean_t·t, sd_t·t), truncated at 0."""

    mean_t: TimesT
    sd_t: TimesT
    bandwidth_mbit: Mbit
    jitter_ms: Millis = 0.0
    loss_pct: LossPct = 0.0


class FixedLinkSection(Settings):
    """A link class with fixed parameters."""

    bandwidth_mbit: Mbit = 1000.0
    delay_ms: Millis = 0.1
    jitter_ms: Millis = 0.0
    loss_pct: LossPct = 0.0


class CellularSection(Settings):
    """Device↔BS radio links, rates from the Shannon formula (see topologies.builders)."""

    bandwidth_mhz: Annotated[float, Field(ge=0.001, le=10_000, allow_inf_nan=False)] = 20.0
    device_power_dbm: Dbm = 23.0
    bs_power_dbm: Dbm = 43.0
    noise_psd_dbm_hz: Annotated[float, Field(ge=-200, le=-100, allow_inf_nan=False)] = -174.0
    distance_min_m: Metres = 100.0
    distance_max_m: Metres = 250.0
    path_loss_exponent: Annotated[float, Field(ge=1, le=8, allow_inf_nan=False)] = 3.76
    rayleigh_fading: bool = True
    max_rate_mbit: Mbit = 1000.0
    min_rate_mbit: Mbit = 0.01
    delay_ms: Millis = 5.0
    jitter_ms: Millis = 0.0
    loss_pct: LossPct = 0.0

    @model_validator(mode="after")
    def _distances_ordered(self) -> CellularSection:
        if self.distance_max_m < self.distance_min_m:
            raise ValueError("distance_max_m must be >= distance_min_m")
        return self


_DEFAULT_HIERARCHY = HierarchyParams()


class TopologySection(Settings):
    """The BS → MEC → device hierarchy and its link classes (t_ms is the papers' unit t)."""

    base_stations: Annotated[int, Field(ge=1, le=1000)] = 1
    mecs_per_bs: Annotated[int, Field(ge=1, le=1000)] = 2
    devices_per_mec: Annotated[int, Field(ge=1, le=1000)] = 5
    t_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 10.0
    backhaul: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.backhaul))
    d2d: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.d2d))
    cellular: CellularSection = CellularSection()
    fronthaul: FixedLinkSection = FixedLinkSection()
    lan: FixedLinkSection = FixedLinkSection()

    @model_validator(mode="after")
    def _not_too_large(self) -> TopologySection:
        mecs = self.base_stations * self.mecs_per_bs
        devices = mecs * self.devices_per_mec
        nodes = mecs + devices + 1
        links = 2 * mecs + 2 * devices + mecs * (mecs - 1) + devices * (self.devices_per_mec - 1)
        if nodes > MAX_NODES or links > MAX_LINKS:
            raise ValueError(
                f"{nodes} node processes and {links} directed links is too large; allowed: "
                f"at most {MAX_NODES} node processes and {MAX_LINKS} directed links"
            )
        return self

    def to_params(self) -> HierarchyParams:
        """The builder's parameters for this section."""
        return HierarchyParams(
            bs_count=self.base_stations,
            mecs_per_bs=self.mecs_per_bs,
            devices_per_mec=self.devices_per_mec,
            t_ms=self.t_ms,
            backhaul=DelayDist(**self.backhaul.model_dump()),
            d2d=DelayDist(**self.d2d.model_dump()),
            cellular=CellularParams(**self.cellular.model_dump()),
            fronthaul=FixedLink(**self.fronthaul.model_dump()),
            lan=FixedLink(**self.lan.model_dump()),
        )
