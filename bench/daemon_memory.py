"""Benchmark: where a forked node daemon's private memory goes, as a function of the run's size.

No thousand-process run: for each size the run's files are prepared in this process
(``Run(...).prepare()``), the run's shared file is preloaded as the fork server does
(``node.forkserver._preload`` then ``runfiles.load``, ``gc.collect(); gc.freeze()``), and one
child is forked per node measured. The child builds the node's daemon
(``node.__main__.build_daemon``) and, with ``--start``, starts its role (a device loads its data
part and builds its model; its hello waits in ZeroMQ's queue: nobody else runs). It reports
its private memory (``/proc/self/smaps_rollup``: Private_Clean + Private_Dirty) before and
after, the top private mappings, and, with ``--trace``, tracemalloc's top allocation sites of
the build (a separate child: tracing costs memory of its own).

    python bench/daemon_memory.py --sizes 100 1000 --node dev0-0 mec0 --trace

Prints, per size and node, the private MB the build added and its growth per daemon between
sizes (what makes a 1,000-device run's daemons cost more than a 100-device run's).

Measured on the 2-core machine (load average 2.3-2.8), `--sizes 100 1000 --start`, 10 devices
per MEC, private MB after the build and the role's start, before (commit 1d47f34, run in a
worktree in the same window) and after the shared-run work: device 18.2 -> 14.0 at 100
devices and 28.6 -> 14.7 at 1,000 (0.51x); MEC 11.0 -> 8.5 and 21.8 -> 9.3 (0.43x); growth
per member of the run 10.6-11.0 KB -> 0.7-0.8 KB. What went: a BFS over the shared links on
the first send (8.5 MB at 1,000: `topologies.routing`), each node's genesis state, encoding
and SQLite rows (~4 MB: built once by the fork server, copied as a file), pydantic and dict
copies of the roster and endpoints, and the first `train_local` (~2 MB: warmed up once).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MB = 1e6


def private_mb() -> dict[str, float]:
    """This process's Private_Clean + Private_Dirty and Pss from smaps_rollup (MB)."""
    vals: dict[str, float] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Private_Clean:", "Private_Dirty:", "Pss:", "Rss:"):
            vals[parts[0].rstrip(":")] = int(parts[1]) * 1024 / MB
    vals["private"] = vals.get("Private_Clean", 0.0) + vals.get("Private_Dirty", 0.0)
    return vals


STAGES = (
    "runfiles",
    "TopologySpec",
    "ZmqTransport",
    "LinkShaper",
    "ShapedTransport",
    "NodeKey",
    "Roster",
    "Codec",
    "ChainConfig",
    "MetricsWriter",
    "Replica",
    "make_scheme",
    "Daemon",
)


class _Staged:
    """Calls `inner` and records the private MB after each call (attributes pass through)."""

    def __init__(self, inner: Any, name: str, stages: list[tuple[str, float]]) -> None:
        self._inner, self._name, self._stages = inner, name, stages

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._inner(*args, **kwargs)
        self._stages.append((self._name, private_mb()["private"]))
        return out

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if callable(value) and attr in ("load", "from_dict", "from_hex"):
            return _Staged(value, f"{self._name}.{attr}", self._stages)
        return value


def _child(config_path: Path, start: bool, trace: bool, top: int) -> dict[str, Any]:
    from scale import private_by_mapping

    import node.__main__ as entry
    from node.__main__ import build_daemon
    from node.config import NodeConfig

    stages: list[tuple[str, float]] = []
    if not trace:  # each step of build_daemon: the private MB it added
        for name in STAGES:
            setattr(entry, name, _Staged(getattr(entry, name), name, stages))
    if trace:
        tracemalloc.start(1)
    before = private_mb()
    last = before["private"]
    t0 = time.process_time()
    config = NodeConfig.load(config_path)
    stages.insert(0, ("NodeConfig.load", private_mb()["private"]))
    daemon = build_daemon(config)
    stages.append(("build_daemon", private_mb()["private"]))
    if start:
        daemon._role.start(daemon)
        stages.append(("role.start", private_mb()["private"]))
    cpu = time.process_time() - t0
    after = private_mb()
    steps = []
    for name, value in stages:
        steps.append((name, round(value - last, 2)))
        last = value
    out: dict[str, Any] = {
        "before": before["private"],
        "after": after["private"],
        "cpu_s": round(cpu, 3),
        "mappings": private_by_mapping(os.getpid(), top),
        "steps": steps,
    }
    if trace:
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("lineno")
        out["traced_mb"] = sum(s.size for s in stats) / MB
        out["top"] = [
            (
                f"{s.traceback[0].filename.replace(str(ROOT) + '/', '')}:{s.traceback[0].lineno}",
                round(s.size / MB, 3),
                s.count,
            )
            for s in stats[:top]
        ]
    with contextlib.suppress(Exception):
        daemon.close()
    return out


def fork_measure(config_path: Path, start: bool, trace: bool, top: int) -> dict[str, Any]:
    """Fork, build the daemon in the child, return what it measured."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            data = json.dumps(_child(config_path, start, trace, top)).encode()
        except BaseException as exc:  # report, then leave without the parent's teardown
            data = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            code = 1
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(raw)
    if "error" in result:
        raise RuntimeError(f"child for {config_path}: {result['error']}")
    return result


def prepare(devices: int, per_mec: int, out: Path) -> tuple[Path, int]:
    """Write a run of `devices` devices into `out`; its shared file and daemon count."""
    from scale import scenario_dict, shape_for

    from orchestrator.runner import Run
    from orchestrator.scenario import parse_scenario

    shape = shape_for(devices, per_mec)
    scenario = parse_scenario(scenario_dict(shape, "local", 60.0, 1, "digits"), f"scale-{devices}")
    run = Run(scenario, out, progress=False)
    run.prepare()
    return out / "shared.json", shape.daemons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--per-mec", type=int, default=10, help="devices per MEC (10)")
    parser.add_argument("--node", nargs="+", default=["dev0-0"], help="node ids to measure")
    parser.add_argument("--start", action="store_true", help="also start the node's role")
    parser.add_argument("--trace", action="store_true", help="tracemalloc's top sites too")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--no-warmup", action="store_true", help="skip the fork server's preload")
    args = parser.parse_args(argv)

    from node import forkserver, runfiles

    if not args.no_warmup:
        info = forkserver._preload()
        print(f"fork server preload: {info['preload_s']:.1f} s", flush=True)
    results: dict[int, dict[str, dict[str, Any]]] = {}
    daemons: dict[int, int] = {}
    for size in args.sizes:
        out = Path(tempfile.mkdtemp(prefix=f"bcfl-dmem-{size}-"))
        try:
            shared, daemons[size] = prepare(size, args.per_mec, out)
            t0 = time.monotonic()
            runfiles.load(shared)
            gc.collect()
            gc.freeze()
            print(
                f"\n{size} devices ({daemons[size]} daemons): "
                f"preload {time.monotonic() - t0:.2f} s, "
                f"shared file {shared.stat().st_size / MB:.1f} MB, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            results[size] = {}
            for nid in args.node:
                config = out / "nodes" / nid / "config.json"
                res = fork_measure(config, args.start, False, args.top)
                results[size][nid] = res
                print(
                    f"  {nid}: private {res['before']:.1f} -> {res['after']:.1f} MB "
                    f"(+{res['after'] - res['before']:.1f}), build CPU {res['cpu_s']:.2f} s",
                    flush=True,
                )
                steps = ", ".join(f"{n} {v:+.2f}" for n, v in res["steps"])
                print(f"    steps (+MB private): {steps}")
                print("    mappings: " + ", ".join(f"{n} {v:.1f}" for n, v in res["mappings"]))
                if args.trace:
                    tr = fork_measure(config, args.start, True, args.top)
                    print(f"    tracemalloc: {tr['traced_mb']:.1f} MB live after the build")
                    for site, mb, count in tr["top"]:
                        print(f"      {mb:7.3f} MB {count:7d}  {site}")
        finally:
            gc.unfreeze()
            shutil.rmtree(out, ignore_errors=True)
    sizes = sorted(results)
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth {lo} -> {hi} devices ({daemons[lo]} -> {daemons[hi]} daemons):")
        for nid in args.node:
            a = results[lo][nid]["after"] - results[lo][nid]["before"]
            b = results[hi][nid]["after"] - results[hi][nid]["before"]
            per = (b - a) / (daemons[hi] - daemons[lo]) * 1000
            print(f"  {nid}: +{a:.1f} -> +{b:.1f} MB private ({per:.1f} KB per daemon)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
