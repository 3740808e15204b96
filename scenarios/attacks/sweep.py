"""Sweep label-flipping strength lambda against aggregators; write a table and a figure.

    python scenarios/attacks/sweep.py [--base scenarios/attacks/label_flip.yaml]
        [--lambdas 0 0.25 0.5 0.75 1] [--aggregators fedavg median trimmed_mean multi_krum]
        [--out runs/sweep-label-flip] [--seeds 1] [--rounds N]

Each cell is a real `bcfl run` (local backend, every node its own process) of the base
scenario with the attackers' strength and the aggregator replaced; lambda = 0 is the clean
run. Accuracy is the global model's test accuracy averaged over the last 3 rounds (and the
seeds). Writes OUT/sweep.csv, OUT/sweep.md and OUT/sweep.png.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

AGGREGATOR_PARAMS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "median": {},
    "trimmed_mean": {"beta": 0.3},
    "multi_krum": {"f": 3},
    "krum": {"f": 3},
}


def cell(base: dict[str, Any], lam: float, aggregator: str, seed: int, out: Path) -> float:
    """Run one cell; the mean test accuracy of the last 3 rounds."""
    data = dict(base)
    data["name"] = f"flip-{aggregator}-{lam:g}-s{seed}".replace(".", "_")
    data["seed"] = seed
    data["aggregator"] = {"name": aggregator, "params": AGGREGATOR_PARAMS[aggregator]}
    faults = [dict(f) for f in base.get("faults", [])]
    for f in faults:
        if f.get("behaviour") == "label_flip":
            f["params"] = {**f.get("params", {}), "strength": lam}
    data["faults"] = [f for f in faults if lam > 0 or f.get("behaviour") != "label_flip"]
    Run(parse_scenario(data), out / data["name"], progress=False).execute()
    return statistics.mean(result_rows(out / data["name"])[-3:])


def result_rows(run_dir: Path) -> list[float]:
    """The publisher's test accuracy per round."""
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "publisher"]
    return [float(r["accuracy"]) for r in sorted(rows, key=lambda r: int(r["round"]))]


def main() -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("scenarios/attacks/label_flip.yaml"))
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument(
        "--aggregators",
        nargs="+",
        default=["fedavg", "median", "trimmed_mean", "multi_krum"],
        choices=sorted(AGGREGATOR_PARAMS),
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, help="override training.rounds")
    p.add_argument("--out", type=Path, default=Path("runs/sweep-label-flip"))
    args = p.parse_args()
    base = yaml.safe_load(args.base.read_text())
    if args.rounds:
        base["training"] = {**base.get("training", {}), "rounds": args.rounds}
    args.out.mkdir(parents=True, exist_ok=True)
    table: dict[tuple[str, float], float] = {}
    total = len(args.lambdas) * len(args.aggregators) * len(args.seeds)
    done = 0
    for agg in args.aggregators:
        for lam in args.lambdas:
            accs = []
            for seed in args.seeds:
                accs.append(cell(base, lam, agg, seed, args.out))
                done += 1
                print(
                    f"[{done}/{total}] {agg:>12} lambda={lam:<5g} seed={seed}: {accs[-1]:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
            table[(agg, lam)] = statistics.mean(accs)
    with (args.out / "sweep.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["aggregator", "lambda", "accuracy", "delta_vs_clean_fedavg"])
        clean = table.get(("fedavg", 0.0))
        for (agg, lam), acc in table.items():
            w.writerow([agg, lam, f"{acc:.4f}", "" if clean is None else f"{acc - clean:+.4f}"])
    header = "| aggregator | " + " | ".join(f"λ={lam:g}" for lam in args.lambdas) + " |"
    lines = [header, "|" + "---|" * (len(args.lambdas) + 1)]
    for agg in args.aggregators:
        lines.append(
            f"| {agg} | " + " | ".join(f"{table[(agg, lam)]:.4f}" for lam in args.lambdas) + " |"
        )
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6, 4))
    for agg in args.aggregators:
        ax.plot(args.lambdas, [table[(agg, lam)] for lam in args.lambdas], "o-", label=agg)
    ax.set_xlabel("label-flip strength λ (30% of devices)")
    ax.set_ylabel("test accuracy (last 3 rounds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "sweep.png", dpi=110)
    print(f"wrote {args.out / 'sweep.csv'}, sweep.md, sweep.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
