"""Benchmark: does the emulated network deliver what the scenario configures?

(a) Bandwidth: two Mininet hosts joined by one veth pair; the sender's egress interface is
    shaped with the project's own tc commands (``topologies.backends.tc.link_argv``, HTB
    with cburst 15k, exactly what the mininet backend runs). A TCP socket transfer from
    host 1 to host 2 measures goodput at the receiver (after a warm-up second), for
    cellular-like rates; reported as measured / configured, next to the ceiling that TCP/IP
    and Ethernet headers allow (1448 payload bytes per 1514-byte frame = 95.6%).
(b) Delay: with netem the kernel would add delay and jitter, measured by ping. Without
    netem (``probe_netem``) the mininet backend shapes delay and jitter in user space: here
    timestamped small messages go through the node transport's ``ShapedTransport`` +
    ``LinkShaper`` (bandwidth=False, as the mininet backend uses it) over real ZeroMQ TCP
    sockets on loopback, and the one-way delay (same clock) is compared with the
    configured mean and standard deviation.

(c) ``--netem-topology SCENARIO``: instead of (a) and (b), the kernel (netem) delay of every
    link of a scenario's topology, built by the mininet backend, measured with ping against
    an unshaped baseline of the same topology (``bench/fidelity_netem.py``). Needs a kernel
    with sch_netem: vm/test-in-qemu.sh runs it inside a QEMU VM.

(d) ``--pcap-run RUN_DIR`` / ``--pcap-scenario SCENARIO``: instead of pings or probe messages,
    the configured links' delay measured on a run's real traffic with ``bcfl pcap latency``
    (`orchestrator.pcaplat`): per link class, the configured delay against the measured one-way
    delay of every captured message hop. Where netem shaped the delay (meta.json ``delay`` is
    ``kernel(netem)``) that is the wire's first byte at one end -> the other; where the nodes
    shaped it (``userspace``) the wire shows none of it, so the delay measured is the sender's
    send record -> the first byte at the receiver's interface (the nodes' messages.csv), for
    the hops that start at the sender. ``--pcap-run`` reads a captured run directory (no root
    needed); ``--pcap-scenario`` first runs SCENARIO on the mininet backend, capturing every
    node unless the scenario names its own ``capture:``.

(e) ``--cluster SCENARIO``: instead of the above, a link between two servers of a
    ``mininet-cluster`` scenario against a link of its class inside this machine: kernel round
    trip, the one-way delay the nodes' transport gives, goodput (``bench/fidelity_cluster.py``).

Run: ``python bench/fidelity.py`` (``--quick``: shorter transfers, fewer messages). Root.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from node.transport.shaping import LinkShaper, ShapedTransport
from node.transport.zmq import ZmqTransport
from topologies.backends.mininet import import_mininet
from topologies.backends.netem import probe_netem
from topologies.backends.tc import link_argv
from topologies.spec import LinkKind, LinkSpec, NodeKind, NodeSpec, TopologySpec

if TYPE_CHECKING:
    from orchestrator.pcaplat.summary import ClassDelay

HEADER_CEILING = 1448 / 1514
TOKEN = "fdb"
SINK = r"""
import socket, sys, time
warm, dur = float(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5201)); srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 16); total = 0; t0 = None; start = time.monotonic()
while True:
    n = conn.recv_into(buf)
    if not n:
        break
    now = time.monotonic()
    if now - start < warm:
        continue
    if t0 is None:
        t0 = now
        continue
    total += n
    last = now
    if now - t0 >= dur:
        break
print(f"RESULT {total} {last - t0:.6f}", flush=True)
"""
SOURCE = r"""
import socket, sys, time
sock = socket.create_connection((sys.argv[1], 5201))
chunk = b"x" * (1 << 16); end = time.monotonic() + float(sys.argv[2])
try:
    while time.monotonic() < end:
        sock.sendall(chunk)
except OSError:
    pass
"""


@dataclass
class BwResult:
    """One bandwidth measurement."""

    configured_mbit: float
    measured_mbit: float

    @property
    def ratio(self) -> float:
        """Measured / configured."""
        return self.measured_mbit / self.configured_mbit


def measure_bandwidth(rates: list[float], warm_s: float, dur_s: float) -> list[BwResult]:
    """TCP goodput through a veth pair shaped by link_argv, one rate after another."""
    import_mininet()
    from mininet.log import setLogLevel
    from mininet.net import Mininet

    setLogLevel("warning")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bcfl-fidelity-"))
    sink_py, source_py = tmp / "sink.py", tmp / "source.py"
    sink_py.write_text(SINK)
    source_py.write_text(SOURCE)
    for rate in rates:
        net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
        try:
            h1 = net.addHost(f"{TOKEN}h1", ip="10.99.0.1/24")
            h2 = net.addHost(f"{TOKEN}h2", ip="10.99.0.2/24")
            net.addLink(h1, h2, intfName1=f"{TOKEN}h1-eth0", intfName2=f"{TOKEN}h2-eth0")
            net.build()
            link = LinkSpec("h1", "h2", LinkKind.CELLULAR, rate, 5.0)
            for argv in link_argv(f"{TOKEN}h1-eth0", link, delay_in_kernel=False):
                out = h1.cmd(" ".join(argv) + " 2>&1; echo rc=$?")
                if not out.strip().endswith("rc=0"):
                    raise RuntimeError(f"tc failed: {out.strip()}")
            sink = h2.popen([sys.executable, str(sink_py), str(warm_s), str(dur_s)], text=True)
            assert sink.stdout is not None
            sink.stdout.readline()  # "listening"
            h1.cmd(f"{sys.executable} {source_py} 10.99.0.2 {warm_s + dur_s + 2}")
            out, _ = sink.communicate(timeout=warm_s + dur_s + 30)
            m = re.search(r"RESULT (\d+) ([\d.]+)", out)
            if m is None:
                raise RuntimeError(f"sink said: {out!r}")
            nbytes, secs = int(m.group(1)), float(m.group(2))
            results.append(BwResult(rate, nbytes * 8 / secs / 1e6))
        finally:
            net.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def two_node_topology(delay_ms: float, jitter_ms: float) -> TopologySpec:
    """Two MECs (under one BS) joined by one backhaul link pair with the given delay and jitter."""
    nodes = (
        NodeSpec("bs", NodeKind.BS),
        NodeSpec("a", NodeKind.MEC, parent="bs"),
        NodeSpec("b", NodeKind.MEC, parent="bs"),
    )
    links = (
        LinkSpec("a", "b", LinkKind.BACKHAUL, 1000.0, delay_ms, jitter_ms),
        LinkSpec("b", "a", LinkKind.BACKHAUL, 1000.0, delay_ms, jitter_ms),
    )
    return TopologySpec(nodes=nodes, links=links)


def recv_loop_delays(
    delay_ms: float, jitter_ms: float, count: int, gap_s: float, port: int
) -> list[float]:
    """One-way delays (ms) of `count` timestamped messages a -> b through ShapedTransport,
    received concurrently by a thread (same process, same monotonic clock)."""
    import threading

    topo = two_node_topology(delay_ms, jitter_ms)
    peers = {"a": f"tcp://127.0.0.1:{port}", "b": f"tcp://127.0.0.1:{port + 1}"}
    recv = ZmqTransport("b", peers["b"], peers, 1 << 20)
    inner = ZmqTransport("a", peers["a"], peers, 1 << 20)
    sender = ShapedTransport(
        inner, LinkShaper(topo, "a", np.random.default_rng(7), bandwidth=False)
    )
    delays: list[float] = []
    done = threading.Event()

    def receiver() -> None:
        while not done.is_set():
            frame = recv.recv(0.2)
            if frame is None:
                continue
            now = time.monotonic()
            sent_at, seq = struct.unpack_from("!dI", frame)
            if seq > 0:
                delays.append((now - sent_at) * 1000)

    thread = threading.Thread(target=receiver, daemon=True)
    started = False
    try:
        sender.send("b", struct.pack("!dI", time.monotonic(), 0))
        time.sleep(delay_ms / 1000 + 4 * jitter_ms / 1000 + 0.5)
        thread.start()
        started = True
        for i in range(count):
            sender.send("b", struct.pack("!dI", time.monotonic(), i + 1) + b"\0" * 64)
            time.sleep(gap_s)
        sender.flush(10.0)
        end = time.monotonic() + 2.0
        while len(delays) < count and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        done.set()
        if started:
            thread.join()
        sender.close()
        recv.close()
    return delays


def summarise(delays: list[float]) -> dict[str, Any]:
    """Mean, sd and percentiles in ms."""
    arr = np.array(delays)
    return {
        "n": len(delays),
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def expected_truncated(mu: float, sd: float) -> tuple[float, float]:
    """Mean and sd of max(0, N(mu, sd)) by sampling (what LinkShaper draws)."""
    x = np.maximum(0.0, np.random.default_rng(0).normal(mu, sd, 1_000_000))
    return float(x.mean()), float(x.std())


def capture_delays(run_dir: Path, out: Path | None = None) -> list[ClassDelay]:
    """Per link class, the configured delay against the one measured on the run's captured
    messages (`orchestrator.pcaplat`, which writes its files to `out`, default a temporary
    folder): per message, ``one_way_ms`` (the sender's send record -> the first byte at the
    receiver) against its route's summed configured delay, whoever shaped it (user space
    holds the frame before the sender's socket; netem delays it at each egress, the first
    before tcpdump's tap). The same per-route-class figures as `bcfl pcap latency`'s table."""
    from orchestrator.pcaplat.analysis import analyse
    from orchestrator.pcaplat.summary import class_delays

    with tempfile.TemporaryDirectory(prefix="bcfl-fidelity-") as tmp:
        rows = analyse(run_dir, out or Path(tmp)).rows
    return class_delays(rows)


def print_capture_fidelity(run_dir: Path) -> int:
    """(d): print `capture_delays(run_dir)` as a table; 2 with one line on bad input."""
    from orchestrator.pcaplat.analysis import PcapLatencyError

    try:
        delays = capture_delays(run_dir)
    except PcapLatencyError as exc:
        print(f"bench/fidelity.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"== (d) delay on the real traffic of {run_dir} (bcfl pcap latency)")
    if not delays:
        print("  no message hop with both ends measured (capture a sender and its receiver)")
        return 1
    print(
        f"  {'route class':<22} {'shaped by':<14} {'n':>5} {'configured':>11} {'median':>9} "
        f"{'p95':>9} {'error':>8}  measured"
    )
    for d in delays:
        print(
            f"  {d.link_class:<22} {d.delay_shaped_by:<14} {d.hops:>5} {d.configured_ms:>8.2f} ms "
            f"{d.median_ms:>6.2f} ms {d.p95_ms:>6.2f} ms {d.error_ms:>+8.2f}  "
            "send record -> receiver's wire"
        )
    return 0


def run_captured(scenario_path: Path) -> Path:
    """Run a scenario on the mininet backend with packet captures (every daemon node unless
    the scenario names its own); returns the run directory."""
    from orchestrator.runner import Run
    from orchestrator.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    update: dict[str, Any] = {"backend": "mininet"}
    if not probe_netem().available:
        update["delay_mode"] = "userspace"
    scenario = scenario.model_copy(update=update)
    if not scenario.capture:
        from topologies.builders import build_hierarchy

        spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
        scenario = scenario.model_copy(update={"capture": [n.id for n in spec.daemons()]})
    out = Path(tempfile.mkdtemp(prefix=f"bcfl-fidelity-{scenario.name}-"))
    result = Run(scenario, out, progress=False).execute()
    print(
        f"ran {scenario.name!r} on mininet ({result.rounds_completed} rounds, "
        f"capture {scenario.capture}) -> {out}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short transfers, fewer messages")
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0], help="Mbit/s")
    ap.add_argument("--delay", type=float, default=20.0, help="configured delay (ms)")
    ap.add_argument("--jitter", type=float, default=5.0, help="configured jitter sd (ms)")
    ap.add_argument(
        "--netem-topology",
        type=Path,
        metavar="SCENARIO",
        help="measure the kernel delay of every link of SCENARIO's topology instead",
    )
    ap.add_argument("--count", type=int, default=30, help="--netem-topology: pings per link")
    ap.add_argument(
        "--interval", type=float, default=0.05, help="--netem-topology: seconds between pings"
    )
    ap.add_argument(
        "--baseline-only",
        action="store_true",
        help="--netem-topology: only the unshaped pass (kernels without netem)",
    )
    ap.add_argument(
        "--pcap-run",
        type=Path,
        metavar="RUN_DIR",
        help="measure the links' delay from RUN_DIR's captured traffic (bcfl pcap latency)",
    )
    ap.add_argument(
        "--pcap-scenario",
        type=Path,
        metavar="SCENARIO",
        help="run SCENARIO on mininet with captures, then measure as --pcap-run does",
    )
    ap.add_argument(
        "--cluster",
        type=Path,
        metavar="SCENARIO",
        help="a cross-server link of a mininet-cluster SCENARIO against a same-server one",
    )
    ap.add_argument("--rate", type=float, default=50.0, help="--cluster: probed links' Mbit/s")
    args = ap.parse_args(argv)
    if args.pcap_run is not None:
        return print_capture_fidelity(args.pcap_run)
    if os.geteuid() != 0:
        print("bench/fidelity.py needs root (Mininet, tc)", file=sys.stderr)
        return 2
    if args.pcap_scenario is not None:
        return print_capture_fidelity(run_captured(args.pcap_scenario))
    if args.cluster is not None:
        from bench.fidelity_cluster import run as run_cluster

        dur = 3.0 if args.quick else 10.0
        return run_cluster(args.cluster, 50 if args.quick else 200, 0.01, dur, args.rate)
    if args.netem_topology is not None:
        from bench.fidelity_netem import run

        return run(args.netem_topology, args.count, args.interval, args.baseline_only)
    warm_s, dur_s = (1.0, 3.0) if args.quick else (1.0, 10.0)
    count = 200 if args.quick else 1000
    gap_s = 0.005
    print(
        f"bcfl fidelity benchmark; host {platform.node()} {os.cpu_count()} cores, "
        f"kernel {platform.release()}"
    )

    print(f"\n== (a) bandwidth: TCP goodput over a veth shaped by link_argv (HTB), "
          f"{dur_s:.0f} s after {warm_s:.0f} s warm-up")  # fmt: skip
    print(f"{'configured':>12} {'measured':>12} {'meas/conf':>10} {'meas/header-ceiling':>20}")
    for r in measure_bandwidth(args.rates, warm_s, dur_s):
        print(
            f"{r.configured_mbit:>8.1f} Mb/s {r.measured_mbit:>7.2f} Mb/s {r.ratio:>9.1%} "
            f"{r.ratio / HEADER_CEILING:>19.1%}"
        )
    print(f"  (ceiling from headers: {HEADER_CEILING:.1%} of the configured rate is goodput)")

    print("\n== (b) delay")
    probe = probe_netem()
    if probe.available:
        print(f"  netem available ({probe.reason}); kernel delay could be measured with ping")
    else:
        print(
            f"  netem is NOT available on this kernel ({probe.reason}): kernel delay/jitter "
            "cannot be measured here (no ping RTT test); the mininet backend shapes them in "
            "user space (delay_mode userspace), measured below."
        )
    mu_t, sd_t = expected_truncated(args.delay, args.jitter)
    print(
        f"  user-space: ShapedTransport+LinkShaper(bandwidth=False) over ZeroMQ TCP on "
        f"loopback, {count} msgs of 76 B every {gap_s * 1000:.0f} ms, one-way delay"
    )
    print(
        f"  configured: delay {args.delay:.1f} ms, jitter sd {args.jitter:.1f} ms "
        f"(drawn max(0, N): expected mean {mu_t:.2f} ms, sd {sd_t:.2f} ms)"
    )
    for delay, jitter, port in ((args.delay, args.jitter, 47311), (0.0, 0.0, 47321)):
        s = summarise(recv_loop_delays(delay, jitter, count, gap_s, port))
        err = s["mean"] - max(mu_t if jitter else delay, 0.0)
        print(
            f"  {delay:4.1f} ms ± {jitter:3.1f}: n={s['n']} mean {s['mean']:.2f} ms "
            f"(error {err:+.2f}) sd {s['sd']:.2f} ms, p50 {s['p50']:.2f}, p99 {s['p99']:.2f}, "
            f"min {s['min']:.2f}, max {s['max']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
