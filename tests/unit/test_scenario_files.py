"""Every scenario file shipped in scenarios/ validates, topology and fault schedule included."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.faults import resolve_faults
from orchestrator.scenario import load_scenario
from topologies.builders import build_hierarchy

FILES = sorted((Path(__file__).resolve().parents[2] / "scenarios").rglob("*.yaml"))


def test_there_are_scenarios() -> None:
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_scenario_file_is_valid(path: Path) -> None:
    scenario = load_scenario(path)
    topology = build_hierarchy(scenario.topology.to_params(), scenario.seed)
    resolve_faults(scenario, topology)
