"""`metrics.control_plane`: whether a run's nodes serve the gRPC control plane — on up to
CONTROL_PLANE_AUTO_MAX node processes by default, always or never when the scenario says."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from orchestrator.runner import Run
from orchestrator.scenario import CONTROL_PLANE_AUTO_MAX, ScenarioError, load_scenario

QUICKSTART = Path("scenarios/quickstart.yaml")


def prepared(tmp_path: Path, control_plane: object) -> tuple[Path, list[dict[str, object]]]:
    text = QUICKSTART.read_text() + f"\nmetrics: {{control_plane: {json.dumps(control_plane)}}}\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    run = Run(load_scenario(path), out_dir=tmp_path / "run")
    configs = [json.loads(Path(launch.argv[-1]).read_text()) for launch in run.prepare()]
    return tmp_path / "run", configs


@pytest.mark.parametrize("value", ["auto", True])
def test_nodes_get_the_token_and_the_run_keeps_it_private(tmp_path: Path, value: object) -> None:
    run_dir, configs = prepared(tmp_path, value)
    token = (run_dir / "control.token").read_text().strip()
    assert len(token) == 32 and all(c["control_token"] == token for c in configs)
    for path in [run_dir / "control.token", *run_dir.glob("nodes/*/config.json")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert json.loads((run_dir / "meta.json").read_text())["control_plane"] is True


def test_off_means_no_token_so_no_node_serves_it(tmp_path: Path) -> None:
    run_dir, configs = prepared(tmp_path, False)
    assert all(c["control_token"] is None for c in configs)
    assert not (run_dir / "control.token").exists()


def test_auto_turns_off_above_the_bound(tmp_path: Path) -> None:
    from orchestrator.scenario import MetricsSection

    auto = MetricsSection()
    assert auto.control_plane_on(CONTROL_PLANE_AUTO_MAX)
    assert not auto.control_plane_on(CONTROL_PLANE_AUTO_MAX + 1)
    assert MetricsSection(control_plane=True).control_plane_on(10_000)


def test_a_bad_value_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(QUICKSTART.read_text() + "\nmetrics: {control_plane: sometimes}\n")
    with pytest.raises(ScenarioError, match=r"metrics\.control_plane"):
        load_scenario(path)
