"""The cluster preflight: every server checked over ssh before anything starts.

How it works
------------
For each server of the `cluster:` section, in parallel:

1. a probe (`PROBE`, a short Python script fed on stdin to the server's ``python -I -``)
   reports the Python version, the installed ``bcfl-testbed`` version, a digest of the
   project's source files as that interpreter finds them (`node`, `orchestrator`,
   `topologies`: every ``.py`` file's path and bytes), the tools Mininet Cluster Edition
   needs (``mnexec``, ``sudo``, ``ip``, ``tc``, ``brctl``; ``tcpdump`` for captures),
   whether ``sudo -n true`` works, which tunnel interfaces the kernel can make (a gretap, a
   vxlan and a tap, each tried in a throwaway network namespace), whether it has netem (a
   qdisc tried the same way), cores and memory, and
   whether the run directory's path (where given; a server keeps its nodes' part of the run
   directory at the same path as here) can be made, with its free disk, and, for
   ``containers: true``, whether ``docker`` is there, its engine answers and holds the node
   image;
2. the clock: one ssh session echoes ``time.time()`` for each line it reads; of five
   exchanges the one with the least round trip gives the offset, ± half that round trip
   (`clock_offset`).

The same probe runs here with this machine's interpreter; a server's version or digest that
differs from ours is a problem (the daemons of one run must run the same code). A server that
cannot be reached, lacks a tool, has the wrong code or a clock further off than
``max_clock_skew_ms`` is named with what is missing and how to fix it; `check` returns every
server's report and `problems` lists them all, so one run of the preflight shows everything.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from topologies.backends.cluster import ssh
from topologies.backends.cluster.settings import ClusterSection, ServerSettings

PROBE = r"""
import hashlib, json, os, shutil, subprocess, sys
from importlib import metadata, util

path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
out = {"python": sys.version.split()[0], "euid": os.geteuid(), "cpus": os.cpu_count()}
try:
    out["version"] = metadata.version("bcfl-testbed")
except metadata.PackageNotFoundError:
    out["version"] = None
digest, files = hashlib.sha256(), 0
for pkg in ("node", "orchestrator", "topologies"):
    spec = util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        files = -1
        break
    root = sorted(spec.submodule_search_locations)[0]
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            full = os.path.join(here, name)
            digest.update(os.path.relpath(full, os.path.dirname(root)).encode() + b"\0")
            with open(full, "rb") as f:
                digest.update(f.read() + b"\0")
            files += 1
out["digest"] = digest.hexdigest()[:16] if files > 0 else None
out["tools"] = {t: shutil.which(t, path=path) for t in ("mnexec", "sudo", "ip", "tc", "brctl",
                                                        "tcpdump")}
sudo = out["tools"]["sudo"]
out["sudo_ok"] = bool(sudo) and subprocess.run([sudo, "-n", "true"], capture_output=True,
                                               timeout=30).returncode == 0
unshare, ip = shutil.which("unshare", path=path), out["tools"]["ip"]
root = [] if os.geteuid() == 0 else [sudo, "-n"] if sudo else None
kinds = {
    "gre": ["link", "add", "name", "bcflchk", "type", "gretap", "local", "127.0.0.1",
            "remote", "127.0.0.2", "key", "1"],
    "vxlan": ["link", "add", "name", "bcflchk", "type", "vxlan", "id", "1", "local",
              "127.0.0.1", "remote", "127.0.0.2", "dstport", "4789"],
    "ssh": ["tuntap", "add", "dev", "bcflchk", "mode", "tap"],
}
tc = out["tools"]["tc"]
netem = ["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
out["netem"] = bool(unshare and tc) and root is not None and subprocess.run(
    root + [unshare, "-n", tc] + netem, capture_output=True, timeout=30).returncode == 0
out["tunnels"] = {}
for kind, args in kinds.items():  # made in a throwaway network namespace, gone with it
    ok = bool(unshare and ip) and root is not None and subprocess.run(
        root + [unshare, "-n", ip] + args, capture_output=True, timeout=30).returncode == 0
    out["tunnels"][kind] = ok
mem = {}
with open("/proc/meminfo") as f:
    for line in f:
        key, _, value = line.partition(":")
        mem[key] = value.split()[0]
out["mem_available_mb"] = int(mem.get("MemAvailable", 0)) // 1024
with open("/proc/sys/kernel/random/boot_id") as f:
    out["boot_id"] = f.read().strip()
if len(sys.argv) > 1 and sys.argv[1]:  # the run directory: writable where it is or would be
    there = sys.argv[1]
    while not os.path.exists(there):
        there = os.path.dirname(there)
    out["run_dir_writable"] = os.path.isdir(there) and os.access(there, os.W_OK | os.X_OK)
    out["run_dir_free_gb"] = round(shutil.disk_usage(there).free / 2**30, 1)
if len(sys.argv) > 2:  # cluster.containers: the Docker engine and the node image
    docker = shutil.which("docker", path=path)
    out["docker"] = {"cli": docker, "engine": None, "image": False}
    if docker:
        ver = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=60)
        if ver.returncode == 0 and ver.stdout.strip():
            out["docker"]["engine"] = ver.stdout.strip()
            out["docker"]["image"] = subprocess.run(
                [docker, "image", "inspect", "--format", "{{.Id}}", sys.argv[2]],
                capture_output=True, timeout=60).returncode == 0
print("BCFL-PROBE " + json.dumps(out))
"""
ECHO_TIME = "import sys, time\nfor _ in sys.stdin:\n    print(repr(time.time()), flush=True)\n"
CLOCK_EXCHANGES = 5
PROBE_TIMEOUT_S = 120.0  # beyond the connect: a slow server's Python start-up and hashing
TUNNEL_NEEDS = {
    "gre": "the kernel needs GRE (CONFIG_NET_IPGRE, module ip_gre); or use another tunnel kind",
    "vxlan": "the kernel needs VXLAN (CONFIG_VXLAN); or use another tunnel kind",
    "ssh": "the kernel needs TUN/TAP (CONFIG_TUN, module tun); or use another tunnel kind",
}
NEEDED_TOOLS = {
    "mnexec": "apt-get install mininet",
    "sudo": "apt-get install sudo (Mininet Cluster Edition runs its commands with sudo)",
    "ip": "apt-get install iproute2",
    "tc": "apt-get install iproute2",
    "brctl": "apt-get install bridge-utils",
}


@dataclass
class ServerReport:
    """What the preflight found on one server: facts for the summary, problems to fix."""

    name: str
    destination: str
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    clock_offset_ms: float | None = None
    clock_uncertainty_ms: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the server passed every check."""
        return not self.problems

    def line(self) -> str:
        """One line: the server, ok or its problems, and what it has."""
        f = self.facts
        have = []
        if f.get("version"):
            have.append(f"bcfl-testbed {f['version']} (source {f.get('digest')})")
        if f.get("cpus"):
            have.append(f"{f['cpus']} cores, {f.get('mem_available_mb', 0):,} MB available")
        if "run_dir_free_gb" in f:
            have.append(f"{f['run_dir_free_gb']:g} GB free for the run directory")
        if self.clock_offset_ms is not None:
            have.append(f"clock {self.clock_offset_ms:+.1f} ms (±{self.clock_uncertainty_ms:.1f})")
        status = "ok" if self.ok else "FAILED: " + "; ".join(self.problems)
        detail = f" — {', '.join(have)}" if have else ""
        return f"{self.name} ({self.destination}): {status}{detail}"


def clock_offset(samples: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(offset, uncertainty) in seconds from (sent, remote time, received) samples: the
    sample with the least round trip, its remote time against the midpoint of the trip,
    ± half the trip. Positive: the server's clock is ahead of ours."""
    if not samples:
        raise ValueError("no clock samples")
    sent, remote, received = min(samples, key=lambda s: s[2] - s[0])
    return remote - (sent + received) / 2, (received - sent) / 2


def probe(
    server: ServerSettings,
    python: str,
    connect_timeout_s: float,
    run_dir: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """Run `PROBE` with `python` on `server` (and the run directory's path, and the node
    image to look for in its Docker engine, where given); its facts, or ``{"error": why}``."""
    timeout_s = connect_timeout_s + PROBE_TIMEOUT_S
    words = [python, "-I", "-", run_dir or "", *([image] if image else [])]
    try:
        done = ssh.run(server, words, connect_timeout_s, timeout_s, stdin=PROBE)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout_s:g} s", "unreachable": True}
    for line in done.stdout.splitlines():
        if line.startswith("BCFL-PROBE "):
            facts: dict[str, Any] = json.loads(line[len("BCFL-PROBE ") :])
            return facts
    said = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1][:200]
    if done.returncode == 255 and not server.is_local:
        return {"error": f"ssh failed: {said}", "unreachable": True}
    if done.returncode == 127:
        return {"error": f"python {python} not found", "no_python": True}
    return {"error": f"the probe failed (exit {done.returncode}): {said}"}


def measure_clock(
    server: ServerSettings, python: str, connect_timeout_s: float
) -> tuple[float, float]:
    """(offset, uncertainty) in seconds of `server`'s clock against ours (`clock_offset`);
    the session is killed if it has not answered within the connect timeout plus
    PROBE_TIMEOUT_S."""
    if server.is_local:
        return 0.0, 0.0
    code = shlex.quote(ECHO_TIME)
    argv = [*ssh.ssh_argv(server, connect_timeout_s), f"{shlex.quote(python)} -u -c {code}"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    samples = []
    watchdog = threading.Timer(connect_timeout_s + PROBE_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        for _ in range(CLOCK_EXCHANGES):
            sent = time.time()
            proc.stdin.write("t\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
            received = time.time()
            if not answer:
                break
            samples.append((sent, float(answer), received))
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    return clock_offset(samples)


def _python(server: ServerSettings) -> str:
    return server.python or sys.executable


def check_server(
    index: int,
    server: ServerSettings,
    section: ClusterSection,
    ours: dict[str, Any],
    run_dir: str | None = None,
    image: str | None = None,
) -> ServerReport:
    """Every check of one server (see the module docstring)."""
    report = ServerReport(server.name, "this machine" if server.is_local else server.destination)
    where = f"cluster.servers[{index}]"
    python = _python(server)
    facts = probe(server, python, section.ssh_timeout_s, run_dir, image)
    report.facts = facts
    if "error" in facts:
        hint = ""
        if facts.get("no_python"):
            hint = f" (give {where}.python: the project's venv interpreter on that server)"
        elif facts.get("unreachable"):
            hint = f" (check {where}: address, port, user, key; ssh must log in without a password)"
        report.problems.append(facts["error"] + hint)
        return report
    if facts.get("version") is None or facts.get("digest") is None:
        report.problems.append(
            f"bcfl-testbed is not installed for {python} (give {where}.python: the project's "
            "venv interpreter on that server)"
        )
    elif (facts["version"], facts["digest"]) != (ours.get("version"), ours.get("digest")):
        report.problems.append(
            f"bcfl-testbed {facts['version']} (source {facts['digest']}) differs from this "
            f"machine's {ours.get('version')} (source {ours.get('digest')}): install the same "
            "tree on every server"
        )
    tools = facts.get("tools", {})
    for tool, fix in NEEDED_TOOLS.items():
        if not tools.get(tool):
            report.problems.append(f"{tool} not found: {fix}")
    if tools.get("sudo") and not facts.get("sudo_ok"):
        report.problems.append(
            f"sudo -n true fails for {server.user}: sudo must not ask for a password"
        )
    if run_dir and not facts.get("run_dir_writable"):
        report.problems.append(f"the run directory {run_dir} cannot be made by {server.user}")
    if image is not None:
        report.problems += docker_problems(facts.get("docker", {}), image)
    if not facts.get("tunnels", {}).get(section.tunnel):
        report.problems.append(
            f"cannot make a {section.tunnel} tunnel interface (cluster.tunnel: "
            f"{section.tunnel}): {TUNNEL_NEEDS[section.tunnel]}"
        )
    try:
        offset, uncertainty = measure_clock(server, python, section.ssh_timeout_s)
    except (ValueError, OSError) as exc:
        report.problems.append(f"the clock could not be read: {exc}")
        return report
    report.clock_offset_ms, report.clock_uncertainty_ms = offset * 1e3, uncertainty * 1e3
    if abs(offset) * 1e3 > section.max_clock_skew_ms:
        report.problems.append(
            f"its clock is {offset * 1e3:+.0f} ms off ours (±{uncertainty * 1e3:.0f}), more than "
            f"cluster.max_clock_skew_ms {section.max_clock_skew_ms:g}: sync the clocks "
            "(chrony or ntp)"
        )
    elif uncertainty * 1e3 > section.max_clock_skew_ms:
        report.problems.append(
            f"its clock cannot be read to within cluster.max_clock_skew_ms "
            f"{section.max_clock_skew_ms:g} (round trip {2 * uncertainty * 1e3:.0f} ms)"
        )
    return report


def node_image(section: ClusterSection, containers: Any) -> str | None:
    """The node image every server's engine must hold (``cluster.containers``; None: none):
    the scenario's ``containers.image``, else the tag of this code (``bcfl image build``)."""
    if not section.containers:
        return None
    from topologies.backends.image import default_tag

    return str(containers.image or default_tag())


def docker_problems(docker: dict[str, Any], image: str) -> list[str]:
    """What keeps a server from running the nodes' containers (``cluster.containers``)."""
    if not docker.get("cli"):
        return ["docker not found (cluster.containers: true): apt-get install docker.io"]
    if not docker.get("engine"):
        return ["no Docker engine answers (cluster.containers: true): start dockerd"]
    if not docker.get("image"):
        return [
            f"its Docker engine has no node image {image} (cluster.containers: true): "
            f"bcfl image build there, or docker save {image} | ssh SERVER docker load"
        ]
    return []


def check(
    section: ClusterSection, run_dir: str | None = None, image: str | None = None
) -> list[ServerReport]:
    """Check every server of `section` (in parallel), that each can make `run_dir` and, for
    containers, has `image` in a running Docker engine, where given; one report each, in the
    section's order."""
    here = ServerSettings(name="here", address="localhost")
    ours = probe(here, sys.executable, section.ssh_timeout_s)
    if "error" in ours:
        raise RuntimeError(f"the probe failed on this machine: {ours['error']}")
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(section.servers)))) as pool:
        futures = [
            pool.submit(check_server, i, s, section, ours, run_dir, image)
            for i, s in enumerate(section.servers)
        ]
        return [f.result() for f in futures]


def same_machine(reports: list[ServerReport], section: ClusterSection) -> list[str]:
    """The remote servers that are this machine (the same kernel boot id as the local
    server's): a run would copy its directory onto itself and remove it afterwards."""
    here = [r for r, s in zip(reports, section.servers, strict=True) if s.is_local]
    boot = here[0].facts.get("boot_id") if here else None
    return [
        f"server {r.name} ({r.destination}) is this machine (the same boot id): give it as "
        "address: localhost"
        for r, s in zip(reports, section.servers, strict=True)
        if not s.is_local and boot and r.facts.get("boot_id") == boot
    ]


def problems(reports: list[ServerReport]) -> list[str]:
    """Every problem, prefixed with its server's name."""
    return [f"server {r.name} ({r.destination}): {p}" for r in reports for p in r.problems]
