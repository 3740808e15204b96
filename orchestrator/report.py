"""Figures and a text summary from a run directory's `metrics.csv`, `events.csv` and
`blocks.csv`, read and aggregated with pandas by `orchestrator.tables`.

How it works: `accuracy_figure` draws the global model's accuracy per round (per task where
the run has several), the devices' mean, the round time and the fault events (vertical lines
between rounds, labelled); `summary_table` prints the rounds and `delay_table` the per-chain
block delay from `summaries.chain_summary`. Each takes the run directory, and optionally the
`RunTables` a caller loaded already (the HTML report reads the run once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.summaries import (
    by_task,
    chain_summary,
    device_mean_accuracy,
    event_marks,
    global_rounds,
)
from orchestrator.tables import RunTables, load_blocks, load_events, load_metrics

__all__ = [
    "accuracy_figure",
    "accuracy_limits",
    "delay_table",
    "plain_text",
    "plot_accuracy",
    "summary_table",
]


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Figures made inside take their text literally: no mathtext, so a node id or task name
    with ``$`` in it (the run directory is user input) cannot break the drawing."""
    with plt.rc_context({"text.parse_math": False}):
        yield


def accuracy_limits(values: list[float]) -> tuple[float, float]:
    """A y range that fits `values` (the accuracies of rounds >= 1): a little below their
    minimum to a little above their maximum, within [0, 1]."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = max(0.02, 0.08 * (hi - lo))
    return max(0.0, lo - pad), min(1.0, hi + pad)


def accuracy_figure(run_dir: Path, tables: RunTables | None = None) -> Figure:
    """The figure of accuracy.png: global test accuracy and mean device training accuracy
    on an axis fitted to the data (a narrow panel beside it shows the full 0-1 range),
    round time, and the fault schedule's events as labelled vertical lines. `tables`: the
    run's tables where the caller loaded them already (else read from `run_dir`)."""
    metrics = load_metrics(run_dir) if tables is None else tables.metrics
    events = load_events(run_dir) if tables is None else tables.events
    pub = global_rounds(metrics)
    tasks = by_task(pub)
    fig, (ax_acc, ax_full, ax_time) = plt.subplots(
        1, 3, figsize=(12, 4.8), gridspec_kw={"width_ratios": (3.2, 0.9, 2.6)}
    )
    plotted: list[float] = []
    for task, task_rows in tasks.items():
        rounds = task_rows["round"].astype(int).tolist()
        accuracy = task_rows["accuracy"].astype(float).tolist()
        label = f"global model, {task} (test)" if task else "global model (test)"
        ax_acc.plot(rounds, accuracy, "o-", label=label, clip_on=False)
        ax_full.plot(rounds, accuracy, "-", linewidth=1)
        plotted += [a for r, a in zip(rounds, accuracy, strict=True) if r >= 1]
    means = device_mean_accuracy(metrics)
    if len(means):
        xs = [int(x) for x in means.index]
        ys = means.astype(float).tolist()
        ax_acc.plot(xs, ys, "s--", label="devices, mean (local train)", clip_on=False)
        ax_full.plot(xs, ys, "--", linewidth=1)
        plotted += [m for x, m in zip(xs, ys, strict=True) if x >= 1]
    for ax in (ax_acc, ax_time):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(*accuracy_limits(plotted))
    ax_acc.grid(alpha=0.3)
    if ax_acc.get_legend_handles_labels()[0]:  # a run without rounds draws no curve
        ax_acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small")
    ax_full.set_ylim(0, 1)
    ax_full.set_title("0-1 range", fontsize="small")
    ax_full.set_xlabel("round")
    ax_full.grid(alpha=0.3)
    ax_full.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    width = 0.8 / max(len(tasks), 1)
    for i, task_rows in enumerate(tasks.values()):
        bar_x = task_rows["round"].astype(float) + (i - (len(tasks) - 1) / 2) * width
        heights = task_rows["round_time_s"].astype(float).fillna(0.0)
        ax_time.bar(bar_x.tolist(), heights.tolist(), width=width)
    ax_time.set_xlabel("round")
    ax_time.set_ylabel("round time (s)")
    ax_time.grid(alpha=0.3, axis="y")
    for x, label in event_marks(events):
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
    first = pub.iloc[0] if len(pub) else None
    title = f"{first['run']} ({first['scheme']})" if first is not None else Path(run_dir).name
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy(run_dir: Path, tables: RunTables | None = None) -> Path:
    """Write accuracy.png (see `accuracy_figure`)."""
    with plain_text():
        fig = accuracy_figure(run_dir, tables)
    path = run_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(run_dir: Path, tables: RunTables | None = None) -> str:
    """A per-round text table of the global model (a task column where the run has several
    tasks), then the per-chain block delay table (`delay_table`) where blocks.csv has rows."""
    rows = global_rounds(load_metrics(run_dir) if tables is None else tables.metrics)
    tasks = bool((rows["task_chain"] != "").any())
    task_head = f"{'task':<10}  " if tasks else ""
    lines = [
        f"{'round':>5}  {task_head}{'accuracy':>8}  {'loss':>8}  {'devices':>7}  "
        f"{'round s':>8}  missing"
    ]
    for r in rows.to_dict("records"):
        task = f"{r['task_chain']:<10}  " if tasks else ""
        lines.append(
            f"{r['round']:>5}  {task}{float(r['accuracy']):8.4f}  {float(r['loss']):8.4f}  "
            f"{_cell(r['contributors']):>7}  {float(r['round_time_s']):8.2f}  "
            f"{r['missing'] or '-'}"
        )
    delays = delay_table(run_dir, tables)
    return "\n".join(lines) + (f"\n\n{delays}" if delays else "")


def _cell(value: object) -> str:
    """A table cell: "" for a missing value."""
    return "" if value is None or pd.isna(value) else str(value)


def delay_table(run_dir: Path, tables: RunTables | None = None) -> str:
    """Per chain, from blocks.csv (`summaries.chain_summary`): its blocks, the nodes that stored
    them, the storage time t, and each block's delay from its proposal to its storage at the
    last node keeping the chain (the paper's unified delay) in units of t: mean, median and
    max (in ms where t is not emulated). Empty where blocks.csv has no rows."""
    summary = chain_summary(load_blocks(run_dir) if tables is None else tables.blocks)
    if summary.empty:
        return ""
    lines = [
        "block delay, proposed -> stored at the last node (blocks.csv):",
        f"{'chain':<16}  {'blocks':>6}  {'nodes':>5}  {'t ms':>6}  {'mean':>7}  {'median':>7}  "
        f"{'max':>7}  unit",
    ]
    for r in summary.to_dict("records"):
        t = float(r["t_ms"])
        scale, unit = (t, "t") if t > 0 else (1.0, "ms (t not emulated)")
        lines.append(
            f"{r['chain']:<16}  {r['blocks']:>6}  {r['nodes']:>5}  {t:>6g}  "
            f"{r['delay_mean_ms'] / scale:>7.2f}  {r['delay_median_ms'] / scale:>7.2f}  "
            f"{r['delay_max_ms'] / scale:>7.2f}  {unit}"
        )
    return "\n".join(lines)
