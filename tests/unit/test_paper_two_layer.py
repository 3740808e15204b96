"""The Fig. 5 reproduction's pure parts: the scenario files and their variants, the claims,
the unified delay (orchestrator/paper_two_layer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import paper_runs
from orchestrator import paper_two_layer as p2
from orchestrator.paper_two_layer import (
    FIG5A,
    FIG5B,
    QUICK,
    SCENARIO_DIR,
    MeasuredDelay,
    claims_5a,
    claims_5b,
    final_accuracy,
    load_base,
    unified_delay,
    variant_scenario,
)
from orchestrator.runner import RunResult
from orchestrator.scenario import parse_scenario


@pytest.mark.parametrize("fig", ["fig5a", "fig5b"])
def test_every_variant_of_each_figure_is_a_valid_scenario(fig: str) -> None:
    base = load_base(SCENARIO_DIR / f"{fig}.yaml")
    assert Path(base["dataset"]["root"]).is_absolute()  # resolved against the repository
    variants = FIG5A if fig == "fig5a" else FIG5B
    for v in variants:
        for rounds, devices in ((None, None), (QUICK.rounds_5a, 3), (2, 50)):
            data = variant_scenario(
                base, v, name=f"{fig}-{v.key}", rounds=rounds, devices_per_mec=devices
            )
            s = parse_scenario(data, data["name"])
            assert s.scheme.name == v.scheme["name"]
            assert s.ledger.consensus == v.consensus
            assert all(f.at_round <= s.training.rounds for f in s.faults)


def test_variants_change_only_scheme_consensus_faults_and_sizes() -> None:
    base = load_base(SCENARIO_DIR / "fig5a.yaml")
    by_key = {v.key: v for v in FIG5A}

    ideal = variant_scenario(base, by_key["vanilla-ideal"], name="x")
    faulty = variant_scenario(base, by_key["vanilla-faulty"], name="y")
    two_layer = variant_scenario(base, by_key["two-layer"], name="z", rounds=4, devices_per_mec=3)

    assert ideal["faults"] == [] and faulty["faults"] == base["faults"]
    assert ideal["scheme"] == {"name": "vanilla"}
    assert two_layer["scheme"] == base["scheme"]  # the file's two-layer parameters kept
    assert [f["at_round"] for f in two_layer["faults"]] == [1, 1, 4]  # round 8's cut
    assert two_layer["topology"]["devices_per_mec"] == 3
    for key in ("dataset", "model", "partition", "aggregator", "seed"):
        assert ideal[key] == faulty[key] == two_layer[key] == base[key]
    assert base["training"]["rounds"] == 20  # the base itself is not changed


def test_final_accuracy_is_the_mean_of_the_last_three_rounds() -> None:
    assert final_accuracy({1: 0.1, 2: 0.5, 3: 0.6, 4: 0.7}) == pytest.approx(0.6)
    assert final_accuracy({1: 0.4}) == pytest.approx(0.4)
    assert final_accuracy({}) is None


def test_claims_5a_pass_and_fail() -> None:
    good = {
        "two-layer": 0.95,
        "vanilla-ideal": 0.96,
        "blockfl": 0.90,
        "flchain": 0.2,
        "vanilla-faulty": 0.1,
    }
    assert [c.passed for c in claims_5a(good)] == [True, True, True, True]
    bad = {**good, "two-layer": 0.91, "blockfl": 0.92, "flchain": None}
    assert [c.passed for c in claims_5a(bad)] == [False, False, False, True]
    assert "n/a" in claims_5a(bad)[2].ours  # a failed run is shown, never passes


def test_claims_5b_pass_and_fail() -> None:
    paper_like = {
        "two-layer": {5: 10.0, 50: 12.0},
        "blockfl": {5: 6.0, 50: 40.0},
        "flchain": {5: 20.0, 50: 30.0},
    }
    assert [c.passed for c in claims_5b(paper_like)] == [True, True, True, True]
    flat_blockfl = {**paper_like, "blockfl": {5: 30.0, 50: 31.0}, "two-layer": {5: 10.0, 50: 16.0}}
    assert [c.passed for c in claims_5b(flat_blockfl)] == [False, False, False, True]
    assert [c.passed for c in claims_5b({})] == [False, False, False, False]


def test_unified_delay_sums_the_mean_of_each_chain_kind() -> None:
    def d(chain: str, t: float) -> MeasuredDelay:
        return MeasuredDelay(chain, 1, 4, t * 10, t, "header")

    total, kinds = unified_delay(
        [d("lmuc-mec0", 2.0), d("lmuc-mec1", 4.0), d("gmuc-t0", 5.0), d("gmuc-t0", 7.0)]
    )

    assert kinds == {"gmuc": 6.0, "lmuc": 3.0}
    assert total == 9.0
    assert unified_delay([]) == (None, {})


def test_ctrl_c_stops_the_sweep_after_the_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped by Ctrl-C (the runner stops its nodes and returns `interrupted`) ends
    the sweep: before, the next run started and a second Ctrl-C was needed per run."""
    started: list[str] = []

    class InterruptedRun:
        def __init__(self, scenario: Any, out_dir: Path, **_: Any) -> None:
            self.out_dir = out_dir
            started.append(scenario.name)

        def execute(self) -> RunResult:
            return RunResult(self.out_dir, 1, 0.5, 1.0, interrupted=True)

    monkeypatch.setattr(paper_runs, "Run", InterruptedRun)

    code = p2.main(["--quick", "--out", str(tmp_path / "out")])

    assert code == 130
    assert started == ["fig5a-two-layer"]
    assert (tmp_path / "out" / "fig5a_summary.csv").read_text().count("interrupted") == 1
    assert (tmp_path / "out" / "claims.md").is_file()
