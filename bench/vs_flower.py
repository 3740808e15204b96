"""Benchmark: bcfl against the one-process training floor and (where installed) Flower.

One task (issue #12): scikit-learn digits (75/25 stratified split, pixels / 16), MLP 64-64-10,
10 clients, 20 rounds, 1 local epoch, batch 16, lr 0.05, zero-delay links.

* **bcfl**: ``bcfl run`` of 1 BS x 2 MEC x 5 devices, ``shaping: none`` (no link delays),
  ledger on (it always is), on the local backend.
* **floor**: the same training in one process, no framework (`round_overhead.floor`).
* **Flower**: ``flwr.simulation.start_simulation`` with FedAvg over the same 10 partitions and
  the same model, when ``flwr`` (with its simulation extra) is importable; otherwise the
  column is skipped with the reason.

Each system runs as its own process tree (the floor and Flower in a child ``python
bench/vs_flower.py --child ...``), in turn, the order rotated every repeat so that a change
of the machine's load hits every column. For each we print the process wall time, the peak
PSS of the process tree (the sum of ``/proc/PID/smaps_rollup`` Pss over the process and all
its descendants, sampled every 0.2 s) and the steady round time (median of rounds >= 2: the
time between two of bcfl's publisher round starts; the floor's round; Flower's time between
the server-side evaluations), then the ratios bcfl/floor and bcfl/Flower, and the load average.

Run: ``python bench/vs_flower.py --repeats 3`` (``--rounds`` to shorten, ``--systems bcfl floor``
to leave Flower out). ``--baseline REV`` adds ``base``: ``bcfl run`` of the ``node``,
``topologies`` and ``orchestrator`` packages of git revision REV (exported to a temporary
directory put first on ``PYTHONPATH``), in the same rotation, and prints bcfl/base.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # round_overhead, next to this file

REPO = Path(__file__).resolve().parents[1]
SEED = 1
TASK: dict[str, Any] = {
    "rounds": 20,
    "local_epochs": 1,
    "batch_size": 16,
    "learning_rate": 0.05,
}
SAMPLE_S = 0.2


def log(msg: str) -> None:
    """Progress to stderr, so stdout holds just the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- measuring a process tree ----------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree_pss_kib(root: int) -> int:
    """Sum of the Pss of `root` and all its descendants (KiB)."""
    children = _children()
    pids, total = [root], 0
    while pids:
        pid = pids.pop()
        pids.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `argv` to its end; (wall seconds, peak PSS of its process tree in MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss_kib(proc.pid))
        time.sleep(SAMPLE_S)  # a sampling period, not synchronisation
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited with code {proc.returncode}")
    return wall, peak / 1024


# --- the three systems -----------------------------------------------------------------------


def bcfl_scenario(rounds: int, device_replica: str | None = None) -> str:
    """The task as a bcfl scenario (YAML is JSON); `device_replica`: the scenario's
    ``ledger.device_replica`` (None: its default)."""
    ledger = {} if device_replica is None else {"ledger": {"device_replica": device_replica}}
    return json.dumps(
        {
            "name": "vs-flower",
            "seed": SEED,
            "scheme": "vanilla",
            "backend": "local",
            "shaping": "none",
            "dataset": {"name": "digits"},
            "model": "mlp",
            "partition": {"scheme": "iid"},
            "training": {**TASK, "rounds": rounds, "round_deadline_s": 60},
            "topology": {"base_stations": 1, "mecs_per_bs": 2, "devices_per_mec": 5},
            **ledger,
        }
    )


def run_bcfl(
    rounds: int, work: Path, device_replica: str | None = None, tree: Path | None = None
) -> dict[str, Any]:
    """One ``bcfl run``; its wall, peak PSS and the publisher's round times. `tree`: a
    directory holding another revision's packages (`export_tree`) to run instead."""
    from orchestrator.collect import read_records

    work.mkdir(parents=True)
    scenario = work / "scenario.yaml"
    scenario.write_text(bcfl_scenario(rounds, device_replica))
    out = work / "run"
    bcfl = str(Path(sys.executable).parent / "bcfl")
    env = None
    if tree is not None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
    wall, pss = measure([bcfl, "run", str(scenario), "--quiet", "--out", str(out)], env)
    records = [r for r in read_records(out / "nodes" / "pub") if r.get("event") == "round"]
    return {"wall_s": wall, "pss_mib": pss, "round_s": round_periods(records)}


def round_periods(records: list[dict[str, Any]]) -> list[float]:
    """Seconds from each round's start (the publisher sending its global model) to the next
    round's start, from the publisher's round records (a round starts ``round_time_s`` before
    its record's wall time); the last round counts its own ``round_time_s``. The period, not
    ``round_time_s``, is what the floor's and Flower's round times measure, and it stays the
    right figure when the publisher evaluates round r while round r+1 runs."""
    records = sorted(records, key=lambda r: int(r["round"]))
    starts = [float(r["wall_time"]) - float(r["round_time_s"]) for r in records]
    periods = [b - a for a, b in itertools.pairwise(starts)]
    return [*periods, float(records[-1]["round_time_s"])] if records else []


def export_tree(rev: str, dest: Path) -> None:
    """The packages `bcfl run` imports (node, topologies, orchestrator) of git revision
    `rev`, under `dest`."""
    dest.mkdir(parents=True)
    archive = dest / "tree.tar"
    with archive.open("wb") as fh:
        subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "node", "topologies", "orchestrator"],
            stdout=fh,
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()


def run_child(kind: str, rounds: int, work: Path) -> dict[str, Any]:
    """The floor or Flower in a child process; its wall, peak PSS and round times."""
    work.mkdir(parents=True)
    result = work / "result.json"
    argv = [sys.executable, __file__, "--child", kind, "--rounds", str(rounds)]
    wall, pss = measure([*argv, "--result", str(result)])
    figures: dict[str, Any] = json.loads(result.read_text())
    return {"wall_s": wall, "pss_mib": pss, "round_s": figures["round_s"]}


def child_floor(rounds: int) -> list[float]:
    """`round_overhead.floor` on the task: one process, no framework."""
    from round_overhead import Workload, floor

    w = Workload(
        "digits",
        "mlp",
        rounds,
        TASK["local_epochs"],
        TASK["batch_size"],
        TASK["learning_rate"],
        SEED,
    )
    return floor(w).round_times


def child_flower(rounds: int) -> list[float]:
    """The task in Flower's simulation engine (FedAvg, every client every round)."""
    import flwr as fl  # type: ignore[import-not-found,unused-ignore]

    from node.learning.datasets import load_dataset
    from node.learning.models import build_model
    from node.learning.partition import partition
    from node.learning.train import configure_torch_threads, evaluate, train_local
    from node.learning.weights import get_weights, set_weights

    configure_torch_threads(1)
    ds = load_dataset("digits", None, seed=SEED)
    n_clients = 10
    parts = partition(ds.train_y, n_clients, "iid", SEED)
    model = build_model("mlp", ds.input_shape, ds.num_classes, seed=SEED)
    names = list(get_weights(model))

    def to_weights(arrays: list[Any]) -> dict[str, Any]:
        return dict(zip(names, arrays, strict=True))

    class Client(fl.client.NumPyClient):  # type: ignore[misc,unused-ignore]
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> Any:
            local = build_model("mlp", ds.input_shape, ds.num_classes, seed=SEED)
            set_weights(local, to_weights(parameters))
            idx = parts[self.index]
            result = train_local(
                local,
                ds.train_x[idx],
                ds.train_y[idx],
                TASK["local_epochs"],
                TASK["batch_size"],
                TASK["learning_rate"],
                seed=SEED + self.index,
            )
            return list(get_weights(local).values()), int(result.samples), {}

    def client_fn(arg: Any) -> Any:
        index = int(arg) if isinstance(arg, str) else int(arg.node_config["partition-id"])
        return Client(index).to_client()

    stamps: list[float] = []

    def evaluate_fn(server_round: int, parameters: list[Any], config: dict[str, Any]) -> Any:
        set_weights(model, to_weights(parameters))
        result = evaluate(model, ds.test_x, ds.test_y)
        stamps.append(time.perf_counter())
        return result.loss, {"accuracy": result.accuracy}

    strategy = fl.server.strategy.FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_clients,
        min_available_clients=n_clients,
        evaluate_fn=evaluate_fn,
        initial_parameters=fl.common.ndarrays_to_parameters(list(get_weights(model).values())),
    )
    fl.simulation.start_simulation(
        client_fn=client_fn,
        num_clients=n_clients,
        config=fl.server.ServerConfig(num_rounds=rounds),
        strategy=strategy,
        client_resources={"num_cpus": 1},
    )
    return [b - a for a, b in itertools.pairwise(stamps)]  # stamps[0]: round 0


def flower_missing() -> str | None:
    """Why Flower cannot run here, or None."""
    for module in ("flwr", "ray"):
        if importlib.util.find_spec(module) is None:
            return f"{module!r} is not importable (install flwr[simulation] to compare)"
    return None


# --- report ----------------------------------------------------------------------------------


def steady(round_s: list[float]) -> float:
    """Median of rounds >= 2 (round 1 pays one-off costs)."""
    return statistics.median(round_s[1:] or round_s)


def main() -> None:
    """Parse arguments; run the systems in turn; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each system (default 3)")
    parser.add_argument("--rounds", type=int, default=TASK["rounds"], help="default 20")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=("bcfl", "floor", "flower"),
        default=["bcfl", "floor", "flower"],
        help="which to run (default all; bcfl is always run, the ratios need it)",
    )
    parser.add_argument(
        "--device-replica",
        choices=("full", "light"),
        help="bcfl's ledger.device_replica (default: the scenario default)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run bcfl at git revision REV ('base'), in turn with the others (or from "
        "REV, a directory holding the node, topologies and orchestrator packages)",
    )
    parser.add_argument("--child", choices=("floor", "flower"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        fn = child_floor if args.child == "floor" else child_flower
        args.result.write_text(json.dumps({"round_s": fn(args.rounds)}))
        sys.stdout.flush()
        sys.stderr.flush()
        # no interpreter teardown (tens of seconds with torch._dynamo's modules on a loaded
        # machine): bcfl's daemons leave the same way (os._exit in the fork server's children)
        os._exit(0)
    if args.repeats < 1 or args.rounds < 2:
        parser.error("--repeats must be >= 1 and --rounds >= 2")
    systems = ["bcfl", *(s for s in ("floor", "flower") if s in args.systems)]
    if args.baseline:
        systems.insert(1, "base")
    reason = flower_missing() if "flower" in systems else None
    if reason is not None:
        systems.remove("flower")
        print(f"Flower: skipped: {reason}")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bcfl-vs-flower-") as tmp:
        tree = Path(tmp) / "baseline-tree"
        if args.baseline and Path(args.baseline).is_dir():
            tree = Path(args.baseline)  # a directory holding the packages already
        elif args.baseline:
            export_tree(args.baseline, tree)
        for rep in range(args.repeats):
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
            for system in order:
                log(f"repeat {rep + 1}/{args.repeats}: {system}")
                work = Path(tmp) / f"{system}-{rep}"
                if system in ("bcfl", "base"):
                    base = tree if system == "base" else None
                    r = run_bcfl(args.rounds, work, args.device_replica, base)
                else:
                    r = run_child(system, args.rounds, work)
                results[system].append(r)
                loads.append(os.getloadavg()[0])
                log(
                    f"  wall {r['wall_s']:.1f} s, peak PSS {r['pss_mib']:.0f} MiB, "
                    f"steady round {steady(r['round_s']):.4f} s, load {loads[-1]:.1f}"
                )
    med: dict[str, dict[str, float]] = {
        s: {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "pss_mib": statistics.median(r["pss_mib"] for r in rs),
            "round_s": statistics.median(steady(r["round_s"]) for r in rs),
        }
        for s, rs in results.items()
    }
    print(
        f"task: digits, MLP 64-64-10, 10 clients, {args.rounds} rounds, E=1, B=16, lr=0.05; "
        f"median of {args.repeats} repeat(s); bcfl ledger.device_replica: "
        f"{args.device_replica or 'default'}"
        + (f"; base: bcfl at {args.baseline}" if args.baseline else "")
    )
    print(f"{'':<8}{'wall s':>10}{'peak PSS MiB':>14}{'steady round s':>16}")
    for s, m in med.items():
        print(f"{s:<8}{m['wall_s']:>10.1f}{m['pss_mib']:>14.0f}{m['round_s']:>16.4f}")
    for other in ("base", "floor", "flower"):
        if other in med:
            b, o = med["bcfl"], med[other]
            print(
                f"bcfl/{other}: wall {b['wall_s'] / o['wall_s']:.2f}x, "
                f"peak PSS {b['pss_mib'] / o['pss_mib']:.2f}x, "
                f"steady round {b['round_s'] / o['round_s']:.2f}x"
            )
    for other in ("base", "floor"):
        if other in results:
            per_rep = [
                steady(b["round_s"]) / steady(o["round_s"])
                for b, o in zip(results["bcfl"], results[other], strict=True)
            ]
            print(
                f"bcfl/{other} steady round per repeat: "
                + ", ".join(f"{x:.2f}x" for x in per_rep)
                + f" (median {statistics.median(per_rep):.2f}x)"
            )
    print(
        f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
