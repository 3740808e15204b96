"""Figures and a text summary from a run directory's `metrics.csv`."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def load_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def global_rounds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The publisher's rows (the global model's test accuracy), by round."""
    out = [r for r in rows if r["role"] == "publisher" and r["accuracy"] != ""]
    return sorted(out, key=lambda r: int(r["round"]))


def load_events(run_dir: Path) -> list[dict[str, str]]:
    """The rows of events.csv (none when the run has no fault schedule or no file)."""
    path = run_dir / "events.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def event_marks(events: list[dict[str, str]]) -> list[tuple[float, str]]:
    """(x, label) per round with fault events: the line sits at round - 0.5, between the
    round that ended and the round the event lands in; the label names action and target
    ('crash dev0-2', 'link_down dev1-1-bs0', 'malicious dev0-0 sign_flip')."""
    by_round: dict[int, list[str]] = defaultdict(list)
    for ev in events:
        target = ev.get("link") or ev.get("nodes", "")
        if len(target) > 24:
            target = target[:21] + "..."
        label = " ".join(p for p in (ev["action"], target, ev.get("behaviour", "")) if p)
        if label not in by_round[int(ev["round"])]:
            by_round[int(ev["round"])].append(label)
    return [(r - 0.5, "\n".join(labels)) for r, labels in sorted(by_round.items())]


def accuracy_limits(values: list[float]) -> tuple[float, float]:
    """A y range that fits `values` (the accuracies of rounds >= 1): a little below their
    minimum to a little above their maximum, within [0, 1]."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = max(0.02, 0.08 * (hi - lo))
    return max(0.0, lo - pad), min(1.0, hi + pad)


def accuracy_figure(run_dir: Path) -> Figure:
    """The figure of accuracy.png: global test accuracy and mean device training accuracy
    on an axis fitted to the data (a narrow panel beside it shows the full 0-1 range),
    round time, and the fault schedule's events as labelled vertical lines."""
    rows = load_metrics(run_dir)
    pub = global_rounds(rows)
    fig, (ax_acc, ax_full, ax_time) = plt.subplots(
        1, 3, figsize=(12, 4.8), gridspec_kw={"width_ratios": (3.2, 0.9, 2.6)}
    )
    rounds = [int(r["round"]) for r in pub]
    accuracy = [float(r["accuracy"]) for r in pub]
    ax_acc.plot(rounds, accuracy, "o-", label="global model (test)", clip_on=False)
    ax_full.plot(rounds, accuracy, "-", linewidth=1)
    plotted = [a for r, a in zip(rounds, accuracy, strict=True) if r >= 1]
    by_round: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["role"] == "device" and r["accuracy"] != "":
            by_round[int(r["round"])].append(float(r["accuracy"]))
    if by_round:
        xs = sorted(by_round)
        means = [sum(by_round[x]) / len(by_round[x]) for x in xs]
        ax_acc.plot(xs, means, "s--", label="devices, mean (local train)", clip_on=False)
        ax_full.plot(xs, means, "--", linewidth=1)
        plotted += [m for x, m in zip(xs, means, strict=True) if x >= 1]
    for ax in (ax_acc, ax_time):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(*accuracy_limits(plotted))
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small")
    ax_full.set_ylim(0, 1)
    ax_full.set_title("0-1 range", fontsize="small")
    ax_full.set_xlabel("round")
    ax_full.grid(alpha=0.3)
    ax_full.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    ax_time.bar(rounds, [float(r["round_time_s"]) for r in pub])
    ax_time.set_xlabel("round")
    ax_time.set_ylabel("round time (s)")
    ax_time.grid(alpha=0.3, axis="y")
    for x, label in event_marks(load_events(run_dir)):
        for ax in (ax_acc, ax_time):
            ax.axvline(x, color="tab:red", linestyle=":", linewidth=1.2, gid="fault-event")
        ax_acc.text(
            x,
            0.02,
            label,
            transform=ax_acc.get_xaxis_transform(),
            rotation=90,
            fontsize="x-small",
            color="tab:red",
            ha="right",
            va="bottom",
            gid="fault-label",
        )
    title = f"{pub[0]['run']} ({pub[0]['scheme']})" if pub else run_dir.name
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy(run_dir: Path) -> Path:
    """Write accuracy.png (see `accuracy_figure`)."""
    fig = accuracy_figure(run_dir)
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
