"""Link-parameter distributions and radio formulas (pure; randomness comes from the caller)."""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

_MAX_TRIES = 1000


def truncated_normal(rng: np.random.Generator, mean: float, sd: float) -> float:
    """Draw Normal(mean, sd) truncated at 0 by rejection (1000 tries, then 0.0)."""
    if sd < 0 or not math.isfinite(sd) or not math.isfinite(mean):
        raise ValueError(f"truncated_normal: need finite mean and sd >= 0, got {mean!r}, {sd!r}")
    if sd == 0:
        return max(mean, 0.0)
    for _ in range(_MAX_TRIES):
        x = float(rng.normal(mean, sd))
        if x >= 0:
            return x
    logger.warning("truncated_normal(%s, %s): no draw >= 0 in %d tries", mean, sd, _MAX_TRIES)
    return 0.0


def dbm_to_watt(dbm: float) -> float:
    """Convert a power in dBm to watts."""
    return float(10.0 ** ((dbm - 30.0) / 10.0))


def watt_to_dbm(watt: float) -> float:
    """Convert a power in watts (> 0) to dBm."""
    if watt <= 0:
        raise ValueError(f"watt_to_dbm: power must be > 0 W, got {watt!r}")
    return 10.0 * math.log10(watt) + 30.0


def shannon_rate_mbit(
    bandwidth_hz: float,
    tx_power_dbm: float,
    distance_m: float,
    path_loss_exponent: float,
    noise_psd_dbm_hz: float,
    fading: float = 1.0,
) -> float:
    """Return the Shannon rate r = B log2(1 + p h / (N0 B)) in Mbit/s, with h = fading * d^-gamma.

    B is ``bandwidth_hz``, p the transmit power (``tx_power_dbm``, converted to W), N0 the
    noise power spectral density (``noise_psd_dbm_hz``, converted to W/Hz) and h the channel
    gain. The BEES paper (eq. 5) uses the path-loss gain h = d^-gamma; the two-layer
    blockchain-FL paper states that the "distance-dependent channel gain is exponentially
    distributed", which the caller models by drawing ``fading`` ~ Exp(1) (Rayleigh fading)
    and passing it here; ``fading=1`` gives the deterministic BEES gain.
    """
    values = (bandwidth_hz, tx_power_dbm, distance_m, path_loss_exponent, noise_psd_dbm_hz, fading)
    if (
        not all(math.isfinite(v) for v in values)
        or bandwidth_hz <= 0
        or distance_m <= 0
        or path_loss_exponent < 0
        or fading < 0
    ):
        raise ValueError(
            "shannon_rate_mbit: need finite values, bandwidth_hz > 0, distance_m > 0, "
            f"path_loss_exponent >= 0, fading >= 0; got {bandwidth_hz!r}, {tx_power_dbm!r}, "
            f"{distance_m!r}, {path_loss_exponent!r}, {noise_psd_dbm_hz!r}, {fading!r}"
        )
    try:
        gain = fading * distance_m ** (-path_loss_exponent)
        noise_w = dbm_to_watt(noise_psd_dbm_hz) * bandwidth_hz
        snr = dbm_to_watt(tx_power_dbm) * gain / noise_w
        rate = bandwidth_hz * math.log2(1.0 + snr) / 1e6
    except (OverflowError, ZeroDivisionError):
        rate = math.nan
    if math.isfinite(rate):
        return rate
    return _shannon_rate_log_domain(*values)


def _shannon_rate_log_domain(
    bandwidth_hz: float,
    tx_power_dbm: float,
    distance_m: float,
    path_loss_exponent: float,
    noise_psd_dbm_hz: float,
    fading: float,
) -> float:
    """The Shannon rate computed from the SNR in dB, for powers whose watts under- or overflow."""
    if fading == 0:
        return 0.0
    snr_db = (
        tx_power_dbm
        + 10.0 * (math.log10(fading) - path_loss_exponent * math.log10(distance_m))
        - noise_psd_dbm_hz
        - 10.0 * math.log10(bandwidth_hz)
    )
    if snr_db > 300.0:  # log2(1 + snr) = log2(snr) to within 1e-30
        bits = snr_db * math.log2(10.0) / 10.0
    else:
        bits = math.log1p(10.0 ** (snr_db / 10.0)) / math.log(2.0)
    return bandwidth_hz * bits / 1e6
