"""Builders for the papers' BS / MEC / device hierarchy as a TopologySpec.

How it works: `build_hierarchy(params, seed)` lays out `bs_count` base stations, each with
`mecs_per_bs` MECs, each MEC with its devices (a fixed count, an explicit count per MEC, or
a count drawn once per MEC from U{LO..HI}: BEES's UEs per edge server ~ U(3, 7)), then draws
every link from one seeded stream in a fixed order: cellular (per device, node order),
backhaul (MEC pairs), D2D (device pairs inside each MEC; none with ``d2d=None``), LAN.
Device counts drawn from a distribution come from a second stream derived from the same
seed (our choice), so a scenario with a fixed count draws exactly the links it always did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from itertools import combinations

import numpy as np

from topologies.links import shannon_rate_mbit, truncated_normal
from topologies.spec import LinkKind, LinkSpec, NodeKind, NodeSpec, TopologyError, TopologySpec

logger = logging.getLogger(__name__)

PUBLISHER_ID = "pub"

# The device-count draws' stream: SeedSequence(seed, spawn_key=(COUNT_STREAM,)), apart from
# the links' default_rng(seed) stream (our choice; any fixed key would do).
COUNT_STREAM = 1


@dataclass(frozen=True)
class CellularParams:
    """Device <-> BS radio link parameters (rates from the Shannon formula).

    ``bandwidth_mhz`` B = 20 MHz comes from BEES and is shared equally among the devices
    attached to one BS (our choice; the devices really there, per-MEC counts summed).
    Powers (23 dBm up, 43 dBm down) come from the two-layer paper; N0 = -174 dBm/Hz and
    d ~ U(100, 250) m from BEES. Both papers write the gain as r^-gamma without a value for
    gamma; we use 3.76 (a common urban macro-cell exponent).
    With ``rayleigh_fading`` the gain is multiplied by fading ~ Exp(1), drawn once per device
    and shared by its uplink and downlink (two-layer paper: exponentially distributed gain).
    Rates are clamped to [min_rate_mbit, max_rate_mbit]; the floor (our choice) keeps a
    deep fade from producing an unusable near-zero rate. Delay/jitter/loss are fixed (our choice).
    """

    bandwidth_mhz: float = 20.0
    device_power_dbm: float = 23.0
    bs_power_dbm: float = 43.0
    noise_psd_dbm_hz: float = -174.0
    distance_min_m: float = 100.0
    distance_max_m: float = 250.0
    path_loss_exponent: float = 3.76
    rayleigh_fading: bool = True
    max_rate_mbit: float = 1000.0
    min_rate_mbit: float = 0.01
    delay_ms: float = 5.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class DelayDist:
    """A per-link delay drawn once at build time from Normal(mean_t*t, sd_t*t) truncated at 0."""

    mean_t: float
    sd_t: float
    bandwidth_mbit: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class FixedLink:
    """A link with fixed parameters (fronthaul, LAN)."""

    bandwidth_mbit: float = 1000.0
    delay_ms: float = 0.1
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class UniformCount:
    """A device count drawn once per MEC, uniformly from the integers low..high inclusive."""

    low: int
    high: int


DeviceCount = int | tuple[int, ...] | UniformCount
"""Devices per MEC: the same for every MEC, one per MEC (in MEC order), or drawn per MEC."""


@dataclass(frozen=True)
class HierarchyParams:
    """Shape and link parameters of the BS -> MEC -> device hierarchy (t_ms is the unit t).

    ``d2d=None``: no D2D links at all (BEES has none)."""

    bs_count: int = 1
    mecs_per_bs: int = 2
    devices_per_mec: DeviceCount = 5
    t_ms: float = 10.0
    backhaul: DelayDist = DelayDist(mean_t=2.0, sd_t=1.1, bandwidth_mbit=1000.0)
    d2d: DelayDist | None = DelayDist(mean_t=0.5, sd_t=0.25, bandwidth_mbit=50.0)
    cellular: CellularParams = CellularParams()
    fronthaul: FixedLink = FixedLink()
    lan: FixedLink = FixedLink()
    with_publisher: bool = True

    def __post_init__(self) -> None:
        validate_params(self)

    @property
    def mec_count(self) -> int:
        """MECs in the hierarchy."""
        return self.bs_count * self.mecs_per_bs

    @property
    def max_devices_per_mec(self) -> int:
        """The most devices any one MEC can get (a distribution's upper bound)."""
        count = self.devices_per_mec
        if isinstance(count, UniformCount):
            return count.high
        return count if isinstance(count, int) else max(count)

    def device_counts(self, seed: int) -> tuple[int, ...]:
        """Devices under each MEC (mec0, mec1, ...) in the hierarchy built with `seed`."""
        count = self.devices_per_mec
        if isinstance(count, int):
            return (count,) * self.mec_count
        if isinstance(count, tuple):
            return count
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(COUNT_STREAM,)))
        drawn = rng.integers(count.low, count.high, size=self.mec_count, endpoint=True)
        return tuple(int(n) for n in drawn)


def _num(field: str, value: object, *, low: float, strict: bool, high: float | None = None) -> None:
    """Require a finite number > low (strict) or >= low, and < high if given."""
    ok = False
    if isinstance(value, int | float) and not isinstance(value, bool):
        x = float(value)
        ok = math.isfinite(x) and (x > low if strict else x >= low)
        ok = ok and (high is None or x < high)
    if not ok:
        rel = ">" if strict else ">="
        top = f" and < {high:g}" if high is not None else ""
        raise TopologyError(field, value, f"a finite number {rel} {low:g}{top}")


def _check_common(prefix: str, obj: DelayDist | FixedLink | CellularParams) -> None:
    """Check the bandwidth/delay/jitter/loss fields present on a link parameter object."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}.{f.name}"
        if f.name in ("bandwidth_mbit", "bandwidth_mhz", "max_rate_mbit", "min_rate_mbit"):
            _num(name, value, low=0.0, strict=True)
        elif f.name in ("delay_ms", "jitter_ms", "mean_t", "sd_t"):
            _num(name, value, low=0.0, strict=False)
        elif f.name == "loss_pct":
            _num(name, value, low=0.0, strict=False, high=100.0)


def _count(value: object) -> bool:
    """True for an int >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_device_count(params: HierarchyParams) -> None:
    """Raise TopologyError naming topology.devices_per_mec(.uniform) if the count is bad."""
    count = params.devices_per_mec
    field = "topology.devices_per_mec"
    if isinstance(count, UniformCount):
        lo, hi = count.low, count.high
        if not (_count(lo) and _count(hi) and lo <= hi):
            raise TopologyError(
                f"{field}.uniform", [lo, hi], "[LO, HI] integers with 1 <= LO <= HI"
            )
    elif isinstance(count, tuple):
        mecs = params.mec_count
        if len(count) != mecs or not all(_count(n) for n in count):
            raise TopologyError(field, count, f"one integer >= 1 per MEC ({mecs} MECs)")
    elif not _count(count):
        raise TopologyError(
            field, count, "an integer >= 1, a tuple of one per MEC, or a UniformCount"
        )


def validate_params(params: HierarchyParams) -> None:
    """Raise TopologyError (field like 'topology.devices_per_mec') if params are invalid."""
    for name in ("bs_count", "mecs_per_bs"):
        value = getattr(params, name)
        if not _count(value):
            raise TopologyError(f"topology.{name}", value, "an integer >= 1")
    _check_device_count(params)
    _num("topology.t_ms", params.t_ms, low=0.0, strict=True)
    _check_common("topology.backhaul", params.backhaul)
    if params.d2d is not None:
        if not isinstance(params.d2d, DelayDist):
            raise TopologyError("topology.d2d", params.d2d, "a DelayDist or None (off)")
        _check_common("topology.d2d", params.d2d)
    _check_common("topology.fronthaul", params.fronthaul)
    _check_common("topology.lan", params.lan)
    cell = params.cellular
    _check_common("topology.cellular", cell)
    for name in ("device_power_dbm", "bs_power_dbm", "noise_psd_dbm_hz"):
        _num(f"topology.cellular.{name}", getattr(cell, name), low=-math.inf, strict=True)
    _num("topology.cellular.distance_min_m", cell.distance_min_m, low=0.0, strict=True)
    _num(
        "topology.cellular.distance_max_m",
        cell.distance_max_m,
        low=cell.distance_min_m,
        strict=False,
    )
    _num("topology.cellular.path_loss_exponent", cell.path_loss_exponent, low=0.0, strict=False)
    if cell.max_rate_mbit < cell.min_rate_mbit:
        raise TopologyError(
            "topology.cellular.max_rate_mbit",
            cell.max_rate_mbit,
            f">= min_rate_mbit ({cell.min_rate_mbit:g})",
        )
    if not isinstance(params.with_publisher, bool):
        raise TopologyError("topology.with_publisher", params.with_publisher, "true or false")
    if not isinstance(cell.rayleigh_fading, bool):
        raise TopologyError(
            "topology.cellular.rayleigh_fading", cell.rayleigh_fading, "true or false"
        )


def _pair(
    src: str, dst: str, kind: LinkKind, bw: float, delay: float, jitter: float, loss: float
) -> tuple[LinkSpec, LinkSpec]:
    """Return a physical link as its two directed LinkSpecs with identical parameters."""
    return (
        LinkSpec(src, dst, kind, bw, delay, jitter, loss),
        LinkSpec(dst, src, kind, bw, delay, jitter, loss),
    )


def _fixed_pair(src: str, dst: str, kind: LinkKind, fl: FixedLink) -> tuple[LinkSpec, LinkSpec]:
    """Return a fixed-parameter physical link as two directed LinkSpecs."""
    return _pair(
        src,
        dst,
        kind,
        float(fl.bandwidth_mbit),
        float(fl.delay_ms),
        float(fl.jitter_ms),
        float(fl.loss_pct),
    )


def _drawn_pair(
    rng: np.random.Generator, src: str, dst: str, kind: LinkKind, dist: DelayDist, t_ms: float
) -> tuple[LinkSpec, LinkSpec]:
    """Return a physical link whose delay is one truncated-normal draw, used both ways."""
    delay = truncated_normal(rng, dist.mean_t * t_ms, dist.sd_t * t_ms)
    return _pair(
        src,
        dst,
        kind,
        float(dist.bandwidth_mbit),
        delay,
        float(dist.jitter_ms),
        float(dist.loss_pct),
    )


def _cellular_pair(
    rng: np.random.Generator, dev: str, bs: str, cell: CellularParams, devices_at_bs: int
) -> tuple[LinkSpec, LinkSpec]:
    """Return uplink dev->bs and downlink bs->dev sharing one distance and fading draw."""
    distance = float(rng.uniform(cell.distance_min_m, cell.distance_max_m))
    fading = float(rng.exponential(1.0)) if cell.rayleigh_fading else 1.0
    band_hz = cell.bandwidth_mhz * 1e6 / devices_at_bs

    def rate(power_dbm: float) -> float:
        r = shannon_rate_mbit(
            band_hz, power_dbm, distance, cell.path_loss_exponent, cell.noise_psd_dbm_hz, fading
        )
        return min(max(r, cell.min_rate_mbit), cell.max_rate_mbit)

    common = (float(cell.delay_ms), float(cell.jitter_ms), float(cell.loss_pct))
    return (
        LinkSpec(dev, bs, LinkKind.CELLULAR, rate(cell.device_power_dbm), *common),
        LinkSpec(bs, dev, LinkKind.CELLULAR, rate(cell.bs_power_dbm), *common),
    )


def build_hierarchy(params: HierarchyParams, seed: int) -> TopologySpec:
    """Build the seeded BS/MEC/device(/publisher) topology described by params."""
    validate_params(params)
    counts = params.device_counts(seed)
    rng = np.random.default_rng(seed)
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    mec_ids: list[str] = []
    devices_of: dict[str, list[str]] = {}
    devices_at: dict[str, int] = {}  # BS id -> devices attached to it (share its bandwidth)
    for i in range(params.bs_count):
        bs = f"bs{i}"
        nodes.append(NodeSpec(bs, NodeKind.BS))
        devices_at[bs] = 0
        for _ in range(params.mecs_per_bs):
            j = len(mec_ids)
            mec = f"mec{j}"
            mec_ids.append(mec)
            nodes.append(NodeSpec(mec, NodeKind.MEC, parent=bs))
            devices_of[mec] = [f"dev{j}-{k}" for k in range(counts[j])]
            devices_at[bs] += counts[j]
            nodes.extend(NodeSpec(d, NodeKind.DEVICE, parent=mec) for d in devices_of[mec])
    if params.with_publisher:
        nodes.append(NodeSpec(PUBLISHER_ID, NodeKind.PUBLISHER, parent=mec_ids[0]))

    for node in nodes:  # fronthaul and cellular, in node order
        if node.kind == NodeKind.MEC:
            assert node.parent is not None
            links.extend(_fixed_pair(node.id, node.parent, LinkKind.FRONTHAUL, params.fronthaul))
        elif node.kind == NodeKind.DEVICE:
            assert node.parent is not None
            bs = f"bs{mec_ids.index(node.parent) // params.mecs_per_bs}"
            links.extend(_cellular_pair(rng, node.id, bs, params.cellular, devices_at[bs]))
    for a, b in combinations(mec_ids, 2):
        links.extend(_drawn_pair(rng, a, b, LinkKind.BACKHAUL, params.backhaul, params.t_ms))
    if params.d2d is not None:
        for mec in mec_ids:
            for a, b in combinations(devices_of[mec], 2):
                links.extend(_drawn_pair(rng, a, b, LinkKind.D2D, params.d2d, params.t_ms))
    if params.with_publisher:
        links.extend(_fixed_pair(PUBLISHER_ID, mec_ids[0], LinkKind.LAN, params.lan))
    spec = TopologySpec(nodes=tuple(nodes), links=tuple(links))
    logger.debug(
        "built hierarchy: %d nodes, %d directed links (seed %d)",
        len(spec.nodes),
        len(spec.links),
        seed,
    )
    return spec
