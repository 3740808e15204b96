"""The BEES reproduction's pure parts (orchestrator/paper_bees.py): the scenario variants,
the accuracy / latency / energy aggregation from metrics.csv and blocks.csv rows, the claims
and the sweep's Ctrl-C handling."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import paper_bees as pb
from orchestrator import paper_runs
from orchestrator.paper_bees import (
    BEES,
    BEI,
    FULL,
    QUICK,
    SCENARIO,
    Claim,
    RunData,
    all_claims,
    block_latencies,
    claims_energy,
    claims_energy_growth,
    claims_fig3,
    claims_fig4,
    claims_fig5,
    cumulative,
    energy_by_block,
    populations_for,
    r_squared,
    report,
    run_data,
    run_scenario,
)
from orchestrator.runner import RunResult
from orchestrator.scenario import parse_scenario

# ---- scenarios ---------------------------------------------------------------------------


def test_the_base_file_is_the_papers_setup() -> None:
    base = pb.load_base(SCENARIO)
    s = parse_scenario(base, "bees.yaml")

    assert Path(base["dataset"]["root"]).is_absolute()  # resolved against the repository
    assert (s.scheme.name, s.scheme.params["top_m"]) == ("bees", 10)
    assert s.training.rounds == 50
    params = s.topology.to_params()
    assert (params.bs_count, params.mecs_per_bs) == (20, 1)  # picocells: one ES per BS
    assert base["topology"]["devices_per_mec"] == {"uniform": [3, 7]}
    assert params.d2d is None  # BEES has no D2D links


@pytest.mark.parametrize("mode", [FULL, QUICK], ids=["full", "quick"])
def test_every_run_of_each_mode_is_a_valid_scenario(mode: pb.Mode) -> None:
    base = pb.load_base(SCENARIO)
    for ues, pop in mode.populations.items():
        for scheme, top_m in ((BEES, 10), (BEI, 1)):
            data = run_scenario(base, scheme, pop, name=f"{scheme}-{ues}", blocks=mode.blocks)
            s = parse_scenario(data, data["name"])

            assert s.scheme.name == scheme and s.scheme.params["top_m"] == top_m
            assert s.scheme.params["offload_scale"] == base["scheme"]["offload_scale"]
            counts = s.topology.to_params().device_counts(s.seed)
            assert len(counts) == pop.edge_servers
            assert all(pop.per_es[0] <= n <= pop.per_es[1] for n in counts)
            assert s.training.rounds == (mode.blocks or 50)


def test_full_populations_average_the_papers_ue_counts() -> None:
    base = pb.load_base(SCENARIO)
    realised = {}
    for ues, pop in FULL.populations.items():
        mean = pop.edge_servers * (pop.per_es[0] + pop.per_es[1]) / 2
        assert mean == ues
        s = parse_scenario(run_scenario(base, BEES, pop, name="x"), "x")
        realised[ues] = sum(s.topology.to_params().device_counts(s.seed))

    assert realised == {100: 102, 50: 50, 150: 152, 200: 202}  # the file's seed's draws


def test_bad_blocks_and_seed_are_refused(tmp_path: Path) -> None:
    assert pb.main(["--quick", "--blocks", "0", "--out", str(tmp_path / "a")]) == 2
    assert pb.main(["--quick", "--seed", "-1", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_variant_changes_only_the_scheme_the_shape_blocks_seed_and_cpu() -> None:
    base = pb.load_base(SCENARIO)

    data = run_scenario(
        base, BEI, QUICK.populations[200], name="x", blocks=3, seed=11, ue_cpu_hz=2e6
    )

    assert data["scheme"] == {
        **base["scheme"],
        "name": "b-ei",
        "top_m": 1,
        "model": {"local_iterations": 1, "ue_cpu_hz": 2e6},
    }
    assert data["topology"]["devices_per_mec"] == {"uniform": [4, 5]}
    assert (data["training"]["rounds"], data["seed"]) == (3, 11)
    for key in ("dataset", "model", "partition", "ledger"):
        assert data[key] == base[key]
    assert base["scheme"]["top_m"] == 10 and base["seed"] == 4  # the base is not changed


def test_populations_needed_by_each_figure() -> None:
    assert populations_for(["3"]) == [100]
    assert populations_for(["4"]) == [100, 50]
    assert populations_for(["8", "3"]) == [100, 200]
    assert populations_for(list(pb.FIGURES)) == [100, 50, 150, 200]


# ---- aggregation from rows ---------------------------------------------------------------


def _pub(block: int, accuracy: float, wall: float, took: float) -> dict[str, str]:
    return {
        "round": str(block),
        "node": "pub",
        "role": "publisher",
        "accuracy": str(accuracy),
        "wall_time": str(wall),
        "round_time_s": str(took),
    }


def _ue(block: int, node: str, decision: str, c: float, t: float, n: int = 600) -> dict[str, str]:
    return {
        "round": str(block),
        "node": node,
        "role": "device",
        "decision": decision,
        "samples": str(n),
        "energy_compute_j": str(c),
        "energy_transfer_j": str(t),
        "energy_total_j": str(c + t),
    }


def _stored(height: int, node: str, proposed_ms: float, stored_ms: float) -> dict[str, str]:
    return {
        "chain": "main",
        "height": str(height),
        "node": node,
        "proposed_ms": str(proposed_ms),
        "stored_ms": str(stored_ms),
    }


def test_block_latency_runs_from_the_round_start_to_the_last_keepers_store() -> None:
    metrics = [
        _pub(1, 0.5, wall=100.0, took=2.0),  # round 1 started at 98.0 s
        _pub(2, 0.6, wall=103.5, took=1.5),  # round 2 started at 102.0 s
        _ue(1, "dev0-0", "local", 0.1, 0.01),  # not the publisher: no start
    ]
    blocks = [
        _stored(1, "mec0", 99_000, 99_010),
        _stored(1, "mec1", 99_000, 99_250),
        _stored(1, "pub", 99_000, 99_400),
        _stored(2, "mec0", 103_000, 103_100),
        _stored(3, "mec0", 104_000, 104_100),  # no round record for 3: left out
    ]

    lat = block_latencies(metrics, blocks)

    assert sorted(lat) == [1, 2]
    assert lat[1].keepers == 3
    assert lat[1].end_to_end_s == pytest.approx(1.4)
    assert lat[1].to_proposal_s == pytest.approx(1.0)
    assert lat[1].publish_s == pytest.approx(0.4)
    assert lat[2].end_to_end_s == pytest.approx(1.1)
    assert cumulative({b: x.end_to_end_s for b, x in lat.items()}) == pytest.approx(
        {1: 1.4, 2: 2.5}
    )


def test_energy_sums_the_ues_of_each_block_and_counts_their_decisions() -> None:
    metrics = [
        _ue(1, "dev0-0", "local", 0.25, 0.01),
        _ue(1, "dev0-1", "offload", 0.0, 0.5),
        _ue(1, "dev1-0", "sit_out", 0.0, 0.0),
        _ue(2, "dev0-0", "local", 0.25, 0.02),
        _pub(1, 0.5, 1.0, 0.5),  # the publisher spends no UE energy
        {"round": "1", "node": "mec0", "role": "mec", "energy_total_j": "9"},
    ]

    energy = energy_by_block(metrics)

    assert energy[1].total_j == pytest.approx(0.76)
    assert energy[1].compute_j == pytest.approx(0.25)
    assert energy[1].transfer_j == pytest.approx(0.51)
    assert (energy[1].local, energy[1].offloaded, energy[1].sat_out) == (1, 1, 1)
    assert energy[2].total_j == pytest.approx(0.27)
    run = run_data(BEES, 100, metrics, [])
    assert run.cum_energy_j == pytest.approx({1: 0.76, 2: 1.03})
    assert run.offload_share == pytest.approx(0.25)
    assert run.realised_ues == 3
    assert run.accuracy == {1: 0.5}


def test_r_squared() -> None:
    assert r_squared({1: 2.0, 2: 4.0, 3: 6.0, 4: 8.0}) == pytest.approx(1.0)
    assert r_squared({1: 1.0, 2: 9.0, 3: 1.0, 4: 9.0}) == pytest.approx(0.2)
    assert r_squared({1: 1.0, 2: 2.0}) is None
    assert r_squared({1: 3.0, 2: 3.0, 3: 3.0}) == 1.0


def test_final_accuracy_is_the_mean_of_the_last_three_blocks() -> None:
    assert pb.final_accuracy({1: 0.1, 2: 0.5, 3: 0.6, 4: 0.7}) == pytest.approx(0.6)
    assert pb.final_accuracy({}) is None


# ---- claims ------------------------------------------------------------------------------


def _run(
    scheme: str,
    ues: int,
    accuracy: Sequence[float],
    latency_s: float,
    energy_j: float,
    decision: str = "local",
) -> RunData:
    """A run of len(accuracy) blocks: each block takes latency_s; each of 2 UEs spends
    energy_j / 2."""
    metrics: list[dict[str, str]] = []
    blocks: list[dict[str, str]] = []
    start = 1000.0
    for b, acc in enumerate(accuracy, 1):
        end = start + latency_s
        metrics.append(_pub(b, acc, wall=end + 0.2, took=latency_s + 0.2))
        blocks.append(_stored(b, "mec0", (end - 0.1) * 1000, end * 1000))
        for u in ("dev0-0", "dev0-1"):
            metrics.append(_ue(b, u, decision, energy_j / 2, 0.0))
        start = end + 1.0
    return run_data(scheme, ues, metrics, blocks)


def _paper_like() -> dict[tuple[str, int], RunData]:
    rise = [0.50 + 0.008 * b for b in range(50)]
    return {
        (BEES, 100): _run(BEES, 100, rise, 0.11, 120.0, "offload"),
        (BEI, 100): _run(BEI, 100, [a - 0.17 if a > 0.6 else a + 0.01 for a in rise], 0.2, 150),
        (BEES, 50): _run(BEES, 50, [a - 0.005 for a in rise], 0.11, 120.0),
        (BEI, 50): _run(BEI, 50, [a - 0.35 for a in rise], 0.2, 150.0),
        (BEES, 150): _run(BEES, 150, rise, 0.11, 150.0),
        (BEI, 150): _run(BEI, 150, rise, 0.2, 200.0),
        (BEES, 200): _run(BEES, 200, rise, 0.11, 180.0),
        (BEI, 200): _run(BEI, 200, rise, 0.2, 250.0),
    }


def test_paper_like_runs_pass_every_claim() -> None:
    runs = _paper_like()

    claims = all_claims(runs, pb.FIGURES)

    assert [c.figure for c in claims] == (
        ["3"] * 4 + ["4"] * 3 + ["5"] * 4 + ["6"] * 2 + ["7"] * 2 + ["8"] * 2 + ["6-8"]
    )
    assert [c for c in claims if not c.passed] == []
    assert all(c.why == "" for c in claims)  # a why only where ours and the paper differ


def test_claims_fail_with_a_why_where_ours_differ() -> None:
    runs = _paper_like()
    flat = [0.95] * 50
    runs[(BEES, 100)] = _run(BEES, 100, flat, 2.0, 12.0)  # slow, no offload, too accurate
    runs[(BEI, 100)] = _run(BEI, 100, [0.99] * 9 + [0.96] * 41, 1.0, 6.0)  # far ahead early
    runs[(BEI, 50)] = _run(BEI, 50, flat, 1.0, 6.0)

    c3, c4, c5 = claims_fig3(runs), claims_fig4(runs), claims_fig5(runs)
    c6 = claims_energy(runs, "6")

    assert [c.passed for c in c3] == [False, False, False, False]
    assert [c.passed for c in c4] == [False, False, False]
    assert [c.passed for c in c5] == [False, True, False, False]
    assert [c.passed for c in c6] == [False, False]
    failed = [c for c in (*c3, *c4, *c5, *c6) if not c.passed]
    assert all(c.why for c in failed)
    assert "0% offloaded" in c5[0].why and "no UE offloaded" in c6[0].why
    assert "ours higher" in c3[1].why


def test_missing_runs_show_n_a_and_never_pass() -> None:
    claims = all_claims({}, pb.FIGURES)

    assert claims and not any(c.passed for c in claims)
    assert all("n/a" in c.ours for c in claims)


def test_energy_growth_needs_all_three_populations() -> None:
    runs = _paper_like()
    assert claims_energy_growth(runs).passed
    del runs[(BEES, 150)]
    assert not claims_energy_growth(runs).passed
    assert all(c.figure != "6-8" for c in all_claims(runs, ["6", "7"]))


def test_report_writes_the_table(tmp_path: Path) -> None:
    claims = [
        Claim("3", "a", "89%", "95%", False, "ours higher"),
        Claim("5", "b", "x", "y", True),
    ]

    text = report(claims, tmp_path)

    assert text.splitlines()[2] == "| 3 | a | 89% | 95% | FAIL | ours higher |"
    assert text.splitlines()[3].endswith("| PASS |  |")
    assert (tmp_path / "claims.md").read_text() == text
    assert (tmp_path / "claims.csv").read_text().count("\n") == 3


# ---- the sweep ---------------------------------------------------------------------------


def test_ctrl_c_stops_the_sweep_after_the_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    class InterruptedRun:
        def __init__(self, scenario: Any, out_dir: Path, **_: Any) -> None:
            self.out_dir = out_dir
            started.append(scenario.name)

        def execute(self) -> RunResult:
            return RunResult(self.out_dir, 1, 0.5, 1.0, interrupted=True)

    monkeypatch.setattr(paper_runs, "Run", InterruptedRun)

    code = pb.main(["--quick", "--out", str(tmp_path / "out")])

    assert code == 130
    assert started == ["bees-100"]
    with (tmp_path / "out" / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["scheme"], r["ues"], r["ok"], r["problem"]) for r in rows] == [
        ("bees", "100", "False", "interrupted")
    ]
    assert (tmp_path / "out" / "claims.md").is_file()
    assert (tmp_path / "out" / "fig8.png").is_file()  # every figure, empty where not run


def test_a_non_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("keep")

    assert pb.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep"


def test_figure_csvs_hold_one_row_per_scheme_and_block(tmp_path: Path) -> None:
    runs = _paper_like()

    written = pb.write_figures(runs, ["7", "4", "5"], tmp_path)

    assert written == ["fig4.csv", "fig4.png", "fig5.csv", "fig5.png", "fig7.csv", "fig7.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
    with (tmp_path / "fig4.csv").open() as f:
        acc = list(csv.DictReader(f))
    assert {(r["scheme"], r["ues"]) for r in acc} == {
        ("bees", "100"),
        ("bees", "50"),
        ("b-ei", "100"),
        ("b-ei", "50"),
    }
    assert len(acc) == 4 * 50
    with (tmp_path / "fig5.csv").open() as f:
        lat = list(csv.DictReader(f))
    assert list(lat[0]) == list(pb.LATENCY_COLUMNS)
    assert (lat[0]["scheme"], lat[0]["block"], lat[0]["end_to_end_s"]) == ("bees", "1", "0.110")
    assert float(lat[49]["cumulative_s"]) == pytest.approx(5.5, abs=1e-3)
    with (tmp_path / "fig7.csv").open() as f:
        energy = [r for r in csv.DictReader(f) if r["scheme"] == "b-ei"]
    assert float(energy[-1]["cumulative_j"]) == pytest.approx(50 * 200.0)
    assert {(r["local"], r["offloaded"], r["sat_out"]) for r in energy} == {("2", "0", "0")}
    assert not (tmp_path / "fig3.csv").exists()
