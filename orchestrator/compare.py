"""`bcfl compare RUN_DIR...`: several runs side by side (the papers' figures are comparisons).

How it works: each run directory is loaded with `orchestrator.tables.load_run` (a directory
without metrics.csv, or a bad table, is a one-line `TableError` naming the file) and named
by its label (``--label``, else the directory's name; a repeated name gets ``#2``, ``#3``:
our choice). `compare` draws every run's global accuracy per round on one figure
(``compare_accuracy.png``; one curve per task where a run has several) and its round time
per round on another (``compare_round_time.png``), summarises each run in one row
(`summaries.run_summary`: scheme, backend, seed, final accuracy, mean round time, blocks,
drops) into ``compare_summary.csv``, and writes ``compare.html`` (the figures embedded, the
table escaped). Runs of different schemes, tasks or lengths work: each curve is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.html_report import figure_img, html_table, page
from orchestrator.report import plain_text
from orchestrator.summaries import by_task, global_rounds, run_summary
from orchestrator.tables import RunTables, TableError, load_run, require_pyarrow, write_parquet

__all__ = [
    "DEFAULT_OUT",
    "CompareResult",
    "compare",
    "compare_accuracy_figure",
    "compare_round_time_figure",
    "labels_for",
    "rounds_table",
]

DEFAULT_OUT = Path("compare")  # our choice: ./compare, created where missing
SUMMARY_CSV = "compare_summary.csv"


@dataclass
class CompareResult:
    """What `compare` wrote, and the summary table it wrote."""

    out_dir: Path
    summary: pd.DataFrame
    paths: list[Path] = field(default_factory=list)


def labels_for(run_dirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """One label per run: `labels` (as many as runs, else `TableError`) or the directories'
    names; a repeated label gets ``#2``, ``#3``... (our choice)."""
    if labels:
        if len(labels) != len(run_dirs):
            raise TableError(
                f"--label: {len(labels)} labels for {len(run_dirs)} runs; allowed: one per run"
            )
        names = list(labels)
    else:
        names = [Path(d).resolve().name or str(d) for d in run_dirs]
    out: list[str] = []
    for name in names:
        label, n = name, 1
        while label in out:
            n += 1
            label = f"{name}#{n}"
        out.append(label)
    return out


def rounds_table(runs: dict[str, RunTables]) -> pd.DataFrame:
    """Every run's global rounds (`summaries.global_rounds`) in one frame with a ``label``
    column, in run order."""
    columns = ["label", "scheme", "task_chain", "round", "accuracy", "loss", "round_time_s"]
    parts = [global_rounds(t.metrics).assign(label=label)[columns] for label, t in runs.items()]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _curves(runs: dict[str, RunTables]) -> list[tuple[str, pd.DataFrame]]:
    """(curve label, rounds) per run, one per task where a run has several."""
    out = []
    for label, t in runs.items():
        tasks = by_task(global_rounds(t.metrics))
        for task, rows in tasks.items():
            out.append((f"{label} / {task}" if task and len(tasks) > 1 else label, rows))
    return out


def compare_accuracy_figure(runs: dict[str, RunTables]) -> Figure:
    """The global model's test accuracy per round of every run (and task) on one axis."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, rows in _curves(runs):
        ax.plot(
            rows["round"].astype(int),
            rows["accuracy"].astype(float),
            "o-",
            label=label,
            gid="compare-accuracy",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (global model, test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("accuracy per round")
    fig.tight_layout()
    return fig


def compare_round_time_figure(runs: dict[str, RunTables]) -> Figure:
    """Every run's (and task's) round time per round, on one axis."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, rows in _curves(runs):
        times = rows["round_time_s"].astype(float)
        ax.plot(rows["round"].astype(int), times, "s-", label=label, gid="compare-round-time")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("round time (s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("round time per round")
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def compare(
    run_dirs: Sequence[Path],
    out_dir: Path = DEFAULT_OUT,
    labels: Sequence[str] | None = None,
    parquet: bool = False,
) -> CompareResult:
    """Compare `run_dirs` (see the module docstring) into `out_dir` (created; files of the
    same names in it are replaced). `parquet`: also compare_summary.parquet and
    compare_rounds.parquet (pyarrow needed: else `TableError` naming the extra). Bad input
    (no runs, a directory that is not a run, a bad table): `TableError`."""
    if not run_dirs:
        raise TableError("run_dir: none given; allowed: one or more run directories")
    if parquet:
        require_pyarrow()
    names = labels_for(run_dirs, labels)
    runs = {label: load_run(Path(d)) for label, d in zip(names, run_dirs, strict=True)}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TableError(f"--out: {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = pd.DataFrame([run_summary(t, label) for label, t in runs.items()])
    summary = summary.astype({"seed": "Int64"})
    result = CompareResult(out_dir, summary)
    summary_path = out_dir / SUMMARY_CSV
    summary.to_csv(summary_path, index=False)
    with plain_text():
        figures = [
            ("compare_accuracy.png", "accuracy per round", compare_accuracy_figure(runs)),
            ("compare_round_time.png", "round time per round", compare_round_time_figure(runs)),
        ]
        images = []
        for name, alt, fig in figures:
            result.paths.append(_save(fig, out_dir / name))
            images.append(figure_img(fig, alt, name.removesuffix(".png")))
    result.paths.append(summary_path)
    shown = summary.drop(columns="run_dir")
    sections = [
        ("summary", "Summary", html_table(shown, "compare-summary")),
        ("accuracy", "Accuracy", images[0]),
        ("round-time", "Round time", images[1]),
        ("runs", "Runs", html_table(summary[["label", "run_dir"]], "compare-runs")),
    ]
    html_path = out_dir / "compare.html"
    html_path.write_text(page(f"bcfl compare: {', '.join(names)}", sections), encoding="utf-8")
    result.paths.insert(0, html_path)
    if parquet:
        frames = {"summary": summary, "rounds": rounds_table(runs)}
        result.paths += write_parquet(frames, out_dir, prefix="compare_")
    return result
