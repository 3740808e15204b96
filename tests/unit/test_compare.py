"""`bcfl compare`: several runs' curves on one figure, a summary row per run, bad input."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.compare import (
    compare,
    compare_accuracy_figure,
    compare_round_time_figure,
    labels_for,
)
from orchestrator.tables import TableError, load_run
from tests.unit.test_tables import make_run

SFL_ACCURACY = (0.5, 0.7, 0.85, 0.9)


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path / "vanilla-run")
    b = make_run(tmp_path / "sfl-run", scheme="sfl", seed=11, accuracy=SFL_ACCURACY, events=[])
    return a, b


def test_compare_two_runs_gives_both_curves_and_a_two_row_summary(tmp_path: Path) -> None:
    a, b = _two_runs(tmp_path)
    out = tmp_path / "cmp"

    result = compare([a, b], out, ["vanilla", "sfl"])

    names = sorted(p.name for p in result.paths)
    assert names == [
        "compare.html",
        "compare_accuracy.png",
        "compare_round_time.png",
        "compare_summary.csv",
    ]
    with (out / "compare_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["scheme"], r["seed"], r["rounds"]) for r in rows] == [
        ("vanilla", "vanilla", "7", "3"),
        ("sfl", "sfl", "11", "4"),
    ]
    assert [float(r["final_accuracy"]) for r in rows] == [0.80, 0.9]
    assert [float(r["mean_round_time_s"]) for r in rows] == [3.0, 3.5]
    assert [int(r["blocks"]) for r in rows] == [3, 3] and rows[0]["drops"] == "3"
    page = (out / "compare.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
    assert '<td class="s">vanilla</td>' in page and '<td class="s">sfl</td>' in page

    runs = {"vanilla": load_run(a), "sfl": load_run(b)}
    fig = compare_accuracy_figure(runs)
    curves = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "compare-accuracy"]
    assert [ln.get_label() for ln in curves] == ["vanilla", "sfl"]
    assert np.asarray(curves[1].get_ydata()).tolist() == list(SFL_ACCURACY)
    plt.close(fig)
    fig = compare_round_time_figure(runs)
    assert len([ln for ln in fig.axes[0].get_lines() if ln.get_gid()]) == 2
    plt.close(fig)


def test_runs_of_different_schemes_and_tasks(tmp_path: Path) -> None:
    a = make_run(tmp_path / "one")
    b = make_run(tmp_path / "two", scheme="two-layer", tasks=("gmuc-t0", "gmuc-t1"))

    result = compare([a, b], tmp_path / "cmp")

    assert result.summary["tasks"].tolist() == [1, 2]
    fig = compare_accuracy_figure({"one": load_run(a), "two": load_run(b)})
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["one", "two / gmuc-t0", "two / gmuc-t1"]
    plt.close(fig)


def test_labels() -> None:
    assert labels_for([Path("a/x"), Path("b/x"), Path("c/x")], None) == ["x", "x#2", "x#3"]
    assert labels_for([Path("a"), Path("b")], ["A", "B"]) == ["A", "B"]
    with pytest.raises(TableError, match="--label: 1 labels for 2 runs"):
        labels_for([Path("a"), Path("b")], ["A"])


def test_compare_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    a, b = _two_runs(tmp_path)

    result = compare([a, b], tmp_path / "cmp", parquet=True)

    assert {p.name for p in result.paths} >= {
        "compare_summary.parquet",
        "compare_rounds.parquet",
    }
    rounds = pd.read_parquet(tmp_path / "cmp" / "compare_rounds.parquet")
    assert rounds.groupby("label")["round"].max().to_dict() == {"sfl-run": 4, "vanilla-run": 3}


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bcfl: error:")
    return lines[0]


def test_bcfl_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_runs(tmp_path)
    out = tmp_path / "cmp"

    code = main(["compare", str(a), str(b), "--out", str(out), "--label", "A", "--label", "B"])

    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "compare.html") in printed
    assert re.search(r"^\s*A\s+vanilla\s+local\s+7\b", printed, re.M)
    assert (out / "compare_accuracy.png").stat().st_size > 5_000


@pytest.mark.parametrize("bad", ["not_a_run", "truncated", "labels"])
def test_bcfl_compare_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    a, b = _two_runs(tmp_path)
    args = ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]
    if bad == "not_a_run":
        args[2] = str(tmp_path)
        expect = f"{tmp_path / 'metrics.csv'}: missing"
    elif bad == "truncated":
        text = (b / "metrics.csv").read_text()
        (b / "metrics.csv").write_text(text[:-5])
        expect = f"{b / 'metrics.csv'}: truncated"
    else:
        args += ["--label", "only-one"]
        expect = "--label"

    code = main(args)

    assert code == 2
    assert expect in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "cmp").exists(), "nothing written on bad input"
