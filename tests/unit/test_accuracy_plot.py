"""The accuracy figure: a y axis fitted to the data, and the fault events marked."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from orchestrator.collect import METRIC_COLUMNS
from orchestrator.report import accuracy_figure, accuracy_limits, plot_accuracy
from orchestrator.runner import EVENT_COLUMNS

ACCURACY = {1: 0.91, 2: 0.94, 3: 0.93, 4: 0.95, 5: 0.96}


def _run_dir(tmp_path: Path, events: list[dict[str, str]]) -> Path:
    rows = []
    for r, acc in ACCURACY.items():
        rows.append(
            {
                "run": "t-1",
                "scheme": "vanilla",
                "round": r,
                "node": "pub",
                "role": "publisher",
                "accuracy": acc,
                "round_time_s": 1.5,
            }
        )
        rows.append(
            {
                "run": "t-1",
                "scheme": "vanilla",
                "round": r,
                "node": "dev0-0",
                "role": "device",
                "accuracy": acc - 0.01,
                "round_time_s": "",
            }
        )
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    with (tmp_path / "events.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVENT_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(events)
    return tmp_path


def test_accuracy_axis_fits_the_data_within_0_and_1(tmp_path: Path) -> None:
    fig = accuracy_figure(_run_dir(tmp_path, []))

    ax_acc, ax_full = fig.axes[0], fig.axes[1]
    lo, hi = ax_acc.get_ylim()
    assert 0.8 < lo < min(ACCURACY.values()) - 0.01, (lo, hi)
    assert max(ACCURACY.values()) < hi <= 1.0
    assert ax_full.get_ylim() == (0.0, 1.0), "the narrow panel keeps the full range"
    plt.close(fig)


@pytest.mark.parametrize(
    ("values", "limits"),
    [([], (0.0, 1.0)), ([0.99, 1.0], (0.97, 1.0)), ([0.01, 0.5], (0.0, 0.5392))],
)
def test_accuracy_limits(values: list[float], limits: tuple[float, float]) -> None:
    assert accuracy_limits(values) == pytest.approx(limits)


def test_fault_events_are_vertical_lines_labelled_by_action_and_target(tmp_path: Path) -> None:
    events = [
        {"round": "2", "action": "malicious", "nodes": "dev0-0", "behaviour": "sign_flip"},
        {"round": "3", "action": "crash", "nodes": "dev0-0"},
        {"round": "3", "action": "link_down", "link": "dev1-1-bs0"},
        {"round": "5", "action": "restart", "nodes": "dev0-0"},
    ]
    run_dir = _run_dir(tmp_path, events)

    fig = accuracy_figure(run_dir)

    ax_acc, ax_time = fig.axes[0], fig.axes[2]
    lines = [ln.get_xdata()[0] for ln in ax_acc.get_lines() if ln.get_gid() == "fault-event"]
    assert lines == [1.5, 2.5, 4.5]
    assert len([ln for ln in ax_time.get_lines() if ln.get_gid() == "fault-event"]) == 3
    labels = [t.get_text() for t in ax_acc.texts if t.get_gid() == "fault-label"]
    assert labels == [
        "malicious dev0-0 sign_flip",
        "crash dev0-0\nlink_down dev1-1-bs0",
        "restart dev0-0",
    ]
    plt.close(fig)
    path = plot_accuracy(run_dir)
    assert path == run_dir / "accuracy.png" and path.stat().st_size > 10_000
