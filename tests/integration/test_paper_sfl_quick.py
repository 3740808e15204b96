"""The SFL reproduction's `--quick` mode end to end: 16 real runs (the baseline's threshold
runs, sfl and its FedAvg baseline (threshold 0) for Fig. 4, sfl at two deltas and the non-DP
baseline for Fig. 5;
local backend, every node its own process) on scikit-learn's digits with the MLP; every run
completes its rounds, the CSVs and figures come out with measured rows, and no malicious or
unreliable device whose updates stayed below the threshold is paid."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from orchestrator.paper_sfl import FEDAVG, MALICIOUS, QUICK, SFL, UNRELIABLE, main

pytestmark = [pytest.mark.integration]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_mode_writes_both_figures_and_pays_no_faulty_device_below_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sfl"

    code = main(["--quick", "--out", str(out)])

    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]  # every run completed its rounds
    runs = _rows(out / "runs.csv")
    assert len(runs) == 16
    assert all(r["ok"] == "True" and 0.0 < float(r["final_accuracy"]) <= 1.0 for r in runs)
    threshold = _rows(out / "threshold.csv")
    aa = float(next(r["final_accuracy"] for r in threshold if r["row"] == "AA"))
    assert len([r for r in threshold if r["row"] == "run"]) == QUICK.runs
    assert {float(r["threshold"]) for r in runs if r["scheme"] == SFL} == {round(aa, 4)}
    assert {(r["scheme"], float(r["lambda"])) for r in _rows(out / "fig4a.csv")} == {
        (s, lam) for s in (SFL, FEDAVG) for lam in QUICK.lambdas
    }
    fig5 = _rows(out / "fig5a.csv")
    assert {r["delta"] for r in fig5} == {*QUICK.deltas, "non-DP"}
    for r in fig5:
        assert float(r["MA"]) <= float(r["AA"]) <= float(r["HA"]) and int(r["runs"]) == 2
    for name in ("fig4a.png", "fig5a.png"):
        assert (out / name).stat().st_size > 0
    devices = _rows(out / "rewards_devices.csv")
    assert len(devices) == 8 * 10  # 8 sfl runs of 10 devices
    faulty_below = [
        d
        for d in devices
        if d["class"] in (MALICIOUS, UNRELIABLE) and int(d["qualified_rounds"]) == 0
    ]
    assert faulty_below and all(int(d["paid"]) == 0 for d in faulty_below)
    classes = {r["class"] for r in _rows(out / "rewards.csv")}
    assert classes == {"honest", MALICIOUS, UNRELIABLE}
    claims = [
        line
        for line in printed.out.splitlines()
        if line.startswith("| ") and not line.startswith("| fig |")
    ]
    assert len(claims) == len(_rows(out / "claims.csv")) >= 9
    assert all(("| PASS |" in line) or ("| FAIL |" in line) for line in claims)
    assert "[16/16]" in printed.err  # progress, one line per run and per round
