"""Where a steady round's CPU goes: CPU milliseconds per round of every node process.

    .venv/bin/python bench/round_cpu.py [--rounds 20] [--repeats 1] [--device-replica light]

Runs `bench/vs_flower.py`'s bcfl task (1 BS x 2 MEC x 5 devices, digits, MLP, `shaping:
none`) with ``bcfl run`` and samples the user+system CPU time of each node process (from
``/proc/PID/stat``; the PIDs from the run's ``pids.json``) while it runs. A round's figures
are the CPU a process used between the publisher's round-2 record and its last-round record,
divided by the rounds between them, so start-up and the first round are left out; each
thread is read on its own (``/proc/PID/task``: the main thread, ZeroMQ's, the blob fsync
thread). Prints each process's ms per round (the main thread and the others), the sums per
kind (publisher, MECs, devices), the total and the median steady round period, with the
load average. On a machine with fewer cores than
busy processes the total, not any one process, bounds the round: a round cannot take less
than total CPU / cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_flower import REPO, bcfl_scenario, export_tree, round_periods, steady

POLL_S = 0.01
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid` by thread name (the main thread as "main")."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = "main" if tid == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


def rounds_done(metrics: Path) -> int:
    """How many round records the publisher has written."""
    try:
        text = metrics.read_text()
    except OSError:
        return 0
    return text.count('"event": "round"')


def one_run(
    rounds: int, work: Path, device_replica: str | None = None, tree: Path | None = None
) -> tuple[dict[tuple[str, str], float], float]:
    """CPU ms per round by (node, thread), and the steady round period (s). `tree`: a
    directory holding another revision's packages to run instead (`vs_flower.export_tree`)."""
    from orchestrator.collect import read_records

    work.mkdir(parents=True)
    (work / "scenario.yaml").write_text(bcfl_scenario(rounds, device_replica))
    out = work / "run"
    bcfl = str(Path(sys.executable).parent / "bcfl")
    proc = subprocess.Popen(
        [bcfl, "run", str(work / "scenario.yaml"), "--quiet", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        env=None if tree is None else {**os.environ, "PYTHONPATH": str(tree)},
    )
    pids: dict[str, int] = {}
    start: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    marks = (2, rounds)
    metrics = out / "nodes" / "pub" / "metrics.jsonl"
    while proc.poll() is None:
        if not pids:
            try:
                pids = json.loads((out / "pids.json").read_text())
            except (OSError, ValueError):
                pids = {}
        done = rounds_done(metrics)
        sample = {(n, t): c for n, p in pids.items() for t, c in thread_cpu_s(p).items()}
        if done >= marks[0] and not start:
            start = sample
        if start and (done < marks[1] or not last):
            last = sample
        time.sleep(POLL_S)  # a sampling period, not synchronisation
    if proc.returncode != 0 or not start or not last:
        raise RuntimeError(f"bcfl run failed or was too short (code {proc.returncode})")
    n = marks[1] - marks[0]
    per_round = {k: 1000 * (last[k] - start.get(k, 0.0)) / n for k in last}
    records = [r for r in read_records(out / "nodes" / "pub") if r.get("event") == "round"]
    return per_round, steady(round_periods(records))


KINDS = {"pub": "publisher", "mec": "MECs", "dev": "devices"}


def kind_totals(med: dict[tuple[str, str], float]) -> dict[str, float]:
    """CPU ms per round by kind of node (publisher, MECs, devices) and in all ("total")."""
    out = {
        name: sum(v for (n, _), v in med.items() if n.startswith(prefix))
        for prefix, name in KINDS.items()
    }
    out["total"] = sum(med.values())
    return out


def main() -> None:
    """Run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--device-replica",
        choices=("full", "light"),
        help="the scenario's ledger.device_replica (default: its default)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run git revision REV (or a directory holding the node, topologies and "
        "orchestrator packages), alternating, and print the ratios",
    )
    args = parser.parse_args()
    runs: dict[str, list[dict[tuple[str, str], float]]] = {"now": [], "base": []}
    periods: dict[str, list[float]] = {"now": [], "base": []}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bcfl-round-cpu-") as tmp:
        tree: Path | None = None
        if args.baseline and Path(args.baseline).is_dir():
            tree = Path(args.baseline)
        elif args.baseline:
            tree = Path(tmp) / "baseline-tree"
            export_tree(args.baseline, tree)
        for rep in range(args.repeats):
            order = ["now", "base"] if tree is not None else ["now"]
            for which in order if rep % 2 == 0 else order[::-1]:
                cpu, period = one_run(
                    args.rounds,
                    Path(tmp) / f"{which}-{rep}",
                    args.device_replica,
                    tree if which == "base" else None,
                )
                runs[which].append(cpu)
                periods[which].append(period)
    meds = {
        which: {k: statistics.median(r.get(k, 0.0) for r in rs) for k in {k for r in rs for k in r}}
        for which, rs in runs.items()
        if rs
    }
    med = meds["now"]
    nodes = sorted({n for n, _ in med})
    for node in nodes:
        threads = {t: v for (n, t), v in med.items() if n == node}
        detail = ", ".join(f"{t} {v:.1f}" for t, v in sorted(threads.items()) if t != "main")
        print(
            f"{node:<8}{sum(threads.values()):8.1f} ms/round (main {threads.get('main', 0):.1f}"
            f"{'; ' + detail if detail else ''})"
        )
    for prefix, name in KINDS.items():
        total = sum(v for (n, _), v in med.items() if n.startswith(prefix))
        main_only = sum(v for (n, t), v in med.items() if n.startswith(prefix) and t == "main")
        print(f"{name:<10}{total:8.1f} ms/round (main threads {main_only:.1f})")
    load = f"load {load0:.1f}-{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    print(
        f"total {sum(med.values()):.1f} ms CPU per round; steady round period "
        f"{1000 * statistics.median(periods['now']):.1f} ms; {load}; median of {args.repeats}"
    )
    if "base" in meds:
        now, base = kind_totals(meds["now"]), kind_totals(meds["base"])
        print(f"against {args.baseline} (alternating, median of {args.repeats} each; {load}):")
        for name in (*KINDS.values(), "total"):
            print(
                f"  {name:<10} {now[name]:7.1f} vs {base[name]:7.1f} ms/round "
                f"({now[name] / base[name]:.2f}x)"
            )
        p_now, p_base = statistics.median(periods["now"]), statistics.median(periods["base"])
        print(
            f"  period     {1000 * p_now:7.1f} vs {1000 * p_base:7.1f} ms ({p_now / p_base:.2f}x)"
        )


if __name__ == "__main__":
    main()
