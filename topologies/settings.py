"""The topology sections of a scenario (the hierarchy's shape and its link classes): defined
once here, in the package that builds topologies, and embedded in the orchestrator's
`Scenario`; `TopologySection.to_params()` gives the builder's `HierarchyParams`."""

from __future__ import annotations

import math
import reprlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from topologies.builders import (
    CellularParams,
    DelayDist,
    DeviceCount,
    FixedLink,
    HierarchyParams,
    UniformCount,
)


class Settings(BaseModel):
    """The base of every scenario section (here: the lowest package that holds sections):
    frozen, strict, unknown fields refused (a typo is an error, not an ignored setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


MAX_NODES = 10_000
MAX_LINKS = 500_000
MAX_DEVICES_PER_MEC = 1000

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


class UniformCountSection(Settings):
    """``{uniform: [LO, HI]}``: each MEC's device count drawn once, uniformly from LO..HI
    inclusive, with the run's seed (BEES: UEs per edge server ~ U(3, 7))."""

    uniform: tuple[
        Annotated[int, Field(ge=1, le=MAX_DEVICES_PER_MEC)],
        Annotated[int, Field(ge=1, le=MAX_DEVICES_PER_MEC)],
    ]


DevicesPerMec = Annotated[int, Field(ge=1, le=MAX_DEVICES_PER_MEC)] | UniformCountSection
D2d = DelayDistSection | Literal[False]

_UNIFORM_NEED = f"need [LO, HI] integers with 1 <= LO <= HI <= {MAX_DEVICES_PER_MEC}"
_D2D_ALLOWED = f"a link class {{{', '.join(DelayDistSection.model_fields)}}} or off"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SHOWN_CHARS = 80  # as orchestrator.errors.show: an error line stays one short line
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHOWN_CHARS
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 3, 4, 4, 4


def shown(value: object) -> str:
    """A value as a scenario file writes it (true, false, null), else its repr, at most
    80 characters (a huge integer is named by its size, never converted to digits)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = _SHORT.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _nested_error(loc: tuple[str, ...], value: object, message: str) -> ValidationError:
    """A ValidationError at `loc` below the field being validated (pydantic prefixes the
    field's own location), so the message names e.g. topology.devices_per_mec.uniform."""
    error = PydanticCustomError("value_error", message)
    return ValidationError.from_exception_data(
        "topology", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


def _devices_per_mec(value: object) -> object:
    """An integer 1..MAX_DEVICES_PER_MEC or ``{uniform: [LO, HI]}``; anything else is a
    ValueError naming the allowed forms (not pydantic's one error per union member)."""
    if isinstance(value, UniformCountSection):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_DEVICES_PER_MEC:
            return value
    elif isinstance(value, dict) and set(value) == {"uniform"}:
        bounds = value["uniform"]
        if (
            isinstance(bounds, list | tuple)
            and len(bounds) == 2
            and all(_is_int(b) for b in bounds)
            and 1 <= bounds[0] <= bounds[1] <= MAX_DEVICES_PER_MEC
        ):
            return UniformCountSection(uniform=(bounds[0], bounds[1]))
        raise _nested_error(("uniform",), bounds, f"{_UNIFORM_NEED}, got {shown(bounds)}")
    raise ValueError(
        f"{shown(value)} is invalid; allowed: an integer 1..{MAX_DEVICES_PER_MEC} or "
        "{uniform: [LO, HI]}"
    )


def _d2d(value: object) -> object:
    """A D2D link class, or off (YAML ``off``/``false``, or the string "off"): no D2D links."""
    if value is False or value == "off":
        return False
    if isinstance(value, DelayDistSection):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{shown(value)} is invalid; allowed: {_D2D_ALLOWED}")
    try:
        return DelayDistSection.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":  # the scenario's wording for an unknown field
            allowed = ", ".join(DelayDistSection.model_fields)
            raise _nested_error(loc, err["input"], f"unknown field; allowed: {allowed}") from None
        raise


_DEFAULT_HIERARCHY = HierarchyParams()
_DEFAULT_D2D = _DEFAULT_HIERARCHY.d2d or DelayDist(mean_t=0.5, sd_t=0.25, bandwidth_mbit=50.0)


class TopologySection(Settings):
    """The BS → MEC → device hierarchy and its link classes (t_ms is the papers' unit t)."""

    base_stations: Annotated[int, Field(ge=1, le=1000)] = 1
    mecs_per_bs: Annotated[int, Field(ge=1, le=1000)] = 2
    devices_per_mec: DevicesPerMec = 5
    t_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 10.0
    backhaul: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.backhaul))
    d2d: D2d = DelayDistSection(**vars(_DEFAULT_D2D))
    cellular: CellularSection = CellularSection()
    fronthaul: FixedLinkSection = FixedLinkSection()
    lan: FixedLinkSection = FixedLinkSection()

    _check_devices_per_mec = field_validator("devices_per_mec", mode="before")(_devices_per_mec)
    _check_d2d = field_validator("d2d", mode="before")(_d2d)

    @property
    def max_devices_per_mec(self) -> int:
        """The most devices one MEC can get (HI of a distribution)."""
        count = self.devices_per_mec
        return count.uniform[1] if isinstance(count, UniformCountSection) else count

    @model_validator(mode="after")
    def _not_too_large(self) -> TopologySection:
        """Refuse a hierarchy too large to run, counted at its worst case (every MEC with
        the most devices a distribution can draw)."""
        per_mec = self.max_devices_per_mec
        mecs = self.base_stations * self.mecs_per_bs
        devices = mecs * per_mec
        nodes = mecs + devices + 1
        d2d = devices * (per_mec - 1) if self.d2d is not False else 0
        links = 2 * mecs + 2 * devices + mecs * (mecs - 1) + d2d
        if nodes > MAX_NODES or links > MAX_LINKS:
            raise ValueError(
                f"{nodes} node processes and {links} directed links is too large; allowed: "
                f"at most {MAX_NODES} node processes and {MAX_LINKS} directed links"
            )
        return self

    def to_params(self) -> HierarchyParams:
        """The builder's parameters for this section (per-MEC counts: `device_counts(seed)`)."""
        count = self.devices_per_mec
        devices: DeviceCount = (
            UniformCount(*count.uniform) if isinstance(count, UniformCountSection) else count
        )
        return HierarchyParams(
            bs_count=self.base_stations,
            mecs_per_bs=self.mecs_per_bs,
            devices_per_mec=devices,
            t_ms=self.t_ms,
            backhaul=DelayDist(**self.backhaul.model_dump()),
            d2d=None if self.d2d is False else DelayDist(**self.d2d.model_dump()),
            cellular=CellularParams(**self.cellular.model_dump()),
            fronthaul=FixedLink(**self.fronthaul.model_dump()),
            lan=FixedLink(**self.lan.model_dump()),
        )
