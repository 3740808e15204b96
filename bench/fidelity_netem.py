"""Kernel delay fidelity of a whole scenario topology: configured vs ping-measured, per link.

How it works
------------
The scenario's topology (``build_hierarchy`` with its seed, exactly what ``bcfl run`` builds)
is started twice with the mininet backend's own `MininetBackend.start_network`:

1. *baseline*: delay mode ``userspace`` (HTB bandwidth only, no netem): the RTT the
   emulation itself adds (veth, bridge, HTB serialisation, and under QEMU TCG the slow
   software CPU);
2. *shaped*: delay mode ``kernel``: HTB plus a netem child per directed link.

In each, every physical link is probed on its own with ping from inside a host's namespace
(``ping -n``, first reply dropped: ARP): a host-host link (backhaul, D2D, LAN) from one end
to the other end's address on that link; a link to a base station (cellular, fronthaul) from
the host to an address that this benchmark gives the BS's bridge in the root namespace
(10.(100+b).255.254, outside the backend's plan; gone with the bridge). Each probe crosses
exactly two directed links, each shaped once by netem on its sending end's egress, so its
RTT should be the two configured delays plus the baseline. Measured one-way delay =
(median(shaped RTT) - median(baseline RTT)) / 2; a link passes when it is within
max(0.5 ms, 5%) of the configured one-way delay (the mean of the two directions).

Run (root, a kernel with sch_netem): ``python bench/fidelity.py --netem-topology SCENARIO``.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.scenario import load_scenario
from topologies.backends.addressing import AddressPlan, plan
from topologies.backends.mininet import MininetBackend, short_names
from topologies.backends.netem import probe_netem
from topologies.backends.ping import ping_rtts
from topologies.builders import build_hierarchy
from topologies.spec import LinkSpec, NodeKind, TopologySpec

TOKEN = "fdn"
ABS_TOL_MS = 0.5
REL_TOL = 0.05


@dataclass(frozen=True)
class Probe:
    """A ping from host `src` to `addr`, whose packets cross the directed links `path`."""

    kind: str
    name: str
    src: str
    addr: str
    path: tuple[LinkSpec, ...]

    @property
    def configured(self) -> float:
        """Configured one-way delay (ms): the mean of the two directions."""
        return sum(link.delay_ms for link in self.path) / len(self.path)


@dataclass(frozen=True)
class ProbeResult:
    """Baseline and shaped RTTs (ms) of one probe, and the verdict."""

    probe: Probe
    baseline: list[float]
    shaped: list[float]

    @property
    def measured(self) -> float:
        """One-way delay (ms): (median shaped RTT - median baseline RTT) / 2."""
        return (statistics.median(self.shaped) - statistics.median(self.baseline)) / 2

    @property
    def error(self) -> float:
        """Measured minus configured one-way delay (ms)."""
        return self.measured - self.probe.configured

    @property
    def noise(self) -> float:
        """How much the one-way estimate wobbles (ms): half the sum of the interquartile
        ranges of the shaped and baseline RTTs."""
        return (_iqr(self.shaped) + _iqr(self.baseline)) / 2

    @property
    def tolerance(self) -> float:
        """max(0.5 ms, 5% of the configured one-way delay)."""
        return max(ABS_TOL_MS, REL_TOL * self.probe.configured)

    @property
    def ok(self) -> bool:
        """Whether the error is within the tolerance."""
        return abs(self.error) <= self.tolerance


def _iqr(values: list[float]) -> float:
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def bridge_address(spec: TopologySpec, bs: str) -> str:
    """The address this benchmark gives base station `bs`'s bridge (outside the plan)."""
    index = [n.id for n in spec.of_kind(NodeKind.BS)].index(bs)
    return f"10.{100 + index}.255.254"


def probes(spec: TopologySpec, p: AddressPlan) -> list[Probe]:
    """One probe per physical link, crossing it once each way."""
    out = []
    bs_ids = {n.id for n in spec.of_kind(NodeKind.BS)}
    for link in spec.physical_links():
        a, b = (link.dst, link.src) if link.src in bs_ids else (link.src, link.dst)
        addr = bridge_address(spec, b) if b in bs_ids else p.address_on(b, a)
        out.append(
            Probe(str(link.kind), f"{a} <-> {b}", a, addr, (spec.link(a, b), spec.link(b, a)))
        )
    return out


def measure(
    spec: TopologySpec, delay_mode: str, netem: bool, count: int, interval_s: float
) -> dict[str, list[float]]:
    """Start `spec` with the mininet backend in `delay_mode`, ping every probe, stop."""
    backend = MininetBackend(TOKEN, delay_mode, netem, [])
    backend.endpoints(spec)
    short = short_names(spec, TOKEN)
    address_plan = plan(spec, short)
    rtts = {}
    try:
        backend.start_network()
        for bs in spec.of_kind(NodeKind.BS):  # the bridges answer pings: addresses in root ns
            argv = ["ip", "addr", "add", f"{bridge_address(spec, bs.id)}/16", "dev", short[bs.id]]
            subprocess.run(argv, check=True, capture_output=True)
        for pr in probes(spec, address_plan):
            rtts[pr.name] = ping_rtts(backend.host(pr.src), pr.addr, count, interval_s)
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


@dataclass(frozen=True)
class TimerCheck:
    """Median sleep() overshoot (ms) at 1 and 20 ms and the timer rate error it implies."""

    over_1ms: float
    over_20ms: float

    @property
    def rate_pct(self) -> float:
        """How much slower than the clock the timers run (%): a VM whose timer frequency was
        calibrated a few % off delays every netem packet that much too long."""
        return (self.over_20ms - self.over_1ms) / 19 * 100

    def line(self, when: str = "") -> str:
        """One line for the report."""
        return (
            f"timer check{when}: sleep() overshoots by median {self.over_1ms:.3f} ms at 1 ms "
            f"and {self.over_20ms:.3f} ms at 20 ms (late wake-up; rate error about "
            f"{self.rate_pct:+.1f}%)"
        )


def timer_check(repeats: int = 20) -> TimerCheck:
    """How late this kernel's timers fire (see TimerCheck)."""
    over = {}
    for ms in (1, 20):
        samples = []
        for _ in range(repeats):
            t = time.monotonic_ns()
            time.sleep(ms / 1000)
            samples.append((time.monotonic_ns() - t) / 1e6 - ms)
        over[ms] = statistics.median(samples)
    return TimerCheck(over[1], over[20])


def diagnose(
    results: list[ProbeResult],
    timers: tuple[TimerCheck, TimerCheck],
    load: tuple[float, float, float],
    cpus: int,
) -> list[str]:
    """Why the measurement failed, in lines: host load, the timers before and after (their
    rate error and drift), the worst links, and which of these explains the errors."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return []
    before, after = timers
    worst = sorted(results, key=lambda r: abs(r.error) / r.tolerance, reverse=True)[:3]
    out = [
        f"why: {len(failed)} of {len(results)} links outside max({ABS_TOL_MS} ms, "
        f"{REL_TOL:.0%}); load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {cpus} CPUs (this kernel's: a VM does not see its host's load, the timer "
        "check below does)",
        f"why: timers: rate error {before.rate_pct:+.1f}% before, {after.rate_pct:+.1f}% after "
        f"(drift {after.rate_pct - before.rate_pct:+.1f} points); 1 ms sleep overshoot "
        f"{before.over_1ms:.3f} -> {after.over_1ms:.3f} ms",
        "why: worst links: "
        + "; ".join(
            f"{r.probe.name} ({r.probe.kind}) {r.measured:.3f} vs {r.probe.configured:.3f} ms "
            f"({r.error / r.probe.configured:+.1%}, {abs(r.error) / r.tolerance:.1f}x tol, "
            f"RTT spread {r.noise:.3f})"
            if r.probe.configured
            else f"{r.probe.name} ({r.probe.kind}) {r.error:+.3f} ms"
            for r in worst
        ),
    ]
    rel = [r.error / r.probe.configured for r in failed if r.probe.configured > 0]
    timer_pct = max(before.rate_pct, after.rate_pct)
    causes = []
    if rel and all(e > 0 for e in rel) and timer_pct > 0 and max(rel) * 100 <= 2 * timer_pct + 1:
        causes.append(
            f"late timers: every failed link is too slow by at most {max(rel):.1%}, in line "
            f"with the timers' {timer_pct:+.1f}% (a VM's timer calibrated off on a busy host)"
        )
    if load[0] > cpus:
        causes.append(f"a busy host: load {load[0]:.1f} > {cpus} CPUs delays the probes")
    if abs(after.rate_pct - before.rate_pct) > 1.0:
        causes.append("the timer rate drifted during the measurement")
    noisy = [r for r in failed if abs(r.error) <= r.noise]
    if noisy:
        causes.append(
            f"noisy RTTs: on {len(noisy)} of the failed links the error is within the "
            f"RTTs' own spread (up to {max(r.noise for r in noisy):.3f} ms one-way, "
            "interquartile): the CPU was taken away mid-measurement (under QEMU TCG: the "
            "physical host is busy)"
        )
    if not causes:
        causes.append("not the timers nor the load: look at netem (tc -s qdisc) on these links")
    out.append("why: likely cause: " + "; ".join(causes))
    return out


def run(scenario_path: Path, count: int, interval_s: float, baseline_only: bool) -> int:
    """Measure and print the table; 0 if every probe passes, 1 if not, 2 if netem is missing."""
    scenario = load_scenario(scenario_path)
    spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
    probe = probe_netem()
    print(f"bcfl delay fidelity of {scenario_path} (seed {scenario.seed}); {machine()}")
    print(f"netem: available={probe.available} ({probe.reason})")
    timer_before = timer_check()
    print(timer_before.line(" (before)"))
    if not probe.available and not baseline_only:
        print("netem is NOT available on this kernel: kernel delays cannot be measured here "
              "(run vm/test-in-qemu.sh, or --baseline-only)")  # fmt: skip
        return 2
    print(f"{count} pings per link every {interval_s * 1000:.0f} ms (first reply dropped); "
          "the baseline is the same topology without netem (HTB only), started first; its "
          "median RTT (emulation overhead: veth, bridge, and under QEMU TCG the software CPU) "
          "is subtracted")  # fmt: skip
    baseline = measure(spec, "userspace", probe.available, count, interval_s)
    if baseline_only:
        for name, rtts in baseline.items():
            print(f"  baseline {name:<18} median RTT {statistics.median(rtts):7.3f} ms")
        return 0
    shaped = measure(spec, "kernel", True, count, interval_s)
    address_plan = plan(spec, short_names(spec, TOKEN))
    results = [ProbeResult(pr, baseline[pr.name], shaped[pr.name])
               for pr in probes(spec, address_plan)]  # fmt: skip
    print_table(results)
    timer_after = timer_check()
    print(timer_after.line(" (after)"))
    failed = [r for r in results if not r.ok]
    for line in diagnose(results, (timer_before, timer_after), os.getloadavg(),
                         os.cpu_count() or 1):  # fmt: skip
        print(line)
    verdict = "PASS" if not failed else f"FAIL ({len(failed)} of {len(results)} links)"
    print(f"\nFIDELITY: {verdict}")
    return 0 if not failed else 1


def print_table(results: list[ProbeResult]) -> None:
    """Per link, then per link class: configured vs measured delay and the verdict."""
    print("\nper link (ms; one-way = (median shaped RTT - median baseline RTT) / 2; "
          "tol = max(0.5 ms, 5% of the configured one-way delay))")  # fmt: skip
    head = (f"{'class':<10} {'link':<18} {'base RTT':>8} {'shap RTT':>8} {'conf RTT':>8} "
            f"{'conf 1-way':>10} {'meas 1-way':>10} {'error':>7} {'tol':>6}  result")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.probe.kind:<10} {r.probe.name:<18} {statistics.median(r.baseline):>8.3f} "
            f"{statistics.median(r.shaped):>8.3f} {2 * r.probe.configured:>8.3f} "
            f"{r.probe.configured:>10.3f} {r.measured:>10.3f} {r.error:>+7.3f} "
            f"{r.tolerance:>6.3f}  {'PASS' if r.ok else 'FAIL'}"
        )
    print("\nper link class (one-way delays in ms)")
    print(f"{'class':<10} {'links':>5} {'configured':>13} {'measured':>13} {'max |err|':>9} "
          f"{'base RTT':>8}  result")  # fmt: skip
    for kind in dict.fromkeys(r.probe.kind for r in results):
        rs = [r for r in results if r.probe.kind == kind]
        conf = [r.probe.configured for r in rs]
        meas = [r.measured for r in rs]
        base = statistics.median([statistics.median(r.baseline) for r in rs])
        passed = sum(r.ok for r in rs)
        print(
            f"{kind:<10} {len(rs):>5} {_span(conf):>13} {_span(meas):>13} "
            f"{max(abs(r.error) for r in rs):>9.3f} {base:>8.3f}  "
            f"{'PASS' if passed == len(rs) else 'FAIL'} ({passed}/{len(rs)})"
        )


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if hi - lo < 0.0005 else f"{lo:.2f}-{hi:.2f}"
