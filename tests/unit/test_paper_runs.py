"""Sweeps that can be continued (`orchestrator.paper_runs`): a run records its outcome
beside its files, a sweep with --resume reads the runs recorded there instead of running
them again, runs again from the start one that was cut off, and refuses one recorded with
another scenario. `Run` is replaced by a stand-in that writes a file and says how the run
went (the runs themselves are the integration tests' business)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import paper_runs
from orchestrator import paper_two_layer as p2
from orchestrator.paper_runs import OUTCOME_JSON, ResumeError, check_out, execute, load_base
from orchestrator.runner import RunResult


class StandInRuns:
    """`Run`'s stand-in: records the names it started; interrupts the `interrupt_at`-th."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.started: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, scenario: Any, out_dir: Path, **_: Any) -> Any:
        runs = self
        runs.started.append(scenario.name)

        class StandIn:
            def execute(self) -> RunResult:
                out_dir.mkdir(parents=True)
                (out_dir / "metrics.csv").write_text("run,round\n")
                if len(runs.started) == runs.interrupt_at:
                    return RunResult(out_dir, 0, None, 1.0, interrupted=True)
                return RunResult(out_dir, scenario.training.rounds, 0.9, 1.0)

        return StandIn()


def scenario(rounds: int = 2) -> dict[str, Any]:
    return p2.variant_scenario(
        load_base(p2.SCENARIO_DIR / "fig5a.yaml"), p2.FIG5A[0], name="one", rounds=rounds
    )


def test_a_recorded_run_is_read_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = StandInRuns()
    monkeypatch.setattr(paper_runs, "Run", runs)
    first = execute(scenario(), tmp_path, print)
    assert (first.ok, first.rounds, first.problem) == (True, 2, None)
    assert (tmp_path / "one" / OUTCOME_JSON).is_file()

    again = execute(scenario(), tmp_path, print)

    assert runs.started == ["one"]
    assert again == first


def test_a_run_cut_off_runs_again_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = StandInRuns(interrupt_at=1)
    monkeypatch.setattr(paper_runs, "Run", runs)
    cut = execute(scenario(), tmp_path, print)
    assert cut.interrupted and not (tmp_path / "one" / OUTCOME_JSON).exists()
    (tmp_path / "one" / "left-over").write_text("from the run cut off")

    done = execute(scenario(), tmp_path, print)

    assert runs.started == ["one", "one"]
    assert done.ok and not (tmp_path / "one" / "left-over").exists()


def test_a_run_recorded_with_another_scenario_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paper_runs, "Run", StandInRuns())
    execute(scenario(rounds=2), tmp_path, print)

    with pytest.raises(ResumeError, match="another scenario"):
        execute(scenario(rounds=3), tmp_path, print)


def test_out_must_be_empty_unless_resuming(tmp_path: Path) -> None:
    assert check_out(tmp_path / "new", resume=False) is None
    (tmp_path / "x").write_text("keep")
    why = check_out(tmp_path, resume=False)
    assert why is not None and "not empty" in why and "--resume" in why
    assert check_out(tmp_path, resume=True) is None
    why = check_out(tmp_path / "x", resume=True)
    assert why is not None and "not a directory" in why


def test_a_sweep_cut_off_goes_on_with_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first = StandInRuns(interrupt_at=2)
    monkeypatch.setattr(paper_runs, "Run", first)
    assert p2.main(["--quick", "--figures", "5a", "--out", str(out)]) == 130
    assert len(first.started) == 2
    assert p2.main(["--quick", "--figures", "5a", "--out", str(out)]) == 2  # not empty
    assert "--resume" in capsys.readouterr().err

    second = StandInRuns()
    monkeypatch.setattr(paper_runs, "Run", second)
    p2.main(["--quick", "--figures", "5a", "--out", str(out), "--resume"])

    assert second.started[0] == first.started[1]  # the one cut off, again
    assert first.started[0] not in second.started  # the one done, read
    assert len(second.started) == len(p2.FIG5A) - 1
