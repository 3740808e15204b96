"""Benchmark: what a federated round costs on the local backend, against a one-process floor.

(a) Two real runs (``Run(...).execute()``: one process per node, ZeroMQ, signed msgpack
    frames) of 1 BS x 2 MEC x 5 devices, one with shaping "userspace" and one with "none".
    Per-round time is the publisher's ``round_time_s`` (global sent -> partials combined ->
    test evaluation done), steady state = rounds >= 2.
(b) The floor: the same compute in this one process on one torch thread, no messaging: per
    round, each of the 10 devices loads the global weights, runs ``train_local`` on its
    exact partition with Learner.train's epochs/batch/lr/seed formula; then one ``fedavg``
    and one test ``evaluate``.
(c) Ratios distributed / floor, against the sequential floor and against floor / nproc
    (the ideal use of every core, since the device processes train in parallel).

Run: ``python bench/round_overhead.py`` (``--quick``: digits + MLP, 5 rounds).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.learning.aggregate import fedavg
from node.learning.datasets import DatasetError, load_dataset
from node.learning.models import build_model, count_parameters
from node.learning.partition import partition
from node.learning.train import configure_torch_threads, evaluate, train_local
from node.learning.weights import Weights, get_weights, set_weights
from orchestrator.collect import read_records
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

BS, MECS, DEVICES_PER_MEC = 1, 2, 5
N_DEVICES = BS * MECS * DEVICES_PER_MEC


@dataclass
class Workload:
    """The learning task both measurements run."""

    dataset: str
    model: str
    rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    partition: str = "iid"
    note: str = ""

    def label(self) -> str:
        """Short description for the table."""
        return (
            f"{self.dataset}/{self.model}, {self.partition}, E={self.local_epochs}, "
            f"B={self.batch_size}, lr={self.learning_rate}, {self.rounds} rounds"
        )


@dataclass
class Figures:
    """Per-round times (seconds) of one measurement, plus run-level numbers."""

    round_times: list[float]
    accuracy: float | None = None
    total_s: float = 0.0
    startup_s: float | None = None
    device_train_s: list[float] = field(default_factory=list)
    missing: int = 0
    out_dir: Path | None = None
    eval_s: list[float] = field(default_factory=list)
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)

    def steady(self) -> list[float]:
        """Rounds 2.. (round 1 pays one-off costs), or all if there is only one."""
        return self.round_times[1:] or self.round_times

    def median(self) -> float:
        """Median steady-state round time."""
        return statistics.median(self.steady())

    def mean(self) -> float:
        """Mean steady-state round time."""
        return statistics.fmean(self.steady())


def log(msg: str) -> None:
    """Progress to stderr, so stdout holds just the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def floor(w: Workload) -> Figures:
    """The same rounds sequentially in this process on one torch thread, no messaging."""
    configure_torch_threads(1)
    t_start = time.perf_counter()
    ds = load_dataset(w.dataset, None, seed=w.seed)
    model = build_model(w.model, ds.input_shape, ds.num_classes, seed=w.seed)
    parts = partition(ds.train_y, N_DEVICES, w.partition, w.seed)
    shards = [(ds.train_x[idx], ds.train_y[idx]) for idx in parts]
    # Learner._warm_up's equivalent: torch's lazy initialisation outside the timings.
    scratch = copy.deepcopy(model)
    train_local(scratch, shards[0][0][:2], shards[0][1][:2], 1, 2, 1e-3, seed=0)
    evaluate(scratch, shards[0][0][:2], shards[0][1][:2])
    global_w: Weights = get_weights(model)
    times: list[float] = []
    train_s: list[float] = []
    eval_s: list[float] = []
    acc = None
    for round_no in range(1, w.rounds + 1):
        t0 = time.perf_counter()
        updates: list[tuple[Weights, float]] = []
        for part_index, (x, y) in enumerate(shards):
            set_weights(model, global_w)
            result = train_local(
                model,
                x,
                y,
                epochs=w.local_epochs,
                batch_size=w.batch_size,
                lr=w.learning_rate,
                seed=(w.seed * 1_000_003 + (part_index + 1) * 7919 + round_no) % 2**63,
            )
            train_s.append(result.seconds)
            updates.append((get_weights(model), float(result.samples)))
        t1 = time.perf_counter()
        global_w = fedavg(updates)
        set_weights(model, global_w)
        acc = evaluate(model, ds.test_x, ds.test_y).accuracy
        eval_s.append(time.perf_counter() - t1)
        times.append(time.perf_counter() - t0)
        log(f"floor round {round_no}: {times[-1]:.2f} s, accuracy {acc:.4f}")
    return Figures(times, acc, time.perf_counter() - t_start, device_train_s=train_s, eval_s=eval_s)


def phases(out: Path, nodes: dict[str, str], rounds: list[dict[str, Any]]) -> list[Any]:
    """Per steady round, seconds from the publisher's send: (last device got the global,
    last device sent its update, last MEC sent its partial, publisher finished)."""
    recs = {
        nid: {r["round"]: r for r in read_records(out / "nodes" / nid) if r.get("event") == "round"}
        for nid, kind in nodes.items()
        if kind in ("device", "mec")
    }
    result = []
    for p in rounds[1:]:
        rd, t0 = p["round"], p["wall_time"] - p["round_time_s"]
        dev = [recs[n][rd] for n, k in nodes.items() if k == "device" and rd in recs[n]]
        mec = [recs[n][rd] for n, k in nodes.items() if k == "mec" and rd in recs[n]]
        if not dev or not mec:
            continue
        got = max(r["wall_time"] - r["round_time_s"] - t0 for r in dev)
        sent = max(r["wall_time"] - t0 for r in dev)
        partial = max(r["wall_time"] - t0 for r in mec)
        result.append((got, sent, partial, float(p["round_time_s"])))
    return result


def distributed(w: Workload, shaping: str, root: Path, deadline_s: float) -> Figures:
    """One real run on the local backend; figures from the nodes' metrics."""
    scenario = parse_scenario(
        {
            "name": f"bench-{shaping}",
            "seed": w.seed,
            "scheme": "vanilla",
            "backend": "local",
            "shaping": shaping,
            "dataset": {"name": w.dataset},
            "model": w.model,
            "partition": {"scheme": w.partition},
            "training": {
                "rounds": w.rounds,
                "local_epochs": w.local_epochs,
                "batch_size": w.batch_size,
                "learning_rate": w.learning_rate,
                "round_deadline_s": deadline_s,
            },
            "topology": {
                "base_stations": BS,
                "mecs_per_bs": MECS,
                "devices_per_mec": DEVICES_PER_MEC,
                "t_ms": 10,
            },
        },
        source="bench",
    )
    out = root / f"run-{shaping}"
    run = Run(scenario, out, progress=False)
    t0 = time.perf_counter()
    result = run.execute()
    total = time.perf_counter() - t0
    meta: dict[str, Any] = json.loads((out / "meta.json").read_text())
    pub = read_records(out / "nodes" / "pub")
    rounds = [r for r in pub if r.get("event") == "round"]
    started = [r for r in pub if r.get("event") == "started"]
    startup = started[0]["wall_time"] - meta["started_at"] if started else None
    device_train: list[float] = []
    for node_id, kind in meta["nodes"].items():
        if kind == "device":
            device_train += [
                r["train_time_s"]
                for r in read_records(out / "nodes" / node_id)
                if r.get("event") == "round" and r.get("round", 0) >= 2
            ]
    missing = sum(len(r.get("missing", [])) for r in rounds)
    if result.rounds_completed != w.rounds:
        log(f"WARNING: {shaping}: {result.rounds_completed}/{w.rounds} rounds completed")
    return Figures(
        [float(r["round_time_s"]) for r in rounds],
        result.final_accuracy,
        total,
        startup,
        device_train,
        missing,
        out,
        phases=phases(out, meta["nodes"], rounds),
    )


def main() -> None:
    """Parse arguments, run the floor and both distributed runs, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="default fashion-mnist (quick: digits)")
    parser.add_argument("--model", default=None, help="default small-cnn (quick: mlp)")
    parser.add_argument("--rounds", type=int, default=None, help="default 6 (quick: 5)")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=300.0, help="round deadline (s)")
    parser.add_argument(
        "--shaping",
        nargs="+",
        default=["userspace", "none"],
        choices=["userspace", "none"],
        help="which distributed runs to do",
    )
    parser.add_argument("--quick", action="store_true", help="digits + mlp, 5 rounds")
    args = parser.parse_args()
    quick_defaults = ("digits", "mlp", 5)
    full_defaults = ("fashion-mnist", "small-cnn", 6)
    d_name, d_model, d_rounds = quick_defaults if args.quick else full_defaults
    w = Workload(
        dataset=args.dataset or d_name,
        model=args.model or d_model,
        rounds=args.rounds or d_rounds,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    try:
        ds = load_dataset(w.dataset, None, seed=w.seed)
    except DatasetError as exc:
        w.note = f"NOTE: {w.dataset} unavailable ({exc}); fell back to digits"
        log(w.note)
        w.dataset = "digits"
        ds = load_dataset(w.dataset, None, seed=w.seed)
    n_params = count_parameters(build_model(w.model, ds.input_shape, ds.num_classes, w.seed))
    n_train, n_test = len(ds.train_y), len(ds.test_y)
    del ds

    root = Path(tempfile.mkdtemp(prefix="bcfl-bench-round-"))
    nproc = os.cpu_count() or 1
    log(f"workload {w.label()}; run directories under {root}")
    runs: dict[str, Figures] = {}
    for shaping in args.shaping:
        log(f"distributed run, shaping={shaping} ...")
        runs[shaping] = distributed(w, shaping, root, args.deadline)
        log(f"  done in {runs[shaping].total_s:.1f} s")
    log("floor (one process, one thread) ...")
    fl = floor(w)

    print(f"machine: {platform.platform()}, nproc={nproc}, python {platform.python_version()}")
    if w.note:
        print(w.note)
    print(
        f"workload: {w.label()}; {n_params:,} parameters; {n_train} train samples over "
        f"{N_DEVICES} devices ({BS} BS x {MECS} MEC x {DEVICES_PER_MEC} devices), "
        f"{n_test} test samples"
    )
    print(f"run directories: {root}")
    print("per-round times: steady state (rounds 2..), median [mean]")
    print()
    cores = min(nproc, N_DEVICES)
    fl_par = fl.median() / cores
    header = (
        f"{'measurement':<32} {'s/round med':>11} {'[mean]':>8} {'/floor':>7} "
        f"{'/floor÷' + str(cores):>8} {'start-up s':>10} {'total s':>8} {'final acc':>9}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'floor (1 process, 1 thread)':<32} {fl.median():11.3f} {fl.mean():8.3f} "
        f"{1.0:7.2f} {fl.median() / fl_par:8.2f} {'-':>10} {fl.total_s:8.1f} "
        f"{fl.accuracy or 0.0:9.4f}"
    )
    print(
        f"{'floor / ' + str(cores) + ' (ideal ' + str(cores) + ' cores)':<32} "
        f"{fl_par:11.3f} {'-':>8} {fl_par / fl.median():7.2f} {1.0:8.2f}"
    )
    for shaping, f in runs.items():
        startup = f"{f.startup_s:10.1f}" if f.startup_s is not None else f"{'?':>10}"
        print(
            f"{'distributed, shaping=' + shaping:<32} {f.median():11.3f} {f.mean():8.3f} "
            f"{f.median() / fl.median():7.2f} {f.median() / fl_par:8.2f} {startup} "
            f"{f.total_s:8.1f} {f.accuracy or 0.0:9.4f}"
        )
    print("-" * len(header))
    print(
        "/floor: distributed s/round over the floor's, both training the 10 devices; the "
        "devices train in parallel, so below 1 means the cores helped more than messaging cost."
    )
    print(
        f"/floor÷{cores}: over the floor split perfectly across {cores} cores; above 1 is the "
        "real overhead (processes, messaging, shaping, serial evaluation) per round."
    )
    print(
        "start-up: from launching the node processes to the publisher's 'started' record "
        "(all nodes up); total: Run.execute() wall time incl. start-up, stop and collection."
    )
    print()
    floor_train = statistics.median(fl.device_train_s[N_DEVICES:] or fl.device_train_s)
    fl_train = fl.median() - statistics.median(fl.eval_s[1:] or fl.eval_s)
    print(
        f"floor: median train_local per device {floor_train:.3f} s (alone on one core); "
        f"per round: load+train {fl_train:.3f} s + fedavg/evaluate "
        f"{statistics.median(fl.eval_s[1:] or fl.eval_s):.3f} s; with training split over "
        f"{cores} cores and evaluation serial the ideal is "
        f"{fl_train / cores + statistics.median(fl.eval_s[1:] or fl.eval_s):.3f} s/round"
    )
    for shaping, f in runs.items():
        train = statistics.median(f.device_train_s) if f.device_train_s else float("nan")
        rounds_s = " ".join(f"{t:.2f}" for t in f.round_times)
        print(
            f"shaping={shaping}: median device train_time_s {train:.3f} s "
            f"({N_DEVICES} processes sharing {nproc} cores); devices left out: {f.missing}; "
            f"rounds [s]: {rounds_s}"
        )
    print(f"floor rounds [s]: {' '.join(f'{t:.2f}' for t in fl.round_times)}")
    print()
    print("distributed round phases, s after the publisher sent the global (median of rounds 2..):")
    print(
        f"{'shaping':<10} {'last dev got global':>20} {'last dev sent update':>21} "
        f"{'last MEC partial':>17} {'pub done (eval)':>16}"
    )
    for shaping, f in runs.items():
        if f.phases:
            med = [statistics.median(ph[i] for ph in f.phases) for i in range(4)]
            print(f"{shaping:<10} {med[0]:20.3f} {med[1]:21.3f} {med[2]:17.3f} {med[3]:16.3f}")


if __name__ == "__main__":
    main()
