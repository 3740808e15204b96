"""Figures and a text summary from a run directory's `metrics.csv`."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def load_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def global_rounds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The publisher's rows (the global model's test accuracy), by round."""
    out = [r for r in rows if r["role"] == "publisher" and r["accuracy"] != ""]
    return sorted(out, key=lambda r: int(r["round"]))


def plot_accuracy(run_dir: Path) -> Path:
    """Write accuracy.png: global test accuracy and loss, device training accuracy, round time."""
    rows = load_metrics(run_dir)
    pub = global_rounds(rows)
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    rounds = [int(r["round"]) for r in pub]
    ax_acc.plot(rounds, [float(r["accuracy"]) for r in pub], "o-", label="global model (test)")
    by_round: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["role"] == "device" and r["accuracy"] != "":
            by_round[int(r["round"])].append(float(r["accuracy"]))
    if by_round:
        xs = sorted(by_round)
        ax_acc.plot(
            xs,
            [sum(by_round[x]) / len(by_round[x]) for x in xs],
            "s--",
            label="devices, mean (local train)",
        )
    for ax in (ax_acc, ax_time):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    ax_time.bar(rounds, [float(r["round_time_s"]) for r in pub])
    ax_time.set_xlabel("round")
    ax_time.set_ylabel("round time (s)")
    ax_time.grid(alpha=0.3, axis="y")
    title = f"{pub[0]['run']} ({pub[0]['scheme']})" if pub else run_dir.name
    fig.suptitle(title)
    fig.tight_layout()
    path = run_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(run_dir: Path) -> str:
    """A per-round text table of the global model."""
    lines = [f"{'round':>5}  {'accuracy':>8}  {'loss':>8}  {'devices':>7}  {'round s':>8}  missing"]
    for r in global_rounds(load_metrics(run_dir)):
        lines.append(
            f"{r['round']:>5}  {float(r['accuracy']):8.4f}  {float(r['loss']):8.4f}  "
            f"{r['contributors']:>7}  {float(r['round_time_s']):8.2f}  {r['missing'] or '-'}"
        )
    return "\n".join(lines)
