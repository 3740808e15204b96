"""BEES computation, communication and energy model (003 paper, §III-C/D, eqs. 4-9, §IV-A).

How it works
------------
- A UE k attached to edge server (ES) s has an uplink rate r (eq. 5), cycles per sample C_k,
  a CPU frequency f_k and a battery; the ES has its own C and f (`sample_profiles`, seeded).
  In a run the rate is the UE's emulated link's (`uplink_rates_bps`: the topology's UE->BS
  cellular link, itself eq. 5 from its own distance draw), so the predicted t^T (eq. 6) and
  the shaped link are the same number; without it (the bench) eq. 5 is drawn here from
  r_k ~ U(distance) and B shared equally among the ES's UEs.
- Eq. 4 t^C = L C n / f (L local iterations, n samples); eq. 5 r = b log2(1 + p h / (N0 b)),
  h = r^-gamma, from `topologies.links.shannon_rate_mbit`; eq. 6 t^T = size / r; eq. 7
  E^C = kappa L C n f^2; eq. 8 E^T = p t^T; eq. 9 E = E^T + E^C.
- Each round each UE decides d_k (`decide`): 0 = train locally (t^C on the UE, then send the
  80 KB update), 1 = offload its data (send 80 MB, the ES trains with its C and f). The paper
  says only that the decision comes "from the residual battery and the predicted latency";
  our rule: among the options whose UE energy fits the residual battery, take the lower
  predicted latency (a tie goes to local: the data stays on the device); if neither fits,
  the UE sits out the round (d = None). `drain` takes the chosen option's E_total (eq. 9)
  off the battery. B-EI (`decide_bei`): always local, sitting out only when that cannot fit.
- Symbol clash in the paper: L_k is "local iterations" in eq. 4 (and eq. 7) but "data size
  offloaded" in eq. 6; here the first is `local_iterations`, the second a size in bytes.
- Pure: no I/O, no clock; randomness only from the seed given to `sample_profiles`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from topologies.links import dbm_to_watt, shannon_rate_mbit

Choice = Literal[0, 1]
LOCAL: Choice = 0
OFFLOAD: Choice = 1


@dataclass(frozen=True)
class BeesModelParams:
    """Parameters of the BEES model; each field says where its value comes from.

    - ``bandwidth_hz`` B = 20 MHz (§IV-A), shared equally among the UEs of one ES (our
      choice, as `topologies.builders.CellularParams` does per BS).
    - ``ue_tx_power_dbm`` p = 10 dBm: the paper writes "p = 10 dB"; a power needs an absolute
      unit and dBm matches N0 in dBm/Hz (our reading; 10 mW).
    - ``noise_psd_dbm_hz`` N0 = -174 dBm/Hz (§IV-A).
    - ``path_loss_exponent`` gamma in h = r^-gamma: the paper gives no value; 3.76 (our choice,
      a common urban exponent, as `CellularParams`).
    - ``distance_min_m`` / ``distance_max_m``: r ~ U(100, 250) m (§IV-A).
    - ``ue_cycles_min`` / ``ue_cycles_max``: C_k ~ U(1, 3) x 1e4 cycles/sample on a UE (§IV-A).
    - ``es_cycles_min`` / ``es_cycles_max``: C_k ~ U(1, 3) x 1e2 cycles/sample on an ES (§IV-A).
    - ``kappa`` effective capacitance 1e-28 (§IV-A, from its ref. [26]).
    - ``offload_bytes`` 80 MB = 80e6 bytes (§IV-A, d = 1; decimal MB is our choice).
    - ``update_bytes`` 80 KB = 80e3 bytes (§IV-A, d = 0; decimal KB is our choice).
    - ``local_iterations`` L_k of eq. 4: the paper says "a few epochs" and gives no number;
      5 (our choice).
    - ``ue_cpu_hz`` f_k of a UE: the paper points to ref. [26] (Mao et al. 2016) and gives no
      number; 1 GHz (our choice, a mobile CPU core).
    - ``es_cpu_hz`` f of an ES: no number in the paper; 10 GHz (our choice, a small server's
      aggregate cycles per second).
    - ``ue_battery_j`` initial UE battery: no number; 40 kJ (our choice, about a 3,000 mAh
      3.7 V phone battery).
    - ``es_battery_j`` initial ES battery (B_k of PoL, eq. 2): no number; 1 MJ (our choice,
      about a 280 Wh backup battery).
    """

    bandwidth_hz: float = 20e6
    ue_tx_power_dbm: float = 10.0
    noise_psd_dbm_hz: float = -174.0
    path_loss_exponent: float = 3.76
    distance_min_m: float = 100.0
    distance_max_m: float = 250.0
    ue_cycles_min: float = 1e4
    ue_cycles_max: float = 3e4
    es_cycles_min: float = 1e2
    es_cycles_max: float = 3e2
    kappa: float = 1e-28
    offload_bytes: int = 80_000_000
    update_bytes: int = 80_000
    local_iterations: int = 5
    ue_cpu_hz: float = 1e9
    es_cpu_hz: float = 10e9
    ue_battery_j: float = 40_000.0
    es_battery_j: float = 1_000_000.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"BeesModelParams.{f.name}: need a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"BeesModelParams.{f.name}: need a finite number, got {value!r}")
            signed = f.name in ("ue_tx_power_dbm", "noise_psd_dbm_hz")
            if not signed and f.name != "path_loss_exponent" and value <= 0:
                raise ValueError(f"BeesModelParams.{f.name}: need > 0, got {value!r}")
        if self.path_loss_exponent < 0:
            raise ValueError(
                f"BeesModelParams.path_loss_exponent: need >= 0, got {self.path_loss_exponent!r}"
            )
        for low, high in (
            ("distance_min_m", "distance_max_m"),
            ("ue_cycles_min", "ue_cycles_max"),
            ("es_cycles_min", "es_cycles_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"BeesModelParams.{low}: must be <= {high}")
        for name in ("offload_bytes", "update_bytes", "local_iterations"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"BeesModelParams.{name}: need an integer")


@dataclass(frozen=True)
class ESProfile:
    """One edge server: its cycles per sample, CPU frequency, battery and attached UEs."""

    es_id: int
    cycles_per_sample: float
    cpu_hz: float
    battery_j: float
    n_ues: int


@dataclass(frozen=True)
class UEProfile:
    """One UE: its ES, distance to it, uplink bandwidth share, uplink rate, cycles/sample,
    CPU, battery.

    ``uplink_rate_bps`` is what eqs. 6 and 8 use. ``distance_m`` and ``bandwidth_hz`` are
    None when the rate was taken from the emulated link (the topology keeps only the rate).
    """

    ue_id: int
    es_id: int
    distance_m: float | None
    bandwidth_hz: float | None
    uplink_rate_bps: float
    cycles_per_sample: float
    cpu_hz: float
    battery_j: float


def sample_profiles(
    params: BeesModelParams,
    ues_per_es: Sequence[int],
    seed: int,
    uplink_rates_bps: Sequence[Sequence[float]] | None = None,
) -> tuple[list[ESProfile], list[list[UEProfile]]]:
    """Draw the ESs and, per ES, its UEs (UE ids run 0.. across ESs in order).

    `uplink_rates_bps[i][j]`, when given, is UE j of ES i's rate (its emulated link's): the
    profile keeps it and draws no distance. Otherwise the rate is eq. 5 with r_k drawn here
    and the ES's B split equally among its UEs. CPU frequencies and batteries are the
    parameters' constants (the paper gives no distribution: our choice). The draws of C_k
    are the same either way (same seed, same order).
    """
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ues_per_es):
        raise ValueError(f"sample_profiles: ues_per_es must be integers >= 1, got {ues_per_es!r}")
    if uplink_rates_bps is not None and [len(r) for r in uplink_rates_bps] != list(ues_per_es):
        raise ValueError("sample_profiles: uplink_rates_bps must have one rate per UE per ES")
    if uplink_rates_bps is not None and not all(
        math.isfinite(x) and x > 0 for r in uplink_rates_bps for x in r
    ):
        raise ValueError("sample_profiles: uplink rates must be finite and > 0")
    rng = np.random.default_rng(seed)
    servers: list[ESProfile] = []
    ues: list[list[UEProfile]] = []
    next_ue = 0
    for es_id, n in enumerate(ues_per_es):
        es_cycles = float(rng.uniform(params.es_cycles_min, params.es_cycles_max))
        servers.append(ESProfile(es_id, es_cycles, params.es_cpu_hz, params.es_battery_j, n))
        group = []
        for j in range(n):
            distance: float | None = float(
                rng.uniform(params.distance_min_m, params.distance_max_m)
            )
            cycles = float(rng.uniform(params.ue_cycles_min, params.ue_cycles_max))
            band: float | None = params.bandwidth_hz / n
            if uplink_rates_bps is not None:
                distance = band = None
                rate = float(uplink_rates_bps[es_id][j])
            else:
                assert distance is not None and band is not None
                rate = uplink_rate_bps(
                    band,
                    params.ue_tx_power_dbm,
                    distance,
                    params.path_loss_exponent,
                    params.noise_psd_dbm_hz,
                )
            group.append(
                UEProfile(
                    next_ue,
                    es_id,
                    distance,
                    band,
                    rate,
                    cycles,
                    params.ue_cpu_hz,
                    params.ue_battery_j,
                )
            )
            next_ue += 1
        ues.append(group)
    return servers, ues


def spread_ues(total_ues: int, n_es: int, seed: int, low: int = 3, high: int = 7) -> list[int]:
    """UEs per ES summing to `total_ues`: draw U{low..high} per ES, rescale to the total.

    §IV-A draws UEs per ES from U(3, 7) (mean 5: 100 UEs over 20 ESs) but also runs 150 and
    200 UEs. Our choice: draw the U(3, 7) counts, scale them by total / their sum and round by
    largest remainder (each ES keeps at least one UE), so 100 UEs keep the paper's spread and
    150/200 spread it proportionally (a picocell supports ~30 UEs, §IV-A).
    """
    if total_ues < n_es or n_es < 1:
        raise ValueError(
            f"spread_ues: need n_es >= 1 and total_ues >= n_es, got {total_ues}, {n_es}"
        )
    rng = np.random.default_rng(seed)
    draws = rng.integers(low, high + 1, size=n_es).astype(float)
    exact = draws * total_ues / draws.sum()
    counts = np.maximum(np.floor(exact).astype(int), 1)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while counts.sum() < total_ues:
        counts[order[i % n_es]] += 1
        i += 1
    while counts.sum() > total_ues:  # only when the floor of 1 pushed the sum over
        counts[int(np.argmax(counts))] -= 1
    return [int(c) for c in counts]


def split_samples(total: int, n_ues: int) -> list[int]:
    """Split `total` samples equally among `n_ues` UEs (the first total % n_ues get one more)."""
    base, extra = divmod(total, n_ues)
    return [base + (1 if i < extra else 0) for i in range(n_ues)]


# --- eqs. 4-9 ---------------------------------------------------------------------------


def compute_time_s(iterations: int, cycles_per_sample: float, samples: int, cpu_hz: float) -> float:
    """Eq. 4: t^C = L C n / f seconds."""
    return iterations * cycles_per_sample * samples / cpu_hz


def uplink_rate_bps(
    bandwidth_hz: float,
    tx_power_dbm: float,
    distance_m: float,
    path_loss_exponent: float,
    noise_psd_dbm_hz: float,
) -> float:
    """Eq. 5: r = b log2(1 + p r^-gamma / (N0 b)) in bit/s.

    The paper writes N0 alone in the SNR; N0 is a density (dBm/Hz), so the noise power is
    N0 b, as `shannon_rate_mbit` computes it.
    """
    mbit = shannon_rate_mbit(
        bandwidth_hz, tx_power_dbm, distance_m, path_loss_exponent, noise_psd_dbm_hz
    )
    return mbit * 1e6


def transfer_time_s(size_bytes: float, rate_bps: float) -> float:
    """Eq. 6: t^T = size / r seconds (size in bytes, rate in bit/s)."""
    if rate_bps <= 0:
        return math.inf
    return size_bytes * 8.0 / rate_bps


def compute_energy_j(
    kappa: float, iterations: int, cycles_per_sample: float, samples: int, cpu_hz: float
) -> float:
    """Eq. 7: E^C = kappa L C n f^2 joules."""
    return kappa * iterations * cycles_per_sample * samples * cpu_hz**2


def transfer_energy_j(tx_power_dbm: float, time_s: float) -> float:
    """Eq. 8: E^T = p t^T joules (p given in dBm, converted to watts)."""
    return dbm_to_watt(tx_power_dbm) * time_s


def total_energy_j(compute_j: float, transfer_j: float) -> float:
    """Eq. 9: E^total = E^T + E^C joules."""
    return transfer_j + compute_j


# --- the offloading decision -------------------------------------------------------------


@dataclass(frozen=True)
class OptionCost:
    """Predicted cost of one option: latency (compute + transfer) and the UE's energy."""

    compute_s: float
    transfer_s: float
    ue_compute_j: float
    ue_transfer_j: float

    @property
    def latency_s(self) -> float:
        """t^C + t^T: the option's predicted latency."""
        return self.compute_s + self.transfer_s

    @property
    def ue_energy_j(self) -> float:
        """Eq. 9 for the UE: what the option takes off its battery."""
        return total_energy_j(self.ue_compute_j, self.ue_transfer_j)


@dataclass(frozen=True)
class Decision:
    """d_k for one UE and round: 0 local, 1 offload, None sits out; both options' costs."""

    d: Choice | None
    local: OptionCost
    offload: OptionCost
    reason: str

    @property
    def chosen(self) -> OptionCost | None:
        """The chosen option's cost (None when the UE sits out)."""
        if self.d is None:
            return None
        return self.local if self.d == LOCAL else self.offload

    @property
    def latency_s(self) -> float:
        """The chosen option's predicted latency (0 when sitting out)."""
        chosen = self.chosen
        return 0.0 if chosen is None else chosen.latency_s

    @property
    def ue_energy_j(self) -> float:
        """The chosen option's UE energy (0 when sitting out)."""
        chosen = self.chosen
        return 0.0 if chosen is None else chosen.ue_energy_j


def option_costs(
    ue: UEProfile, es: ESProfile, samples: int, params: BeesModelParams
) -> tuple[OptionCost, OptionCost]:
    """(local, offload) predicted costs of a UE with `samples` samples at its ES.

    Local: t^C and E^C on the UE, then t^T and E^T of the update. Offload: t^T and E^T of the
    data, then t^C on the ES; the ES's compute energy is not the UE's and is left out, and
    sending the trained model back is not modelled (the paper does neither).
    """
    if ue.es_id != es.es_id:
        raise ValueError(f"option_costs: UE {ue.ue_id} belongs to ES {ue.es_id}, not {es.es_id}")
    rate = ue.uplink_rate_bps
    iters = params.local_iterations
    up_s = transfer_time_s(params.update_bytes, rate)
    local = OptionCost(
        compute_s=compute_time_s(iters, ue.cycles_per_sample, samples, ue.cpu_hz),
        transfer_s=up_s,
        ue_compute_j=compute_energy_j(
            params.kappa, iters, ue.cycles_per_sample, samples, ue.cpu_hz
        ),
        ue_transfer_j=transfer_energy_j(params.ue_tx_power_dbm, up_s),
    )
    off_s = transfer_time_s(params.offload_bytes, rate)
    offload = OptionCost(
        compute_s=compute_time_s(iters, es.cycles_per_sample, samples, es.cpu_hz),
        transfer_s=off_s,
        ue_compute_j=0.0,
        ue_transfer_j=transfer_energy_j(params.ue_tx_power_dbm, off_s),
    )
    return local, offload


def decide(
    ue: UEProfile,
    es: ESProfile,
    samples: int,
    params: BeesModelParams,
    residual_battery_j: float,
) -> Decision:
    """BEES's d_k: the faster option whose UE energy fits the battery; None if neither fits."""
    local, offload = option_costs(ue, es, samples, params)
    local_fits = local.ue_energy_j <= residual_battery_j
    offload_fits = offload.ue_energy_j <= residual_battery_j
    if local_fits and offload_fits:
        if offload.latency_s < local.latency_s:
            return Decision(OFFLOAD, local, offload, "offload: lower predicted latency")
        return Decision(LOCAL, local, offload, "local: lower or equal predicted latency")
    if local_fits:
        return Decision(LOCAL, local, offload, "local: offloading exceeds the battery")
    if offload_fits:
        return Decision(OFFLOAD, local, offload, "offload: local training exceeds the battery")
    return Decision(None, local, offload, "sits out: neither option fits the battery")


def decide_bei(
    ue: UEProfile,
    es: ESProfile,
    samples: int,
    params: BeesModelParams,
    residual_battery_j: float,
) -> Decision:
    """B-EI's d_k: always local (0); the UE sits out (None) when that exceeds its battery."""
    local, offload = option_costs(ue, es, samples, params)
    if local.ue_energy_j <= residual_battery_j:
        return Decision(LOCAL, local, offload, "local: B-EI always trains on the UE")
    return Decision(None, local, offload, "sits out: local training exceeds the battery")


def drain(residual_battery_j: float, decision: Decision) -> float:
    """The battery after the round: minus the chosen option's E_total (unchanged if out)."""
    return residual_battery_j - decision.ue_energy_j
