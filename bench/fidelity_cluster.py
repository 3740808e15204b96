"""Shaping fidelity across servers: a link between two servers of a `mininet-cluster` scenario
against links of the same class inside each server (``bench/fidelity.py --cluster``).

How it works
------------
The scenario's topology is built on its servers by the cluster backend itself
(`ClusterBackend.start_network`: placement, tunnels, the tunnel delay measured and taken off,
tc), with the probed links' bandwidth set to ``--rate`` (the backhaul's 1 Gbit/s is more
than a software-emulated server forwards; a rate both links can carry compares the shaping,
not the CPUs). The probed links: the first crossing backhaul link and the backend's own
reference link on each end's server (a link of the same class inside that server, else another
daemon link inside it): a round trip over the crossing link has one end on each server, so its
error is compared with the mean of the two same-server links' errors (a software-emulated
server's slower processing shows in both). On each, from its first end:

1. the kernel round trip (ping; HTB only: delay is the nodes' on these backends), i.e. what
   the veth or the tunnel adds;
2. the one-way delay the nodes see: `echo_probe` round trips through `ShapedTransport` (each
   frame waits its link's shaped delay at its sender) halved, against the link's configured
   delay (the mean of its two directions): the crossing link is shaped with its tunnel's delay
   taken off, so both errors should agree;
3. TCP goodput through the shaped link (bench/fidelity.py's sink and source), against
   ``--rate``.

A crossing link passes when its delay error is within max(0.5 ms, 5 %) of the same-server
links' (the bounds of ``--netem-topology``) and its goodput within 5 % of the rate of theirs.

Run (root, the scenario's servers reachable as for ``bcfl run``):
``python bench/fidelity.py --cluster SCENARIO [--count N] [--rate MBIT]``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fidelity import SINK, SOURCE
from orchestrator.errors import ScenarioError
from orchestrator.scenario import load_scenario
from topologies.backends.cluster.backend import ClusterBackend
from topologies.backends.cluster.tunnel_delay import reference_link
from topologies.backends.ping import ping_rtts
from topologies.builders import build_hierarchy
from topologies.spec import LinkKind, LinkSpec, TopologySpec

TOKEN = "fdc"
PORT = 47400
ABS_TOL_MS = 0.5
REL_TOL = 0.05
GOODPUT_TOL = 0.05


@dataclass
class LinkResult:
    """What one probed link measured."""

    label: str
    link: LinkSpec
    servers: tuple[str, str]
    configured_ms: float  # one way, the mean of the two directions
    shaped_ms: float  # what the nodes shape it with (less the tunnel's delay)
    kernel_rtt: list[float]
    transport_rtt: list[float]
    goodput_mbit: float

    @property
    def one_way_ms(self) -> float:
        """Median transport round trip / 2."""
        return statistics.median(self.transport_rtt) / 2

    @property
    def error_ms(self) -> float:
        """Measured one-way delay - configured."""
        return self.one_way_ms - self.configured_ms


def with_rate(spec: TopologySpec, pairs: list[frozenset[str]], rate: float) -> TopologySpec:
    """`spec` with the links between each of `pairs` (both directions) at `rate` Mbit/s."""
    links = tuple(
        dataclasses.replace(link, bandwidth_mbit=rate)
        if frozenset((link.src, link.dst)) in pairs
        else link
        for link in spec.links
    )
    return TopologySpec(nodes=spec.nodes, links=links)


def one_way(spec: TopologySpec, link: LinkSpec) -> float:
    """The mean of a physical link's two directions' delays."""
    return (spec.link(link.src, link.dst).delay_ms + spec.link(link.dst, link.src).delay_ms) / 2


def probe_link(
    backend: ClusterBackend,
    configured: TopologySpec,
    label: str,
    link: LinkSpec,
    count: int,
    gap_s: float,
    dur_s: float,
) -> LinkResult:
    """Ping, echo through the nodes' transport and a TCP transfer over one link."""
    a, b = link.src, link.dst
    addr_a, addr_b = backend.address_on(a, b), backend.address_on(b, a)
    host_a, host_b = backend.host(a), backend.host(b)
    kernel = ping_rtts(host_a, addr_b, count, gap_s)
    tmp = Path(tempfile.mkdtemp(prefix=f"bcfl-{TOKEN}-"))  # the same path on both servers
    try:
        text = json.dumps(backend.shaped_topology.to_dict())
        topo_a = backend.write_for(a, tmp, "topology.json", text)
        topo_b = backend.write_for(b, tmp, "topology.json", text)
        probe = "-m topologies.backends.cluster.echo_probe"
        ends = f"--bind tcp://{{}}:{PORT} --peer-at tcp://{{}}:{PORT} --count {count} --gap {gap_s}"
        host_b.sendCmd(
            f"{backend.python_for(b)} {probe} --role echo --topology {topo_b} --me {b} --peer {a} "
            + ends.format(addr_b, addr_a)
        )
        out = host_a.cmd(
            f"{backend.python_for(a)} {probe} --role ping --topology {topo_a} --me {a} --peer {b} "
            + ends.format(addr_a, addr_b)
        )
        host_b.waitOutput()
        m = re.search(r"RESULT (\[.*\])", out)
        if m is None:
            raise RuntimeError(f"echo probe {a} -> {b} said: {out[-600:]!r}")
        transport = [float(x) for x in json.loads(m.group(1))]
        sink = backend.write_for(b, tmp, "sink.py", SINK)
        source = backend.write_for(a, tmp, "source.py", SOURCE)
        warm_s = 1.0
        host_b.sendCmd(f"{backend.python_for(b)} {sink} {warm_s} {dur_s}")
        said, deadline = "", time.monotonic() + 60
        while "listening" not in said and time.monotonic() < deadline:
            said += str(host_b.monitor(timeoutms=1000))
        host_a.cmd(f"{backend.python_for(a)} {source} {addr_b} {warm_s + dur_s + 2}")
        said += str(host_b.waitOutput())
        g = re.search(r"RESULT (\d+) ([\d.]+)", said)
        if g is None:
            raise RuntimeError(f"sink on {b} said: {said[-400:]!r}")
    finally:
        backend._done_with(tmp)  # the copies on the other servers
        shutil.rmtree(tmp, ignore_errors=True)

    where = backend.placement.server_of if backend.placement else {}
    return LinkResult(
        label=label,
        link=link,
        servers=(where[a], where[b]),
        configured_ms=one_way(configured, link),
        shaped_ms=one_way(backend.shaped_topology, link),
        kernel_rtt=kernel,
        transport_rtt=transport,
        goodput_mbit=int(g.group(1)) * 8 / float(g.group(2)) / 1e6,
    )


def run(scenario_path: Path, count: int, gap_s: float, dur_s: float, rate: float) -> int:
    """Build the scenario's network on its servers, probe, print, remove it all."""
    try:
        s = load_scenario(scenario_path)
    except ScenarioError as exc:
        print(f"bench/fidelity.py --cluster: {exc}")
        return 2
    if s.backend != "mininet-cluster" or s.cluster is None:
        print(f"{scenario_path}: backend is {s.backend!r}; --cluster needs mininet-cluster")
        return 2
    spec = build_hierarchy(s.topology.to_params(), s.seed)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bcfl-{TOKEN}-run-"))
    backend = ClusterBackend(TOKEN, "userspace", False, [], s.cluster, run_dir)
    backend.endpoints(spec)
    pl = backend.placement
    assert pl is not None
    crossing = [x for x in pl.crossing if x.kind == LinkKind.BACKHAUL] or list(pl.crossing)
    if not crossing:
        print("no link crosses servers in this placement: nothing to compare")
        return 2
    probed: list[tuple[str, LinkSpec]] = [("crossing", crossing[0])]
    for end in (crossing[0].src, crossing[0].dst):  # a same-server link on each end's server
        ref = reference_link(spec, pl, pl.server_of[end], str(crossing[0].kind))
        if ref is not None:
            probed.append((f"inside {pl.server_of[end]}", ref))
    backend.endpoints(with_rate(spec, [frozenset((x.src, x.dst)) for _, x in probed], rate))
    print(f"cluster fidelity: {scenario_path}; servers {[sv.name for sv in s.cluster.servers]}, "
          f"tunnel {s.cluster.tunnel}; probed links at {rate:g} Mbit/s; {count} round trips "
          f"each, {gap_s * 1000:.0f} ms apart; goodput over {dur_s:g} s")  # fmt: skip
    results = []
    started = time.monotonic()
    try:
        backend.start_network()
        print(f"  network up on every server in {time.monotonic() - started:.0f} s")
        for d in backend.tunnel_delays:
            print(f"  tunnel {d.src}-{d.dst}: adds {d.added_ms:.3f} ms one way (RTT "
                  f"{d.rtt_ms:.3f} vs {d.reference_rtt_ms:.3f} ms here), taken off")  # fmt: skip
        for label, link in probed:
            results.append(probe_link(backend, spec, label, link, count, gap_s, dur_s))
    finally:
        backend.stop()
    return report(results, rate)


def report(results: list[LinkResult], rate: float) -> int:
    """Print the table and the verdict; 0 when the crossing link matches, 1 when not."""
    print(f"\n{'link':<26} {'servers':<12} {'ping RTT':>9} {'configured':>10} {'shaped':>8} "
          f"{'one-way':>8} {'error':>7} {'spread':>7} {'goodput':>9}")  # fmt: skip
    for r in results:
        q = statistics.quantiles(r.transport_rtt, n=4)
        print(
            f"{r.label + ' ' + r.link.src + '-' + r.link.dst:<26} {'/'.join(r.servers):<12} "
            f"{statistics.median(r.kernel_rtt):>6.3f} ms {r.configured_ms:>7.2f} ms "
            f"{r.shaped_ms:>5.2f} ms {r.one_way_ms:>5.2f} ms {r.error_ms:>+6.2f} "
            f"{(q[2] - q[0]) / 2:>6.2f} {r.goodput_mbit:>6.1f} Mb/s ({r.goodput_mbit / rate:.1%})"
        )
    print("  one-way: median round trip through the nodes' ShapedTransport / 2; error against "
          "the configured delay; spread: interquartile range / 2 of the one-way delay")  # fmt: skip
    if len(results) < 2:
        print("no same-server link to compare with: no verdict")
        return 0
    cross, *inside = results
    # a crossing round trip has one end on each server: each server's processing once
    same_error = statistics.mean(r.error_ms for r in inside)
    same_goodput = statistics.mean(r.goodput_mbit for r in inside)
    tol = max(ABS_TOL_MS, REL_TOL * cross.configured_ms)
    delay_ok = abs(cross.error_ms - same_error) <= tol
    goodput_ok = abs(cross.goodput_mbit - same_goodput) / rate <= GOODPUT_TOL
    what = " and ".join(r.label for r in inside)
    print(f"delay: crossing error {cross.error_ms:+.2f} ms vs {same_error:+.2f} ms (the mean "
          f"{what}; bound ±{tol:.2f}): {'PASS' if delay_ok else 'FAIL'}")  # fmt: skip
    verdict = "PASS" if goodput_ok else "FAIL"
    print(f"goodput: {cross.goodput_mbit:.1f} vs {same_goodput:.1f} Mbit/s "
          f"(bound ±{GOODPUT_TOL:.0%} of {rate:g}): {verdict}")  # fmt: skip
    return 0 if delay_ok and goodput_ok else 1
