"""Round-trip times with ping from inside a Mininet host (any server's: `host.cmd`)."""

from __future__ import annotations

import re
from typing import Any

_TIME_RE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


def ping_rtts(host: Any, addr: str, count: int, interval_s: float) -> list[float]:
    """RTTs (ms) of `count` pings from inside `host` to `addr`, after one dropped warm-up
    reply (ARP); RuntimeError when fewer than half of them came back."""
    out = str(host.cmd(f"ping -n -c {count + 1} -i {interval_s} -W 2 {addr}"))
    rtts = [float(m.group(2)) for m in _TIME_RE.finditer(out) if int(m.group(1)) > 1]
    if len(rtts) < count // 2:
        raise RuntimeError(f"ping {addr}: only {len(rtts)} of {count} replies: {out[-400:]!r}")
    return rtts
