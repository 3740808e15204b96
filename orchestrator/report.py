"""Figures and a text summary from a run directory's `metrics.csv` and `blocks.csv`."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from node.ledger.timing import BLOCKS_CSV


def load_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def global_rounds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The publisher's rows (the global model's test accuracy), by round (then task)."""
    out = [r for r in rows if r["role"] == "publisher" and r["accuracy"] != ""]
    return sorted(out, key=lambda r: (int(r["round"]), r.get("task_chain", "")))


def by_task(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """`rows` split by their ``task_chain`` ("" for a run of one task), each in order."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        out[r.get("task_chain", "")].append(r)
    return dict(sorted(out.items()))


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
    plotted: list[float] = []
    for task, task_rows in by_task(pub).items():
        rounds = [int(r["round"]) for r in task_rows]
        accuracy = [float(r["accuracy"]) for r in task_rows]
        label = f"global model, {task} (test)" if task else "global model (test)"
        ax_acc.plot(rounds, accuracy, "o-", label=label, clip_on=False)
        ax_full.plot(rounds, accuracy, "-", linewidth=1)
        plotted += [a for r, a in zip(rounds, accuracy, strict=True) if r >= 1]
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
    tasks = by_task(pub)
    width = 0.8 / max(len(tasks), 1)
    for i, task_rows in enumerate(tasks.values()):
        bar_x = [int(r["round"]) + (i - (len(tasks) - 1) / 2) * width for r in task_rows]
        ax_time.bar(bar_x, [float(r["round_time_s"]) for r in task_rows], width=width)
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
    """A per-round text table of the global model (a task column where the run has several
    tasks), then the per-chain block delay table (`delay_table`) where blocks.csv has rows."""
    rows = global_rounds(load_metrics(run_dir))
    tasks = any(r.get("task_chain") for r in rows)
    task_head = f"{'task':<10}  " if tasks else ""
    lines = [
        f"{'round':>5}  {task_head}{'accuracy':>8}  {'loss':>8}  {'devices':>7}  "
        f"{'round s':>8}  missing"
    ]
    for r in rows:
        task = f"{r.get('task_chain', ''):<10}  " if tasks else ""
        lines.append(
            f"{r['round']:>5}  {task}{float(r['accuracy']):8.4f}  {float(r['loss']):8.4f}  "
            f"{r['contributors']:>7}  {float(r['round_time_s']):8.2f}  {r['missing'] or '-'}"
        )
    delays = delay_table(run_dir)
    return "\n".join(lines) + (f"\n\n{delays}" if delays else "")


def load_blocks(run_dir: Path) -> list[dict[str, str]]:
    """The rows of blocks.csv (none where the run has no such file)."""
    path = run_dir / BLOCKS_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def delay_table(run_dir: Path) -> str:
    """Per chain, from blocks.csv: its blocks, the nodes that stored them, the storage time t,
    and each block's delay from its proposal to its storage at the last node keeping the
    chain (the paper's unified delay) in units of t: mean, median and max (in ms where t is
    not emulated). Empty where blocks.csv has no rows."""
    blocks: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in load_blocks(run_dir):
        blocks[(r["chain"], r["height"])].append(r)
    if not blocks:
        return ""
    per_chain: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # delay, t, nodes
    for (chain, _), rows in blocks.items():
        proposed = min(float(r["proposed_ms"]) for r in rows)
        stored = max(float(r["stored_ms"]) for r in rows)
        per_chain[chain].append((stored - proposed, max(float(r["t_ms"]) for r in rows), len(rows)))
    lines = [
        "block delay, proposed -> stored at the last node (blocks.csv):",
        f"{'chain':<16}  {'blocks':>6}  {'nodes':>5}  {'t ms':>6}  {'mean':>7}  {'median':>7}  "
        f"{'max':>7}  unit",
    ]
    for chain, found in sorted(per_chain.items()):
        t = max(x[1] for x in found)
        scale, unit = (t, "t") if t > 0 else (1.0, "ms (t not emulated)")
        delays = [x[0] / scale for x in found]
        lines.append(
            f"{chain:<16}  {len(found):>6}  {max(x[2] for x in found):>5}  {t:>6g}  "
            f"{statistics.fmean(delays):>7.2f}  {statistics.median(delays):>7.2f}  "
            f"{max(delays):>7.2f}  {unit}"
        )
    return "\n".join(lines)
