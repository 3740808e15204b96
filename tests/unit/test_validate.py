"""`bcfl validate`: several files, empty files, no heavy imports; light name registries."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.scenario import Scenario, load_scenario
from topologies.links import shannon_rate_mbit

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


def test_several_files_one_line_each_and_exit_2_if_any_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {rounds: 0}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")

    code = main(["validate", str(QUICKSTART), str(bad), str(empty)])

    captured = capsys.readouterr()
    assert code == 2
    out = captured.out.splitlines()
    assert [line.split(": ok (")[0] for line in out] == [str(QUICKSTART), str(empty)]
    assert captured.err.splitlines() == [
        f"bcfl: error: {bad}: training.rounds: 0 is invalid; allowed: greater than or equal to 1"
    ]


def test_every_shipped_scenario_validates(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (REPO / "scenarios").rglob("*.yaml"))

    code = main(["validate", *files])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(captured.out.splitlines()) == len(files)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- # c\n...\n"])
def test_empty_file_is_every_default(text: str, tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(text)

    assert load_scenario(path) == Scenario()


EDGE_FAULTS = REPO / "scenarios" / "attacks" / "edge_faults.yaml"


@pytest.mark.parametrize("scenario", [QUICKSTART, EDGE_FAULTS], ids=lambda p: p.stem)
def test_validate_imports_neither_torch_nor_sklearn_nor_matplotlib(scenario: Path) -> None:
    code = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        f"assert main(['validate', {str(scenario)!r}]) == 0\n"
        "heavy = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )

    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )

    assert proc.returncode == 0, proc.stderr


def test_light_name_registries_match_the_modules() -> None:
    from node.learning import datasets, models, names, partition, privacy

    assert names.MODELS == models.MODELS
    assert names.DATASETS == datasets.DATASETS
    assert names.PARTITIONS == partition.PARTITIONS
    assert names.MECHANISMS == privacy.MECHANISMS


# --- the Shannon rate at the edges of float64 ------------------------------------------------


def test_shannon_rate_unchanged_for_ordinary_values() -> None:
    b, p, d, g, n = 2e6, 23.0, 150.0, 3.76, -174.0
    snr = 10 ** ((p - 30) / 10) * d**-g / (10 ** ((n - 30) / 10) * b)

    assert shannon_rate_mbit(b, p, d, g, n) == b * math.log2(1 + snr) / 1e6


@pytest.mark.parametrize(
    ("power", "noise", "gamma"),
    [
        (23.0, -1.0e300, 3.76),  # noise power underflows to 0 W: was ZeroDivisionError
        (1.0e300, -174.0, 3.76),  # transmit power overflows: was OverflowError
        (-1.0e300, -174.0, 3.76),
        (23.0, 1.0e300, 3.76),
        (23.0, -174.0, 1.0e300),
    ],
)
def test_shannon_rate_is_finite_for_extreme_finite_inputs(
    power: float, noise: float, gamma: float
) -> None:
    rate = shannon_rate_mbit(2e6, power, 150.0, gamma, noise, fading=0.7)

    assert math.isfinite(rate)
    assert rate >= 0


def test_shannon_rate_log_domain_agrees_where_both_work() -> None:
    from topologies.links import _shannon_rate_log_domain

    direct = shannon_rate_mbit(2e6, 23.0, 150.0, 3.76, -174.0, 0.7)
    via_db = _shannon_rate_log_domain(2e6, 23.0, 150.0, 3.76, -174.0, 0.7)

    assert via_db == pytest.approx(direct, rel=1e-9)


def test_shannon_rate_refuses_non_finite_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        shannon_rate_mbit(2e6, math.nan, 150.0, 3.76, -174.0)


def test_a_scenario_its_scheme_cannot_plan_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scheme: gossip-fedavg\nledger: {consensus: pbft}\n")

    assert main(["validate", str(path)]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"bcfl: error: {path}: scheme: gossip-fedavg: ledger.consensus: 'pbft' is not "
        "supported by scheme gossip-fedavg; allowed: single"
    ]


def test_model_alexnet_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("model: alexnet\n")

    code = main(["validate", str(path)])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith(f"{path}: ok (")


def test_cifar10_with_alexnet_validates_and_a_missing_root_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (root / name).write_bytes(bytes(3073 * 12))  # sizes are all validate reads
    good = tmp_path / "good.yaml"
    good.write_text(f"dataset: {{name: cifar10, root: {tmp_path}}}\nmodel: alexnet\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: cifar10, root: /nonexistent}\nmodel: alexnet\n")

    code = main(["validate", str(good), str(bad)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith(f"{good}: ok (") and "60 training samples" in captured.out
    assert captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith(
        f"bcfl: error: {bad}: dataset.root: '/nonexistent' is invalid; allowed: a directory holding"
    )
