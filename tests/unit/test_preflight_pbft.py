"""Preflight refuses a PBFT committee too small to start (it failed at node start before)."""

from __future__ import annotations

import pytest

from orchestrator.preflight import check_plan
from orchestrator.scenario import ScenarioError, parse_scenario
from topologies import build_hierarchy


def _check(mecs: int, consensus: str, scheme: str = "vanilla") -> None:
    s = parse_scenario(
        {
            "scheme": {"name": scheme},
            "topology": {"mecs_per_bs": mecs, "devices_per_mec": 1},
            "ledger": {"consensus": consensus},
        }
    )
    check_plan(s, build_hierarchy(s.topology.to_params(), s.seed))


@pytest.mark.parametrize("mecs", [1, 2, 3])
def test_pbft_with_too_few_mecs_is_refused_naming_the_field(mecs: int) -> None:
    with pytest.raises(ScenarioError) as err:
        _check(mecs, "pbft")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("ledger.consensus: 'pbft' is invalid; allowed: a PBFT committee")
    assert f"chain 'main' of scheme vanilla would be ordered by {mecs} (" in line


def test_pbft_with_four_mecs_and_single_with_two_pass() -> None:
    _check(4, "pbft")
    _check(2, "single")


def test_a_scheme_that_adds_the_publisher_passes_with_three_mecs() -> None:
    _check(3, "pbft", scheme="flchain")  # the publisher is flchain's 4th replica
