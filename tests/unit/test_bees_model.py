"""BEES model (003 paper eqs. 4-9), the offloading decision and bench/energy_model.py."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.energy_model import main as bench_main
from bench.energy_model import simulate
from node.schemes.bees.model import (
    LOCAL,
    OFFLOAD,
    BeesModelParams,
    ESProfile,
    UEProfile,
    compute_energy_j,
    compute_time_s,
    decide,
    decide_bei,
    drain,
    option_costs,
    sample_profiles,
    split_samples,
    spread_ues,
    total_energy_j,
    transfer_energy_j,
    transfer_time_s,
    uplink_rate_bps,
)

PARAMS = BeesModelParams()
ES = ESProfile(es_id=0, cycles_per_sample=200.0, cpu_hz=10e9, battery_j=1e6, n_ues=1)


def _rate(distance_m: float, bandwidth_hz: float) -> float:
    return uplink_rate_bps(
        bandwidth_hz,
        PARAMS.ue_tx_power_dbm,
        distance_m,
        PARAMS.path_loss_exponent,
        PARAMS.noise_psd_dbm_hz,
    )


def _ue(*, distance_m: float, bandwidth_hz: float, cpu_hz: float, cycles: float = 3e4) -> UEProfile:
    return UEProfile(
        ue_id=0,
        es_id=0,
        distance_m=distance_m,
        bandwidth_hz=bandwidth_hz,
        uplink_rate_bps=_rate(distance_m, bandwidth_hz),
        cycles_per_sample=cycles,
        cpu_hz=cpu_hz,
        battery_j=PARAMS.ue_battery_j,
    )


# A UE with a 1 MHz CPU next to its ES on the whole 20 MHz: local training of 600 samples
# takes 5 * 3e4 * 600 / 1e6 = 90 s, sending 80 MB about 3 s.
SLOW_UE_FAST_LINK = _ue(distance_m=100.0, bandwidth_hz=20e6, cpu_hz=1e6)
# A 1 GHz UE at the cell edge on a 100 kHz share: 80 MB take ~440 s, local ~0.5 s.
FAST_UE_SLOW_LINK = _ue(distance_m=250.0, bandwidth_hz=100e3, cpu_hz=1e9)


def test_eq4_compute_time() -> None:
    assert compute_time_s(5, 2e4, 600, 1e9) == pytest.approx(0.06)


def test_eq5_uplink_rate_matches_shannon_with_noise_over_the_band() -> None:
    # b = 1 MHz, p = 10 dBm = 0.01 W, h = 100^-2 = 1e-4, N0 = -174 dBm/Hz = 10^-20.4 W/Hz
    snr = 0.01 * 1e-4 / (10**-20.4 * 1e6)  # = 2.512e8
    expected = 1e6 * math.log2(1 + snr)  # about 27.9 Mbit/s
    assert uplink_rate_bps(1e6, 10.0, 100.0, 2.0, -174.0) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(27.90e6, rel=1e-3)


def test_eq6_transfer_time() -> None:
    assert transfer_time_s(80_000, 64e6) == pytest.approx(0.01)  # 640 kbit at 64 Mbit/s
    assert transfer_time_s(80_000_000, 64e6) == pytest.approx(10.0)
    assert transfer_time_s(1, 0.0) == math.inf


def test_eq7_eq8_eq9_energy() -> None:
    e_c = compute_energy_j(1e-28, 5, 2e4, 600, 1e9)
    e_t = transfer_energy_j(10.0, 2.0)  # 10 dBm = 10 mW for 2 s
    assert e_c == pytest.approx(6e-3)
    assert e_t == pytest.approx(0.02)
    assert total_energy_j(e_c, e_t) == pytest.approx(0.026)


def test_params_reject_bad_fields_by_name() -> None:
    with pytest.raises(ValueError, match="kappa"):
        BeesModelParams(kappa=-1.0)
    with pytest.raises(ValueError, match="distance_min_m"):
        BeesModelParams(distance_min_m=300.0)
    with pytest.raises(ValueError, match="local_iterations"):
        BeesModelParams(local_iterations=0)
    with pytest.raises(ValueError, match="ue_cpu_hz"):
        BeesModelParams(ue_cpu_hz=math.nan)


def test_sampling_is_reproducible_by_seed_and_in_range() -> None:
    counts = [3, 7, 5]
    a = sample_profiles(PARAMS, counts, seed=7)
    assert a == sample_profiles(PARAMS, counts, seed=7)
    assert a != sample_profiles(PARAMS, counts, seed=8)
    servers, groups = a
    assert [len(g) for g in groups] == counts
    assert [s.n_ues for s in servers] == counts
    assert [u.ue_id for g in groups for u in g] == list(range(15))
    for es, group in zip(servers, groups, strict=True):
        assert 1e2 <= es.cycles_per_sample <= 3e2
        for ue in group:
            assert ue.es_id == es.es_id
            assert ue.distance_m is not None and 100.0 <= ue.distance_m <= 250.0
            assert 1e4 <= ue.cycles_per_sample <= 3e4
            assert ue.bandwidth_hz == pytest.approx(20e6 / es.n_ues)
            assert ue.uplink_rate_bps == _rate(ue.distance_m, ue.bandwidth_hz)  # eq. 5


def test_given_rates_replace_the_drawn_distance_and_keep_the_other_draws() -> None:
    drawn_servers, drawn = sample_profiles(PARAMS, [2, 1], seed=7)
    servers, groups = sample_profiles(PARAMS, [2, 1], seed=7, uplink_rates_bps=[[5e6, 7e6], [9e6]])
    assert servers == drawn_servers
    assert [u.uplink_rate_bps for g in groups for u in g] == [5e6, 7e6, 9e6]
    for g, d in zip(groups, drawn, strict=True):
        for ue, ref in zip(g, d, strict=True):
            assert ue.distance_m is None and ue.bandwidth_hz is None
            assert ue.cycles_per_sample == ref.cycles_per_sample
    # the decision's transfer time is eq. 6 at the given rate
    local, offload = option_costs(groups[0][0], servers[0], 100, PARAMS)
    assert offload.transfer_s == pytest.approx(80e6 * 8 / 5e6)
    assert local.transfer_s == pytest.approx(80e3 * 8 / 5e6)
    with pytest.raises(ValueError, match="one rate per UE"):
        sample_profiles(PARAMS, [2, 1], seed=7, uplink_rates_bps=[[5e6], [9e6]])
    with pytest.raises(ValueError, match="finite and > 0"):
        sample_profiles(PARAMS, [1], seed=7, uplink_rates_bps=[[0.0]])


def test_spread_ues_sums_to_the_total_and_is_seeded() -> None:
    for total in (100, 150, 200):
        counts = spread_ues(total, 20, seed=3)
        assert sum(counts) == total and len(counts) == 20 and min(counts) >= 1
        assert counts == spread_ues(total, 20, seed=3)
    assert split_samples(60_000, 100) == [600] * 100
    assert split_samples(10, 3) == [4, 3, 3]


def test_decision_offloads_when_link_is_fast_and_ue_slow() -> None:
    d = decide(SLOW_UE_FAST_LINK, ES, 600, PARAMS, residual_battery_j=100.0)
    assert d.d == OFFLOAD
    assert d.local.latency_s == pytest.approx(90.0, rel=0.01)
    assert d.offload.latency_s < 5.0
    assert d.latency_s == d.offload.latency_s
    assert d.ue_energy_j == pytest.approx(0.01 * d.offload.transfer_s)  # eq. 8 only
    assert "latency" in d.reason


def test_decision_stays_local_when_link_is_slow() -> None:
    d = decide(FAST_UE_SLOW_LINK, ES, 600, PARAMS, residual_battery_j=100.0)
    assert d.d == LOCAL
    assert d.offload.latency_s > 100.0 > 1.0 > d.local.latency_s


def test_decision_with_paper_defaults_is_local() -> None:
    """With §IV-A's numbers 80 MB cost seconds and local training tens of ms."""
    servers, groups = sample_profiles(PARAMS, [5, 5], seed=1)
    for group in groups:
        for ue in group:
            assert decide(ue, servers[ue.es_id], 600, PARAMS, 1e3).d == LOCAL


def test_battery_decides_when_the_faster_option_does_not_fit() -> None:
    full = decide(SLOW_UE_FAST_LINK, ES, 600, PARAMS, residual_battery_j=100.0)
    assert full.local.ue_energy_j < 1e-3 < full.offload.ue_energy_j
    d = decide(SLOW_UE_FAST_LINK, ES, 600, PARAMS, residual_battery_j=1e-3)
    assert d.d == LOCAL and "battery" in d.reason


def test_battery_exhaustion_makes_the_ue_sit_out() -> None:
    ue = replace(
        FAST_UE_SLOW_LINK,
        bandwidth_hz=20e6,
        distance_m=100.0,
        uplink_rate_bps=_rate(100.0, 20e6),
    )
    per_round = decide(ue, ES, 600, PARAMS, 100.0).ue_energy_j
    battery = 3.5 * per_round
    choices = []
    for _ in range(5):
        d = decide(ue, ES, 600, PARAMS, battery)
        choices.append(d.d)
        battery = drain(battery, d)
    assert choices == [LOCAL, LOCAL, LOCAL, None, None]
    assert battery == pytest.approx(0.5 * per_round)
    out = decide(ue, ES, 600, PARAMS, 0.0)
    assert out.d is None and out.chosen is None and out.latency_s == 0.0
    assert drain(0.0, out) == 0.0


def test_bei_always_trains_locally() -> None:
    d = decide_bei(SLOW_UE_FAST_LINK, ES, 600, PARAMS, residual_battery_j=100.0)
    assert d.d == LOCAL and d.latency_s == pytest.approx(90.0, rel=0.01)
    assert decide_bei(SLOW_UE_FAST_LINK, ES, 600, PARAMS, 0.0).d is None


def test_bees_is_never_slower_than_bei_and_faster_with_slow_ues() -> None:
    slow = BeesModelParams(ue_cpu_hz=5e6)
    bees = simulate("BEES", 40, 3, 1, slow, 0.01)
    bei = simulate("B-EI", 40, 3, 1, slow, 0.01)
    assert bees.offloads > 0 and bei.offloads == 0
    assert bees.cum_latency_s[-1] < bei.cum_latency_s[-1]
    assert len(bees.cum_latency_s) == 3
    assert bees.cum_latency_s == sorted(bees.cum_latency_s)


def test_bench_main_runs_and_compares_with_the_paper(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--blocks", "3", "--ues", "20", "100", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "B-EI" in out and "BEES" in out
    assert "5.71 s" in out and "6294 J" in out
    assert "never offloads" in out  # the honest note with the paper's parameters
