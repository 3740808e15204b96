"""The BEES reproduction's `--quick` mode end to end: 8 real runs (bees and b-ei at four
populations, local backend, every node its own process) on real MNIST; every run completes
its blocks, and the CSVs, figures and claims of Figs. 3-8 come out with measured rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from orchestrator.paper_bees import BEES, BEI, FIGURES, QUICK, REPO, main

MNIST = REPO.parent / "shared" / "datasets" / "mnist"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (MNIST / "train-labels-idx1-ubyte.gz").is_file(), reason=f"real MNIST not at {MNIST}"
    ),
]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_mode_writes_every_figure_and_checks_the_claims(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bees"
    blocks = list(range(1, (QUICK.blocks or 0) + 1))

    code = main(["--quick", "--out", str(out)])

    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]  # every run completed all its blocks
    runs = _rows(out / "runs.csv")
    assert {(r["scheme"], int(r["ues"])) for r in runs} == {
        (s, n) for s in (BEES, BEI) for n in QUICK.populations
    }
    for r in runs:
        pop = QUICK.populations[int(r["ues"])]
        assert r["ok"] == "True" and int(r["blocks"]) == QUICK.blocks
        lo, hi = pop.per_es
        assert lo * pop.edge_servers <= int(r["realised_ues"]) <= hi * pop.edge_servers
        assert 0.5 < float(r["accuracy_last3"]) <= 1.0  # MNIST learns in a few blocks
    for fig in FIGURES:
        assert (out / f"fig{fig}.png").stat().st_size > 0
    acc = _rows(out / "fig3.csv")
    assert {(r["scheme"], int(r["block"])) for r in acc} == {
        (s, b) for s in (BEES, BEI) for b in blocks
    }
    assert {(r["scheme"], r["ues"]) for r in _rows(out / "fig4.csv")} == {
        (s, n) for s in (BEES, BEI) for n in ("100", "50")
    }
    latency = _rows(out / "fig5.csv")
    assert {(r["scheme"], int(r["block"])) for r in latency} == {
        (s, b) for s in (BEES, BEI) for b in blocks
    }
    for r in latency:  # every ES and the publisher stored every block, after its proposal
        assert int(r["keepers"]) == QUICK.populations[100].edge_servers + 1
        assert 0 < float(r["to_proposal_s"]) < float(r["end_to_end_s"])
    for fig, ues in (("6", 100), ("7", 150), ("8", 200)):
        energy = _rows(out / f"fig{fig}.csv")
        assert {(r["scheme"], int(r["block"])) for r in energy} == {
            (s, b) for s in (BEES, BEI) for b in blocks
        }
        for r in energy:
            assert int(r["ues"]) == ues and float(r["energy_j"]) > 0
            assert int(r["local"]) + int(r["offloaded"]) + int(r["sat_out"]) == int(
                r["realised_ues"]
            )
        for s in (BEES, BEI):
            cum = [float(r["cumulative_j"]) for r in energy if r["scheme"] == s]
            assert cum == sorted(cum)
    table = printed.out.splitlines()
    claims = [line for line in table if line.startswith("| ") and not line.startswith("| fig |")]
    assert len(claims) == len(_rows(out / "claims.csv")) == 18
    assert all(("| PASS |" in line) or ("| FAIL |" in line) for line in claims)
    assert "[8/8]" in printed.err  # progress, one line per run and per round
