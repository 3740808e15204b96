"""Unit tests for the `bcfl` command line (in-process, plus one console-script run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


def _bad_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntraining:\n  rounds: 0\n")
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bcfl: error:")
    return lines[0]


def test_validate_quickstart_prints_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(QUICKSTART)])

    out = capsys.readouterr().out
    assert code == 0
    assert f"{QUICKSTART}: ok" in out
    assert "13 node processes" in out


def test_validate_bad_scenario_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["validate", str(_bad_scenario(tmp_path))])

    line = _one_error_line(capsys.readouterr().err)
    assert code == EXIT_USAGE == 2
    assert "training.rounds: 0 is invalid" in line


def test_run_with_a_bad_scenario_fails_before_creating_the_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"

    code = main(["run", str(_bad_scenario(tmp_path)), "--out", str(out_dir), "--quiet"])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "training.rounds" in line
    assert "bad.yaml" in line
    assert not out_dir.exists()


def test_run_with_a_scenario_the_topology_builder_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "rates.yaml"
    scenario.write_text("topology:\n  cellular:\n    min_rate_mbit: 10\n    max_rate_mbit: 1\n")
    out_dir = tmp_path / "run"

    code = main(["run", str(scenario), "--out", str(out_dir), "--quiet"])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "topology.cellular.max_rate_mbit" in line
    assert not out_dir.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_run_with_an_out_of_range_seed(
    seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"

    code = main(["run", str(QUICKSTART), "--seed", seed, "--out", str(out_dir), "--quiet"])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"--seed: {seed} is invalid" in line
    assert not out_dir.exists()


def test_run_into_a_non_empty_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("precious")

    code = main(["run", str(QUICKSTART), "--out", str(out_dir), "--quiet"])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "--out" in line
    assert "not an empty directory" in line
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert (out_dir / "keep.txt").read_text() == "precious"


def test_run_into_an_existing_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "run"
    out_file.write_text("x")

    code = main(["run", str(QUICKSTART), "--out", str(out_file), "--quiet"])

    assert code == 2
    assert "--out" in _one_error_line(capsys.readouterr().err)


def test_report_on_a_directory_without_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", str(tmp_path)])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "is not a run directory" in line
    assert list(tmp_path.iterdir()) == []


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])

    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "validate", "report"):
        assert command in out


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])

    assert info.value.code == 2
    assert "bcfl: error:" in capsys.readouterr().err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])

    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("bcfl ")


def _bcfl_script() -> str:
    beside_python = Path(sys.executable).parent / "bcfl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("bcfl")
    if found is None:
        pytest.skip("the bcfl console script is not installed")
    return found


def test_console_script_exits_2_on_a_bad_scenario(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"

    proc = subprocess.run(
        [_bcfl_script(), "run", str(_bad_scenario(tmp_path)), "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "training.rounds" in line
    assert proc.stdout == ""
    assert not out_dir.exists()


def test_validate_non_utf8_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))

    code = main(["validate", str(path)])

    assert code == 2
    assert "latin1.yaml" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("backend", ["mininet", "containernet"])
def test_an_emulated_backend_without_root_names_itself(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out_dir = tmp_path / "run"

    code = main(["run", str(QUICKSTART), "--backend", backend, "--out", str(out_dir), "--quiet"])

    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"the {backend} backend needs root" in line
    assert not out_dir.exists()


HEAVY = ("torch", "sklearn", "matplotlib")
IMPORT_PROBE = """
import sys
from orchestrator.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("heavy:", sorted(m for m in {heavy!r} if m in sys.modules), "code:", code)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["chain", "verify", "{tmp}"], ["clean", "{tmp}"], ["chain", "--help"]],
    ids=["help", "chain-verify", "clean", "chain-help"],
)
def test_light_commands_do_not_import_torch_sklearn_or_matplotlib(
    argv: list[str], tmp_path: Path
) -> None:
    (tmp_path / "meta.json").write_text('{"run_token": "bzz"}')
    args = [a.format(tmp=tmp_path) for a in argv]

    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )

    assert "heavy: [] code:" in proc.stdout, proc.stdout + proc.stderr


def test_a_fork_server_that_cannot_start_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.forkserver import ForkServerError
    from orchestrator.runner import Run

    def refuse(self: Run) -> None:
        raise ForkServerError("fork server exited during start-up (code 1); see forkserver.log")

    monkeypatch.setattr(Run, "execute", refuse)
    code = main(["run", str(QUICKSTART), "--out", str(tmp_path / "r"), "--quiet"])

    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[-1] == (
        "bcfl: error: fork server exited during start-up (code 1); see forkserver.log"
    )
