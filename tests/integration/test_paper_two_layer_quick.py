"""The Fig. 5 reproduction's `--quick` mode end to end: 11 real runs (local backend, every node
its own process) on real MNIST; the CSVs, figures and claims come out, every run completes,
and every block delay is measured (a proof-of-work block's from its miner's record, not
from its header's timestamp, which runs ahead of the clock)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from orchestrator.paper_two_layer import FIG5A, FIG5B, QUICK, REPO, main

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


def test_quick_mode_writes_both_figures_and_checks_the_claims(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fig5"

    code = main(["--quick", "--out", str(out)])

    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]  # every run completed all its rounds
    for name in ("fig5a.png", "fig5b.png", "claims.md"):
        assert (out / name).stat().st_size > 0
    acc = _rows(out / "fig5a.csv")
    assert {(r["variant"], int(r["round"])) for r in acc} == {
        (v.key, r) for v in FIG5A for r in range(1, (QUICK.rounds_5a or 0) + 1)
    }
    summary = {r["variant"]: r for r in _rows(out / "fig5a_summary.csv")}
    assert all(summary[v.key]["ok"] == "True" for v in FIG5A)
    delays = _rows(out / "fig5b.csv")
    assert {(r["scheme"], int(r["devices_per_mec"])) for r in delays} == {
        (v.key, n) for v in FIG5B for n in QUICK.sizes_5b
    }
    assert all(float(r["unified_delay_t"]) > 0 for r in delays)
    blocks = _rows(out / "fig5b_blocks.csv")
    assert all(float(b["delay_t"]) > 0 for b in blocks)  # a PoW header's time is not used
    assert {b["proposal"] for b in blocks if b["scheme"] == "blockfl"} == {"record"}
    kinds = {b["chain"].split("-")[0] for b in blocks if b["scheme"] == "two-layer"}
    assert kinds == {"lmuc", "gmuc"}
    claims = [line for line in printed.out.splitlines() if line.startswith("| 5")]
    assert len(claims) == 8
    assert all(line.endswith(("| PASS |", "| FAIL |")) for line in claims)
    assert "[5b 6/6]" in printed.err  # progress, one line per run and per round
