"""Benchmark: what one Docker container per node costs (containernet backend), against the
mininet backend's forked daemons on the same topology, measured in the same run.

For each size (10 and 50 devices, 5 per MEC, plus the MECs and the publisher) a short real
scenario (digits + MLP, 4 rounds, 1 local epoch, delay_mode userspace) runs through
``Run(...).execute()`` on both backends. Printed per size and backend:

* network start: ``backend.start_network`` wall time; for containernet also the part spent
  creating and starting the containers (docker-py ``containers.run``) and per container;
* ready: from ``backend.start`` (docker exec / fork) to the publisher's ``started`` record;
* memory per node at round 1 (every daemon alive and trained once; read the moment the
  publisher writes its round-1 record, by bench/scale.py's follower thread at real-time
  priority): the daemon's PSS (``/proc/PID/smaps_rollup``) and, for containers, the
  container's memory cgroup ``total_rss`` + ``total_mapped_file`` (what the container is
  charged for, without page cache);
* one FedAvg round: the publisher's ``round_time_s`` of round 2.

Needs root, Mininet, a Docker engine (DOCKER_HOST, or a private dockerd this bench starts
under /var/tmp/bcfl-bench-docker and stops by PID) and the node image (built offline here
if missing). Run: ``python bench/containers.py [--sizes 10 50]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import PublisherFollower, raise_priority, read_mem_mb
from orchestrator.collect import read_records
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario
from topologies.backends import image
from topologies.backends.docker_engine import DockerUnavailable, PrivateDockerd, client

DEVICES_PER_MEC = 5
ROUNDS = 4  # memory is sampled at round 1: later rounds keep every daemon alive meanwhile


@dataclass
class Result:
    """One size on one backend."""

    backend: str
    devices: int
    nodes: int = 0
    net_s: float | None = None
    containers_s: float | None = None
    ready_s: float | None = None
    pss_mb: list[float] = field(default_factory=list)
    cgroup_mb: list[float] = field(default_factory=list)
    round_s: float | None = None
    rounds: int = 0
    error: str = ""


def scenario(devices: int, backend: str, tag: str) -> Any:
    mecs = max(1, devices // DEVICES_PER_MEC)
    return parse_scenario(
        {
            "name": f"containers-{backend}-{devices}",
            "seed": 1,
            "backend": backend,
            "delay_mode": "userspace",
            "dataset": {"name": "digits"},
            "model": "mlp",
            "training": {
                "rounds": ROUNDS,
                "local_epochs": 1,
                "batch_size": 32,
                "learning_rate": 0.1,
                "round_deadline_s": 300.0,
            },
            "topology": {
                "base_stations": 1,
                "mecs_per_bs": mecs,
                "devices_per_mec": devices // mecs,
                "t_ms": 10,
            },
            "startup_timeout_s": 600.0,
            "containers": {"image": tag},
        }
    )


def cgroup_mb(pid: int) -> float | None:
    """The memory cgroup's rss + mapped files (cgroup v1 memory.stat, v2 memory.stat)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "docker" not in path:  # not a container's cgroup (e.g. a reused PID): skip
            continue
        if controllers in ("memory", ""):
            base = "/sys/fs/cgroup/memory" if controllers else "/sys/fs/cgroup"
            try:
                stat = Path(base + path, "memory.stat").read_text().split()
            except OSError:
                continue
            values = dict(zip(stat[::2], stat[1::2], strict=False))
            keys = ("total_rss", "total_mapped_file") if controllers else ("anon", "file_mapped")
            return sum(int(values.get(k, 0)) for k in keys) / 2**20
    return None


def measure(devices: int, backend: str, tag: str, keep: bool) -> Result:
    res = Result(backend, devices)
    out = Path(tempfile.mkdtemp(prefix=f"bench-containers-{backend}-{devices}-"))
    try:
        run_ = Run(scenario(devices, backend, tag), out / "run", progress=False)
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    b = run_.backend
    res.nodes = len(run_.topology.daemons())
    times: dict[str, float] = {"containers": 0.0}

    start_network = b.start_network
    start = b.start

    def timed_network() -> None:
        t0 = time.monotonic()
        start_network()
        res.net_s = time.monotonic() - t0

    def timed_start(launches: Any) -> None:
        times["fork_at"] = time.time()
        start(launches)

    if backend == "containernet":
        add_host = b._add_host

        def timed_add_host(*args: Any) -> Any:
            t0 = time.monotonic()
            host = add_host(*args)
            times["containers"] += time.monotonic() - t0
            return host

        b._add_host = timed_add_host
    b.start_network = timed_network
    b.start = timed_start

    def on_event(record: dict[str, Any]) -> None:
        # read at the publisher's round-1 record, as it is written (the runner's own
        # on_round comes up to a poll later, when short runs may already be ending)
        if record.get("event") != "round" or int(record.get("round", 0)) != 1 or res.pss_mb:
            return
        for pid in b.pids().values():
            if (mem := read_mem_mb(pid)) is not None:
                res.pss_mb.append(mem[0] * 1e6 / 2**20)
            if backend == "containernet" and (c := cgroup_mb(pid)) is not None:
                res.cgroup_mb.append(c)

    follower = PublisherFollower(run_.node_dir("pub") / "metrics.jsonl", on_event)
    stop = threading.Event()

    def sampler() -> None:
        raise_priority()
        while not stop.wait(0.02):
            follower.poll()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        result = run_.execute()
        res.rounds = result.rounds_completed
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    finally:
        stop.set()
        thread.join()
    if backend == "containernet":
        res.containers_s = times["containers"]
    records = read_records(run_.node_dir("pub"))
    started = [r for r in records if r.get("event") == "started"]
    if started and "fork_at" in times:
        res.ready_s = float(started[0]["wall_time"]) - times["fork_at"]
    rounds = [r for r in records if "round_time_s" in r and r.get("round") == 2]
    if rounds:
        res.round_s = float(rounds[0]["round_time_s"])
    if not keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return res


def _f(v: float | None, unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:.1f}{unit}"


def _mem(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"mean {statistics.mean(values):.1f} MB, max {max(values):.1f} MB (n={len(values)})"


def report(res: Result) -> None:
    print(f"\n{res.backend}, {res.devices} devices ({res.nodes} node processes):")
    if res.error:
        print(f"  ERROR {res.error}")
        return
    print(f"  rounds completed: {res.rounds}/{ROUNDS}")
    print(f"  network start: {_f(res.net_s)}", end="")
    if res.containers_s is not None:
        per = res.containers_s / max(1, res.nodes)
        print(f" (containers {_f(res.containers_s)}, {per * 1000:.0f} ms per container)")
    else:
        print()
    print(f"  launch -> all ready: {_f(res.ready_s)}")
    print(f"  PSS per daemon: {_mem(res.pss_mb)}")
    if res.backend == "containernet":
        print(f"  container memory cgroup (rss + mapped files): {_mem(res.cgroup_mb)}")
    print(f"  FedAvg round 2: {_f(res.round_s)}")


def compare(c: Result, m: Result) -> None:
    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    pc = statistics.mean(c.pss_mb) if c.pss_mb else None
    pm = statistics.mean(m.pss_mb) if m.pss_mb else None
    print(
        f"  containernet / mininet at {c.devices} devices: network start "
        f"{ratio(c.net_s, m.net_s)}, ready {ratio(c.ready_s, m.ready_s)}, "
        f"PSS {ratio(pc, pm)}, round {ratio(c.round_s, m.round_s)}"
    )


def engine() -> PrivateDockerd | None:
    """Use DOCKER_HOST's engine if it answers, else start a private one."""
    try:
        client()
        return None
    except DockerUnavailable:
        pass
    d = PrivateDockerd(Path("/var/tmp/bcfl-bench-docker"))
    d.start()
    os.environ["DOCKER_HOST"] = d.host
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50], help="device counts")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/containers.py needs root (Mininet and Docker)", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(
        f"bench/containers.py on {platform.node()} ({os.cpu_count()} CPUs, "
        f"{platform.platform()}), load {load[0]:.2f} at start"
    )
    dockerd = engine()
    try:
        tag = image.default_tag()  # fixed now: the image of the code this bench started with
        if not client().images.list(name=tag):
            image.build(offline=True, tag=tag)
        print(f"node image {tag}")
        results = []
        for devices in args.sizes:
            c = measure(devices, "containernet", tag, args.keep)
            report(c)
            m = measure(devices, "mininet", tag, args.keep)
            report(m)
            compare(c, m)
            results.append((c, m))
        print(f"\nload {os.getloadavg()[0]:.2f} at end")
        ok = all(c.rounds == ROUNDS and not c.error for c, _ in results)
        return 0 if ok else 1
    finally:
        if dockerd is not None:
            dockerd.stop()


if __name__ == "__main__":
    sys.exit(main())
