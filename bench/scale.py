"""Benchmark: how the local and mininet backends scale with the number of device nodes.

For each size (default 10, 100, 300, 1000 devices; 5 devices per MEC, at most 10 MECs per
BS) one short real scenario runs through ``Run(...).execute()`` on ``--backend local``
(processes on loopback addresses, no root) or ``--backend mininet`` (network namespaces,
Linux bridges or ``--switch ovs-user``, delay_mode userspace; needs root and Debian's
mininet): ``--dataset`` (digits by default; mnist-5k, mnist), the MLP, ``--rounds`` rounds (3)
of 1 local epoch, batch 8. Printed per size, with the load average before and after:

* launch -> ready: from the orchestrator's first backend call (mininet: ``start_network``,
  so the topology build counts; local: ``start``, so the fork server's imports count) to the
  publisher's ``started`` record (every node said hello); split into topology (Mininet build,
  addresses+routes, tc), fork server ready, forking every daemon, and the hellos;
* per daemon, read from /proc by a thread that follows the publisher's metrics file (every
  20 ms) when it logs ``started`` and each round (every daemon alive): PSS (mean, max), open
  fds (mean, max: the publisher's), TCP sockets and ZeroMQ sockets (each ZeroMQ socket owns
  one eventfd mailbox; a context owns two more: its I/O thread's and its reaper's) — and the
  whole tree's PSS: daemons + fork server + orchestrator (+ Mininet's host shells). The thread
  runs at SCHED_FIFO (root; nice -20 where refused; else normal);
  With several rounds, the mean PSS per daemon after each and its growth per round from
  round 2 on (caches that fill in the first rounds, or memory that keeps growing);
* FedAvg: whether round 1 completed and its ``round_time_s``; the later rounds' too.

Targets (issue 12): <= 20 MB PSS per daemon at 1,000 devices; 100 devices launch -> ready
<= 10 s including the topology; one FedAvg round at 1,000 devices completing.

``--cluster SCENARIO`` runs the sizes on the ``mininet-cluster`` backend with SCENARIO's
``cluster:`` section (servers, tunnel, placement by MEC): the same figures, with the daemons'
memory read on each one's server (a remote server's /proc over the run's ssh connection) and
printed per server, next to how many nodes each server got. A remote server's fork server and
Mininet shells are not in the tree's PSS (their PIDs are the remote server's).

Run: ``python bench/scale.py --backend local --sizes 10 100 300 1000``
(``--quick``: 10 and 100 devices only;
``--cluster scenarios/cluster_vm.yaml --sizes 10 40``: across this machine and the QEMU VM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator import runner
from orchestrator.collect import read_records
from orchestrator.preflight import check as preflight_check
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

DEVICES_PER_MEC = 5
MECS_PER_BS_MAX = 10
PSS_TARGET_MB = 20.0
PSS_TARGET_DEVICES = 1000
READY_TARGET_S = 10.0
READY_TARGET_DEVICES = 100
ROUND_TARGET_DEVICES = 1000
SAMPLE_S = 0.02
SAMPLER_RT_PRIORITY = 10
FULL_SIZES = (10, 100, 300, 1000)
QUICK_SIZES = (10, 100)
MB = 1e6


@dataclass
class Shape:
    """A BS x MEC x device hierarchy."""

    devices: int
    base_stations: int
    mecs_per_bs: int
    devices_per_mec: int

    @property
    def mecs(self) -> int:
        """MEC servers in all."""
        return self.base_stations * self.mecs_per_bs

    @property
    def daemons(self) -> int:
        """Node daemons: devices, MECs and the publisher."""
        return self.devices + self.mecs + 1

    def describe(self) -> str:
        """One line: the exact shape."""
        return (
            f"{self.base_stations} BS x {self.mecs_per_bs} MEC x {self.devices_per_mec} dev "
            f"= {self.devices} devices, {self.mecs} MECs, 1 publisher ({self.daemons} daemons)"
        )


@dataclass
class ProcStat:
    """What /proc says about one process."""

    pss_mb: float
    rss_mb: float
    fds: int
    tcp: int  # socket fds (TCP connections and listeners)
    eventfds: int  # ZeroMQ mailboxes: one per socket, two per context


@dataclass
class Snapshot:
    """Every daemon's ProcStat at one moment, plus the rest of the process tree."""

    daemons: dict[str, ProcStat]
    others_pss_mb: dict[str, float]  # "fork server", "orchestrator", "host shells"
    took_s: float
    private: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # node -> top

    def total_pss_mb(self) -> float:
        """The whole tree's PSS."""
        return sum(d.pss_mb for d in self.daemons.values()) + sum(self.others_pss_mb.values())


@dataclass
class Result:
    """What one size measured."""

    shape: Shape
    backend: str
    hosts: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # name -> seconds
    launch_at: float | None = None  # wall clock of the first backend call
    server_ready_at: float | None = None
    ready_s: float | None = None
    startup_s: float | None = None
    mem: dict[str, Snapshot] = field(default_factory=dict)  # "ready", "round 1"
    sampler_priority: str = ""
    round_s: dict[int, float] = field(default_factory=dict)
    rounds: int = 0
    total_s: float = 0.0
    estimate_mb: float | None = None  # the preflight's memory estimate
    error: str | None = None
    server_of: dict[str, str] = field(default_factory=dict)  # mininet-cluster: node -> server


def shape_for(devices: int, per_mec: int = DEVICES_PER_MEC) -> Shape:
    """`per_mec` devices per MEC, one BS per 10 MECs (fewer MECs per BS when there are fewer)."""
    mecs = max(1, devices // per_mec)
    bss = max(1, -(-mecs // MECS_PER_BS_MAX))
    if mecs % bss or mecs * per_mec != devices:
        raise ValueError(f"{devices} devices do not split evenly over {bss} BS x {per_mec}")
    return Shape(devices, bss, mecs // bss, per_mec)


def mem_available_mb() -> float:
    """MemAvailable of /proc/meminfo in MB (inf where unreadable)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / MB
    return float("inf")


def scenario_dict(
    shape: Shape,
    backend: str,
    deadline_s: float,
    rounds: int,
    dataset: str = "digits",
    switch: str = "linux",
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A short real scenario: the MLP, `rounds` rounds of 1 local epoch, batch 8."""
    out: dict[str, Any] = {
        "name": f"scale-{shape.devices}",
        "seed": 1,
        "backend": backend,
        "dataset": {"name": dataset},
        "model": "mlp",
        "partition": {"scheme": "iid"},
        "training": {
            "rounds": rounds,
            "local_epochs": 1,
            "batch_size": 8,
            "learning_rate": 0.1,
            "round_deadline_s": deadline_s,
        },
        "topology": {
            "base_stations": shape.base_stations,
            "mecs_per_bs": shape.mecs_per_bs,
            "devices_per_mec": shape.devices_per_mec,
            "t_ms": 10.0,
        },
        "startup_timeout_s": deadline_s,
    }
    if backend in ("mininet", "mininet-cluster"):
        out |= {"delay_mode": "userspace", "switch": switch}
    if cluster is not None:
        out["cluster"] = cluster
    return out


def proc_stat(pid: int) -> ProcStat | None:
    """PSS/RSS (MB, 10^6 bytes) from smaps_rollup and fd kinds from /proc/PID/fd; None if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fd_dir = f"/proc/{pid}/fd"
        links = []
        for name in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                links.append(os.readlink(f"{fd_dir}/{name}"))
    except OSError:
        return None
    vals: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Pss:", "Rss:"):
            vals[parts[0]] = int(parts[1]) * 1024 / MB
    if "Pss:" not in vals:
        return None
    return ProcStat(
        pss_mb=vals["Pss:"],
        rss_mb=vals.get("Rss:", 0.0),
        fds=len(links),
        tcp=sum(1 for x in links if x.startswith("socket:")),
        eventfds=sum(1 for x in links if x == "anon_inode:[eventfd]"),
    )


SMAPS_NODES = ("pub", "mec0", "dev0-0")
REMOTE_STAT = """
import os, sys
for pid in sys.argv[1:]:
    kb = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith(("Pss:", "Rss:")):
                kb[line[:3]] = int(line.split()[1])
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        continue
    sockets = sum(x.startswith("socket:") for x in links)
    eventfds = sum(x == "anon_inode:[eventfd]" for x in links)
    print(pid, kb.get("Pss", -1), kb.get("Rss", -1), len(links), sockets, eventfds)
"""


def remote_stats(backend: Any, server: Any, pids: list[int]) -> dict[int, ProcStat]:
    """`proc_stat` of processes on a remote server of the cluster backend: one ssh call and
    one interpreter there (a shell loop of awk and ls per process took 54 s for 24 daemons in
    the emulated VM, longer than the run)."""
    python = shlex.quote(server.python or "python3")
    out = backend._remote(server, f"{python} - {' '.join(map(str, pids))}", REMOTE_STAT.encode())
    stats = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 6 and all(x.isdigit() for x in parts):
            pid, pss, rss, fds, tcp, ev = map(int, parts)
            stats[pid] = ProcStat(pss * 1024 / MB, rss * 1024 / MB, fds, tcp, ev)
    return stats


def daemon_stats(backend: Any, daemons: dict[str, int]) -> dict[str, ProcStat]:
    """Each live daemon's ProcStat, read on its own server."""
    placement = getattr(backend, "placement", None)
    if placement is None:  # one machine
        return {nid: st for nid, pid in daemons.items() if (st := proc_stat(pid)) is not None}
    out: dict[str, ProcStat] = {}
    for server in backend.cluster.servers:
        mine = {nid: pid for nid, pid in daemons.items() if placement.server_of[nid] == server.name}
        if server.is_local:
            out |= {nid: st for nid, pid in mine.items() if (st := proc_stat(pid)) is not None}
        elif mine:
            got = remote_stats(backend, server, list(mine.values()))
            out |= {nid: got[pid] for nid, pid in mine.items() if pid in got}
    return out


def private_by_mapping(pid: int, top: int = 6) -> list[tuple[str, float]]:
    """The `top` mappings of `pid` by private memory (Private_Clean + Private_Dirty, MB)."""
    out: dict[str, float] = {}
    name = "?"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if not parts[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
            path = parts[5] if len(parts) > 5 else "[anon]"
            name = path.rsplit("/", 1)[-1]
        elif parts[0] in ("Private_Clean:", "Private_Dirty:"):
            out[name] = out.get(name, 0.0) + int(parts[1]) * 1024 / MB
    return sorted(out.items(), key=lambda kv: -kv[1])[:top]


def raise_priority() -> str:
    """Put the calling thread ahead of the daemons, so that a snapshot (one smaps_rollup walk
    per daemon) takes well under a round instead of seconds on 2 saturated cores."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SAMPLER_RT_PRIORITY))
        return f"SCHED_FIFO {SAMPLER_RT_PRIORITY}"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -20)
        return "nice -20"
    except OSError:
        return "normal (could not raise)"


def snapshot(backend: Any, daemons: dict[str, int], others: dict[str, list[int]]) -> Snapshot:
    """ProcStat of each daemon still alive, and the PSS of each group of other processes."""
    t0 = time.monotonic()
    stats = daemon_stats(backend, daemons)
    other_pss = {}
    for name, pids in others.items():
        got = [st.pss_mb for pid in pids if (st := proc_stat(pid)) is not None]
        if got:
            other_pss[name] = sum(got)
    took = time.monotonic() - t0
    private = {nid: private_by_mapping(daemons[nid]) for nid in SMAPS_NODES if nid in daemons}
    return Snapshot(stats, other_pss, took, private)


class PublisherFollower:
    """Reads the publisher's metrics file as it grows and calls `on_event(record)` for each
    new record (a partial last line waits for the next read)."""

    def __init__(self, path: Path, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.path = path
        self.on_event = on_event
        self._offset = 0
        self._partial = b""

    def poll(self) -> None:
        """Handle whatever was appended since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                self.on_event(json.loads(line))


def _timed(
    fn: Callable[..., Any], sink: dict[str, float], key: str, stamp: bool = False
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if stamp:
            sink.setdefault(key + "_at", time.time())
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[key] = time.monotonic() - t0

    return wrapper


def _other_pids(backend: Any) -> dict[str, list[int]]:
    """The tree's processes that are not daemons: fork server, orchestrator, host shells."""
    out = {"orchestrator": [os.getpid()]}
    server = getattr(backend, "_server", None)
    if server is not None and server.pid is not None:
        out["fork server"] = [server.pid]
    hosts = getattr(backend, "_hosts", None)
    if hosts:
        # mininet-cluster: a remote host's pid is its shell's on that server: not read here
        out["host shells"] = [h.pid for n, h in hosts.items() if on_this_machine(backend, n)]
    return out


def on_this_machine(backend: Any, node: str) -> bool:
    """Whether daemon `node` runs here (always, but on the mininet-cluster backend)."""
    placement = getattr(backend, "placement", None)
    if placement is None:
        return True
    return bool(backend.cluster.server(placement.server_of[node]).is_local)


PREFLIGHT_ESTIMATE: dict[str, float] = {}
SERVER_INFO: dict[str, Any] = {}


def _preflight_no_memory(s: Any, topology: Any) -> Any:
    """The run's preflight without its memory refusal: the estimate is recorded and printed
    next to the measured PSS instead (what the benchmark measures is whether it fits)."""
    out = preflight_check(s, topology, available=None)
    PREFLIGHT_ESTIMATE["mb"] = out.memory_mb
    return out


runner.preflight = _preflight_no_memory  # type: ignore[assignment]


def measure(args: argparse.Namespace, shape: Shape) -> Result:
    """Run one size and collect its figures."""
    res = Result(shape, args.backend)
    PREFLIGHT_ESTIMATE.clear()
    SERVER_INFO.clear()
    raw = scenario_dict(
        shape,
        args.backend,
        args.deadline,
        args.rounds,
        args.dataset,
        args.switch,
        args.cluster_section,
    )
    scenario = parse_scenario(raw, f"scale-{shape.devices}")
    out_dir = Path(tempfile.mkdtemp(prefix=f"bcfl-scale-{args.backend}-{shape.devices}-"))
    run = Run(scenario, out_dir, progress=args.progress)
    res.hosts = len(run.topology.daemons())
    res.estimate_mb = PREFLIGHT_ESTIMATE.get("mb")
    times: dict[str, float] = {}
    backend = run.backend
    if hasattr(backend, "start_network"):
        backend.start_network = _timed(backend.start_network, times, "net", stamp=True)
        backend._configure_hosts = _timed(backend._configure_hosts, times, "routes")
        backend._shape = _timed(backend._shape, times, "tc")
    backend.start = _timed(backend.start, times, "fork", stamp=True)
    if hasattr(backend, "prestart"):
        backend.prestart = _timed(backend.prestart, times, "prestart", stamp=True)

    def on_event(record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "started":
            moment = "ready"
        elif event == "round":
            moment = f"round {int(record.get('round', 0))}"  # every round: does memory settle?
        else:
            return
        server = getattr(backend, "_server", None)
        if server is not None and server.info:
            SERVER_INFO.update(server.info)
        if moment not in res.mem:  # no backend.poll() here: the fork server has one client
            res.mem[moment] = snapshot(backend, backend.pids(), _other_pids(backend))

    stop = threading.Event()
    follower = PublisherFollower(run.node_dir("pub") / "metrics.jsonl", on_event)

    def sampler() -> None:
        res.sampler_priority = raise_priority()
        while not stop.wait(SAMPLE_S):
            follower.poll()
            free = mem_available_mb()
            if free < args.min_free_mb and res.error is None:  # before the OOM killer picks
                res.error = f"stopped: MemAvailable {free:.0f} MB < --min-free-mb"
                for pid in backend.pids().values():  # the daemons this run forked, by PID
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        result = run.execute()
        res.rounds = result.rounds_completed
    except Exception as exc:  # report, do not hide: the breakdown so far is still printed
        res.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        with contextlib.suppress(Exception):  # best-effort cleanup after a failure
            run.backend.stop(grace_s=2.0)
    stop.set()
    thread.join()
    res.total_s = time.monotonic() - t0
    placement = getattr(run.backend, "placement", None)
    res.server_of = dict(placement.server_of) if placement is not None else {}
    for key in ("net", "routes", "tc", "fork"):
        if key in times:
            res.phases[key] = times[key]
    if {"net", "routes", "tc"} <= times.keys():
        res.phases["build"] = times["net"] - times["routes"] - times["tc"]
    res.launch_at = min(times[k] for k in ("net_at", "fork_at", "prestart_at") if k in times)
    records = read_records(run.node_dir("pub"))
    started = [r for r in records if r.get("event") == "started"]
    if started:
        res.startup_s = float(started[0]["startup_s"])
        if res.launch_at is not None:
            res.ready_s = float(started[0]["wall_time"]) - res.launch_at
    if "preload_s" in SERVER_INFO:
        res.phases["server preload"] = SERVER_INFO["preload_s"]
    for r in records:
        if r.get("event") == "round":
            res.round_s[int(r["round"])] = float(r["round_time_s"])
    failures = run.meta.get("failures") or []
    if failures and res.error is None:
        res.error = f"{len(failures)} node(s) failed, first: {failures[0]}"
    if not args.keep:
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        print(f"  (run directory kept: {out_dir})")
    return res


def _f(value: float | None, unit: str = "s", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _mean_max(values: list[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    return f"mean {statistics.fmean(values):.{digits}f}, max {max(values):.{digits}f}"


def report(res: Result) -> None:
    """Print one size's figures."""
    s, ph = res.shape, res.phases
    print(f"\n== {res.backend}, {s.devices} devices: {s.describe()}")
    if "net" in ph:
        print(
            f"  topology (start_network): {_f(ph.get('net'))}  [Mininet build "
            f"{_f(ph.get('build'))}, addresses+routes {_f(ph.get('routes'))}, "
            f"tc {_f(ph.get('tc'))}]"
        )
    print(
        f"  backend.start (fork server ready + fork every daemon): {_f(ph.get('fork'), digits=2)}"
        f"  (server preload {_f(ph.get('server preload'), digits=2)})"
    )
    print(
        f"  launch -> all ready (publisher 'started'): {_f(res.ready_s)}  "
        f"(publisher's own startup_s {_f(res.startup_s)})"
    )
    for moment in ("ready", "round 1"):
        snap = res.mem.get(moment)
        if snap is None or not snap.daemons:
            print(f"  at {moment}: n/a (the publisher never logged it)")
            continue
        d = list(snap.daemons.values())
        pub = snap.daemons.get("pub")
        others = ", ".join(f"{k} {v:.0f}" for k, v in snap.others_pss_mb.items())
        print(
            f"  at {moment} ({len(d)}/{res.hosts} daemons read in {snap.took_s:.2f} s, "
            f"{res.sampler_priority}): PSS per daemon {_mean_max([x.pss_mb for x in d])} MB; "
            f"tree {snap.total_pss_mb() / 1000:.2f} GB ({others} MB)"
        )
        print(
            f"    fds per daemon {_mean_max([float(x.fds) for x in d], 0)}; TCP sockets "
            f"{_mean_max([float(x.tcp) for x in d], 0)}; eventfds (ZeroMQ sockets + 2) "
            f"{_mean_max([float(x.eventfds) for x in d], 0)}"
            + (f"; publisher: {pub.fds} fds, {pub.tcp} TCP, {pub.eventfds} eventfds" if pub else "")
        )
    by_round = _pss_by_round(res)
    if len(by_round) > 1:
        curve = ", ".join(f"{r}: {mb:.1f}" for r, mb in by_round.items())
        print(f"  PSS per daemon (mean MB) after round {curve}")
        last = max(by_round)
        if last > 2:
            print(
                f"    from round 2 to round {last}: "
                f"{(by_round[last] - by_round[2]) / (last - 2):+.2f} MB per daemon a round"
            )
    snaps = [res.mem[m] for m in ("round 1", "ready") if m in res.mem and res.mem[m].daemons]
    snap = snaps[0] if snaps else None
    for server in sorted(set(res.server_of.values())):
        mine = [n for n, s in res.server_of.items() if s == server]
        pss = [snap.daemons[n].pss_mb for n in mine if snap and n in snap.daemons]
        print(
            f"  server {server}: {len(mine)} daemons ({len(pss)} read); PSS per daemon "
            f"{_mean_max(pss)} MB"
        )
    for nid, top in snap.private.items() if snap is not None else []:
        items = ", ".join(f"{name} {mb:.1f}" for name, mb in top)
        print(f"    private MB of {nid} by mapping: {items}")
    if res.estimate_mb is not None and snap is not None:
        print(
            f"  preflight's memory estimate {res.estimate_mb:.0f} MB "
            f"({res.estimate_mb / res.hosts:.1f} MB per daemon) vs measured tree PSS "
            f"{snap.total_pss_mb():.0f} MB ({snap.total_pss_mb() / res.hosts:.1f} MB per daemon)"
        )
    rounds = ", ".join(f"round {k} {v:.2f} s" for k, v in sorted(res.round_s.items()))
    print(f"  FedAvg: {rounds or 'no round completed'}; whole run {_f(res.total_s)}")
    if res.error:
        print(f"  ERROR: {res.error}")


def _pss_by_round(res: Result) -> dict[int, float]:
    """Mean PSS per daemon (MB) at each round the publisher logged, from its snapshots."""
    out: dict[int, float] = {}
    for moment, snap in res.mem.items():
        if moment.startswith("round ") and snap.daemons:
            out[int(moment.split()[1])] = statistics.fmean(x.pss_mb for x in snap.daemons.values())
    return dict(sorted(out.items()))


def verdicts(results: list[Result]) -> None:
    """PASS/MISS against the targets (sizes that ran)."""
    print("\n== targets")
    by = {r.shape.devices: r for r in results}
    big = by.get(PSS_TARGET_DEVICES)
    snap = big.mem.get("round 1") or big.mem.get("ready") if big else None
    if snap is None or not snap.daemons:
        print(f"  [----] <= {PSS_TARGET_MB:.0f} MB PSS per daemon at {PSS_TARGET_DEVICES}: n/a")
    else:
        mean = statistics.fmean(x.pss_mb for x in snap.daemons.values())
        ok = mean <= PSS_TARGET_MB
        print(
            f"  [{'PASS' if ok else 'MISS'}] <= {PSS_TARGET_MB:.0f} MB PSS per daemon at "
            f"{PSS_TARGET_DEVICES} devices: mean {mean:.1f} MB"
        )
    r100 = by.get(READY_TARGET_DEVICES)
    if r100 is None:
        print(f"  [----] {READY_TARGET_DEVICES} devices launch -> ready: not run")
    else:
        ok = r100.ready_s is not None and r100.ready_s <= READY_TARGET_S
        print(
            f"  [{'PASS' if ok else 'MISS'}] {READY_TARGET_DEVICES} devices launch -> ready "
            f"<= {READY_TARGET_S:.0f} s (topology included): {_f(r100.ready_s)}"
        )
    r1k = by.get(ROUND_TARGET_DEVICES)
    if r1k is None:
        print(f"  [----] one FedAvg round at {ROUND_TARGET_DEVICES} devices: not run")
    else:
        ok = 1 in r1k.round_s
        print(
            f"  [{'PASS' if ok else 'MISS'}] one FedAvg round at {ROUND_TARGET_DEVICES} "
            f"devices: {_f(r1k.round_s.get(1), digits=2)}"
        )


def summary(res: Result) -> dict[str, Any]:
    """The figures as one JSON object."""
    out: dict[str, Any] = {
        "backend": res.backend,
        "servers": {s: list(res.server_of.values()).count(s) for s in set(res.server_of.values())},
        "devices": res.shape.devices,
        "daemons": res.hosts,
        "ready_s": res.ready_s,
        "phases": {k: round(v, 3) for k, v in res.phases.items()},
        "round_s": res.round_s,
        "rounds": res.rounds,
        "estimate_mb": res.estimate_mb,
        "error": res.error,
    }
    for moment, snap in res.mem.items():
        d = list(snap.daemons.values())
        if d:
            key = moment.replace(" ", "")
            out[f"pss_mean_mb_{key}"] = round(statistics.fmean(x.pss_mb for x in d), 1)
            out[f"pss_max_mb_{key}"] = round(max(x.pss_mb for x in d), 1)
            out[f"tree_pss_mb_{key}"] = round(snap.total_pss_mb())
            out[f"others_pss_mb_{key}"] = {k: round(v) for k, v in snap.others_pss_mb.items()}
            out[f"fds_max_{key}"] = max(x.fds for x in d)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--backend", choices=("local", "mininet"), default="local")
    ap.add_argument(
        "--cluster",
        type=Path,
        metavar="SCENARIO",
        help="run on mininet-cluster with SCENARIO's cluster: section (servers, tunnel)",
    )
    ap.add_argument("--quick", action="store_true", help="10 and 100 devices only")
    ap.add_argument("--sizes", type=int, nargs="+", help="device counts (default 10 100 300 1000)")
    ap.add_argument(
        "--rounds", type=int, help="FedAvg rounds (default 3; --cluster: 10, see below)"
    )
    ap.add_argument("--per-mec", type=int, default=DEVICES_PER_MEC, help="devices per MEC (5)")
    ap.add_argument(
        "--min-free-mb",
        type=float,
        default=1500.0,
        help="kill the run's daemons when MemAvailable falls below this (default 1500)",
    )
    ap.add_argument("--dataset", choices=("digits", "mnist-5k", "mnist"), default="digits")
    ap.add_argument("--deadline", type=float, default=300.0, help="round/startup deadline (s)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--progress", action="store_true", help="show bcfl run's progress bar")
    ap.add_argument(
        "--switch",
        choices=("linux", "ovs-user"),
        default="linux",
        help="mininet base stations: Linux bridges or Open vSwitch's user-space datapath",
    )
    args = ap.parse_args(argv)
    args.cluster_section = None
    if args.cluster is not None:
        import yaml

        try:
            raw = yaml.safe_load(args.cluster.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"--cluster {args.cluster}: {exc}", file=sys.stderr)
            return 2
        args.cluster_section = raw.get("cluster") if isinstance(raw, dict) else None
        if not isinstance(args.cluster_section, dict):
            print(f"--cluster {args.cluster}: no cluster: section", file=sys.stderr)
            return 2
        args.backend = "mininet-cluster"
    if args.rounds is None:
        # a remote server's /proc is read over ssh (18 s for 24 daemons in the emulated VM):
        # the run must outlast the snapshots, or daemons exit while they are read
        args.rounds = 10 if args.cluster is not None else 3
    if args.backend != "local" and os.geteuid() != 0:
        print("bench/scale.py --backend mininet needs root (Mininet)", file=sys.stderr)
        return 2
    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"bcfl scale benchmark: {args.backend} backend"
        + (f" ({args.switch} bridges, delay_mode userspace)" if args.backend != "local" else "")
        + f", {args.dataset}/mlp, {args.rounds} rounds, E=1, batch 8; host {platform.node()} "
        f"{os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM, "
        f"kernel {platform.release()}, RLIMIT_NOFILE {soft}/{hard}"
    )
    results = []
    for n in sizes:
        shape = shape_for(n, args.per_mec)
        print(f"\n-- running {shape.describe()} ...", flush=True)
        t0 = time.monotonic()
        load = os.getloadavg()
        res = measure(args, shape)
        print(
            f"  load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after "
            f"({time.monotonic() - t0:.0f} s): {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        results.append(res)
        report(res)
        sys.stdout.flush()
    verdicts(results)
    print("\njson:", json.dumps([summary(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
