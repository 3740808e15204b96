"""Kernel delay fidelity of a whole scenario topology: configured vs ping-measured, per link.

How it works
------------
The scenario's topology (``build_hierarchy`` with its seed, exactly what ``bcfl run`` builds)
is started twice with the mininet backend's own `MininetBackend.start_network`:

1. *baseline*: delay mode ``userspace`` (HTB bandwidth only, no netem): the RTT the
   emulation itself adds (veth, bridge, HTB serialisation, and under QEMU TCG the slow
   software CPU);
2. *shaped*: delay mode ``kernel``: HTB plus a netem child per directed link.

In each, one probe per physical link is pinged from inside a host's namespace (``ping -n``,
first reply dropped: ARP): a host-host link (backhaul, D2D, LAN) from one end to the other
end's address on that link; a device's cellular link by pinging its MEC's address on the
base station's bridge (device -> BS -> MEC and back: two cellular and two fronthaul links);
fronthaul by pinging between two MECs on one bridge (four fronthaul links). The RTT of a
probe should be the sum of the delays of the directed links it crosses (netem delays each
packet once, on the sending end's egress) plus the baseline. Measured = median(shaped) -
median(baseline); a probe passes when |measured - configured| <= max(0.5 ms, 5% of the
configured RTT).

Run (root, a kernel with sch_netem): ``python bench/fidelity.py --netem-topology SCENARIO``.
"""

from __future__ import annotations

import platform
import re
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from orchestrator.scenario import load_scenario
from topologies.backends.addressing import AddressPlan, plan
from topologies.backends.mininet import MininetBackend, short_names
from topologies.backends.netem import probe_netem
from topologies.builders import build_hierarchy
from topologies.spec import LinkKind, LinkSpec, NodeKind, TopologySpec

TOKEN = "fdn"
ABS_TOL_MS = 0.5
REL_TOL = 0.05
_TIME_RE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


@dataclass(frozen=True)
class Probe:
    """A ping from host `src` to `addr`, whose packets cross the directed links `path`."""

    kind: str
    name: str
    src: str
    addr: str
    path: tuple[LinkSpec, ...]

    @property
    def configured_rtt(self) -> float:
        """Sum of the configured delays along the path (ms)."""
        return sum(link.delay_ms for link in self.path)


@dataclass(frozen=True)
class ProbeResult:
    """Baseline and shaped RTTs (ms) of one probe, and the verdict."""

    probe: Probe
    baseline: list[float]
    shaped: list[float]

    @property
    def measured(self) -> float:
        """Median shaped RTT minus median baseline RTT."""
        return statistics.median(self.shaped) - statistics.median(self.baseline)

    @property
    def error(self) -> float:
        """Measured minus configured RTT."""
        return self.measured - self.probe.configured_rtt

    @property
    def tolerance(self) -> float:
        """max(0.5 ms, 5% of the configured RTT)."""
        return max(ABS_TOL_MS, REL_TOL * self.probe.configured_rtt)

    @property
    def ok(self) -> bool:
        """Whether the error is within the tolerance."""
        return abs(self.error) <= self.tolerance


def probes(spec: TopologySpec, p: AddressPlan) -> list[Probe]:
    """One probe per physical link (per device for cellular, per MEC pair for fronthaul)."""
    out = []
    seen: set[frozenset[str]] = set()
    for link in spec.links:
        pair = frozenset((link.src, link.dst))
        if link.kind in (LinkKind.BACKHAUL, LinkKind.D2D, LinkKind.LAN) and pair not in seen:
            seen.add(pair)
            a, b = link.src, link.dst
            out.append(
                Probe(
                    str(link.kind),
                    f"{a} <-> {b}",
                    a,
                    p.address_on(b, a),
                    (spec.link(a, b), spec.link(b, a)),
                )
            )
    parent = {n.id: n.parent for n in spec.nodes}
    for dev in spec.of_kind(NodeKind.DEVICE):
        mec = parent[dev.id]
        assert mec is not None
        bs = parent[mec]
        assert bs is not None
        path = (
            spec.link(dev.id, bs),
            spec.link(bs, mec),
            spec.link(mec, bs),
            spec.link(bs, dev.id),
        )
        out.append(
            Probe("cellular", f"{dev.id} <-> {bs} <-> {mec}", dev.id, p.address_on(mec, bs), path)
        )
    for station in spec.of_kind(NodeKind.BS):
        sid = station.id
        mecs = [n.id for n in spec.of_kind(NodeKind.MEC) if n.parent == sid]
        for a, b in combinations(mecs, 2):
            path = (spec.link(a, sid), spec.link(sid, b), spec.link(b, sid), spec.link(sid, a))
            out.append(Probe("fronthaul", f"{a} <-> {sid} <-> {b}", a, p.address_on(b, sid), path))
    return out


def ping(host: Any, addr: str, count: int, interval_s: float) -> list[float]:
    """RTTs (ms) of `count` pings from inside `host`, after one dropped warm-up reply."""
    out = host.cmd(f"ping -n -c {count + 1} -i {interval_s} -W 2 {addr}")
    rtts = [float(m.group(2)) for m in _TIME_RE.finditer(out) if int(m.group(1)) > 1]
    if len(rtts) < count // 2:
        raise RuntimeError(f"ping {addr}: only {len(rtts)} of {count} replies: {out[-400:]!r}")
    return rtts


def measure(
    spec: TopologySpec, delay_mode: str, netem: bool, count: int, interval_s: float
) -> dict[str, list[float]]:
    """Start `spec` with the mininet backend in `delay_mode`, ping every probe, stop."""
    backend = MininetBackend(TOKEN, delay_mode, netem, [])
    backend.endpoints(spec)
    address_plan = plan(spec, short_names(spec, TOKEN))
    rtts = {}
    try:
        backend.start_network()
        for pr in probes(spec, address_plan):
            rtts[pr.name] = ping(backend.host(pr.src), pr.addr, count, interval_s)
    finally:
        backend.stop()
    return rtts


def machine() -> str:
    """What this runs on: kernel, CPU model, and the hypervisor where /sys names one."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        vendor = Path("/sys/class/dmi/id/sys_vendor").read_text().strip()
    except OSError:
        vendor = "unknown"
    return f"kernel {platform.release()}, CPU {cpu!r}, system vendor {vendor!r}"


def run(scenario_path: Path, count: int, interval_s: float, baseline_only: bool) -> int:
    """Measure and print the table; 0 if every probe passes, 1 if not, 2 if netem is missing."""
    scenario = load_scenario(scenario_path)
    spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
    probe = probe_netem()
    print(f"bcfl delay fidelity of {scenario_path} (seed {scenario.seed}); {machine()}")
    print(f"netem: available={probe.available} ({probe.reason})")
    if not probe.available and not baseline_only:
        print("netem is NOT available on this kernel: kernel delays cannot be measured here "
              "(run vm/test-in-qemu.sh, or --baseline-only)")  # fmt: skip
        return 2
    print(f"{count} pings per probe every {interval_s * 1000:.0f} ms (first reply dropped), "
          "baseline = same topology without netem (HTB only), subtracted: measured = "
          "median(shaped) - median(baseline)")  # fmt: skip
    baseline = measure(spec, "userspace", probe.available, count, interval_s)
    if baseline_only:
        for name, rtts in baseline.items():
            print(f"  baseline {name:<28} median {statistics.median(rtts):7.3f} ms")
        return 0
    shaped = measure(spec, "kernel", True, count, interval_s)
    address_plan = plan(spec, short_names(spec, TOKEN))
    results = [ProbeResult(pr, baseline[pr.name], shaped[pr.name])
               for pr in probes(spec, address_plan)]  # fmt: skip
    print_table(results)
    failed = [r for r in results if not r.ok]
    verdict = "PASS" if not failed else f"FAIL ({len(failed)} of {len(results)} probes)"
    print(f"\nFIDELITY: {verdict}")
    return 0 if not failed else 1


def print_table(results: list[ProbeResult]) -> None:
    """Per probe, then per link class: configured vs measured RTT and the verdict."""
    print("\nper probe (RTT in ms; conf = sum of the configured one-way delays on the path; "
          "tol = max(0.5 ms, 5% of conf))")  # fmt: skip
    head = (f"{'class':<10} {'probe':<28} {'links':>5} {'conf':>8} {'baseline':>8} "
            f"{'shaped':>8} {'measured':>8} {'error':>7} {'tol':>6}  result")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.probe.kind:<10} {r.probe.name:<28} {len(r.probe.path):>5} "
            f"{r.probe.configured_rtt:>8.3f} {statistics.median(r.baseline):>8.3f} "
            f"{statistics.median(r.shaped):>8.3f} {r.measured:>8.3f} {r.error:>+7.3f} "
            f"{r.tolerance:>6.3f}  {'PASS' if r.ok else 'FAIL'}"
        )
    print("\nper link class (one-way = RTT / 2 on these symmetric paths)")
    print(f"{'class':<10} {'probes':>6} {'conf one-way':>13} {'meas one-way':>13} "
          f"{'max |err| RTT':>14} {'baseline RTT':>13}  result")  # fmt: skip
    for kind in dict.fromkeys(r.probe.kind for r in results):
        rs = [r for r in results if r.probe.kind == kind]
        conf = sorted({round(r.probe.configured_rtt / 2, 3) for r in rs})
        meas = [r.measured / 2 for r in rs]
        conf_s = f"{conf[0]:.3f}" if len(conf) == 1 else f"{conf[0]:.2f}-{conf[-1]:.2f}"
        meas_s = f"{min(meas):.3f}" if len(rs) == 1 else f"{min(meas):.2f}-{max(meas):.2f}"
        base = statistics.median([statistics.median(r.baseline) for r in rs])
        passed = sum(r.ok for r in rs)
        print(
            f"{kind:<10} {len(rs):>6} {conf_s:>13} {meas_s:>13} "
            f"{max(abs(r.error) for r in rs):>14.3f} {base:>13.3f}  "
            f"{'PASS' if passed == len(rs) else 'FAIL'} ({passed}/{len(rs)})"
        )
