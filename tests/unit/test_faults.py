"""The fault schedule: selection, validation errors naming the entry, behaviour intervals."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.faults import behaviour_schedules, resolve_faults
from orchestrator.scenario import ScenarioError, parse_scenario
from topologies import HierarchyParams, build_hierarchy

TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=5), 1)


def scenario(faults: list[dict[str, Any]], rounds: int = 10, seed: int = 1) -> Any:
    return parse_scenario({"seed": seed, "training": {"rounds": rounds}, "faults": faults})


def test_role_fraction_is_seeded_and_sized() -> None:
    entry = {
        "at_round": 1,
        "action": "malicious",
        "role": "device",
        "fraction": 0.3,
        "behaviour": "label_flip",
        "params": {"strength": 0.5},
    }
    first = resolve_faults(scenario([entry]), TOPOLOGY)
    again = resolve_faults(scenario([entry]), TOPOLOGY)
    other = resolve_faults(scenario([entry], seed=2), TOPOLOGY)

    assert len(first[0].nodes) == 3 and all(n.startswith("dev") for n in first[0].nodes)
    assert first == again
    assert other[0].nodes != first[0].nodes


def test_explicit_nodes_and_count() -> None:
    events = resolve_faults(
        scenario(
            [
                {"at_round": 3, "action": "crash", "nodes": ["dev0-1"]},
                {
                    "at_round": 2,
                    "action": "malicious",
                    "role": "mec",
                    "count": 1,
                    "behaviour": "malfunction",
                    "params": {"mode": "zeros"},
                },
            ]
        ),
        TOPOLOGY,
    )
    assert [(e.round, e.action) for e in events] == [(2, "malicious"), (3, "crash")]
    assert events[1].nodes == ("dev0-1",)
    assert events[0].nodes[0].startswith("mec")


@pytest.mark.parametrize(
    ("entry", "names"),
    [
        ({"at_round": 1, "action": "crash", "nodes": ["dev9-9"]}, "faults[0].nodes: 'dev9-9'"),
        (
            {"at_round": 2, "action": "malicious", "nodes": ["dev0-0"], "behaviour": "teleport"},
            "faults[0].behaviour: 'teleport'",
        ),
        (
            {
                "at_round": 2,
                "action": "malicious",
                "nodes": ["dev0-0"],
                "behaviour": "label_flip",
                "params": {"strength": 3},
            },
            "faults[0].params",
        ),
        (
            {
                "at_round": 2,
                "action": "malicious",
                "nodes": ["dev0-0"],
                "behaviour": "label_flip",
                "params": {"strenght": 1},
            },
            "strenght",
        ),
        (
            {
                "at_round": 2,
                "action": "malicious",
                "nodes": ["mec0"],
                "behaviour": "label_flip",
                "params": {"strength": 1},
            },
            "faults[0].behaviour",
        ),
        ({"at_round": 11, "action": "crash", "nodes": ["dev0-0"]}, "faults[0].at_round: 11"),
        ({"at_round": 1, "action": "crash", "nodes": ["dev0-0"]}, "faults[0].at_round: 1"),
        ({"at_round": 2, "action": "crash", "nodes": ["pub"]}, "faults[0].nodes: 'pub'"),
        ({"at_round": 2, "action": "link_down", "link": ["dev0-0", "mec1"]}, "faults[0].link"),
        ({"at_round": 2, "action": "crash", "role": "device", "count": 11}, "faults[0].count"),
    ],
)
def test_bad_entries_are_named(entry: dict[str, Any], names: str) -> None:
    with pytest.raises(ScenarioError) as info:
        resolve_faults(scenario([entry]), TOPOLOGY)
    assert names in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"at_round": 2, "action": "malicious", "nodes": ["dev0-0"]},  # no behaviour
        {"at_round": 2, "action": "crash"},  # neither nodes nor role
        {"at_round": 2, "action": "crash", "nodes": ["dev0-0"], "role": "device"},
        {"at_round": 2, "action": "link_down"},  # no link
        {"at_round": 0, "action": "crash", "nodes": ["dev0-0"]},
        {"at_round": 2, "action": "explode", "nodes": ["dev0-0"]},
    ],
)
def test_inconsistent_entries_fail_at_parse(entry: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario([entry])
    assert "faults.0" in str(info.value)


def test_behaviour_intervals_end_at_recover() -> None:
    events = resolve_faults(
        scenario(
            [
                {
                    "at_round": 2,
                    "action": "malicious",
                    "nodes": ["dev0-0"],
                    "behaviour": "sign_flip",
                },
                {"at_round": 5, "action": "recover", "nodes": ["dev0-0"]},
                {
                    "at_round": 7,
                    "action": "malicious",
                    "nodes": ["dev0-0"],
                    "behaviour": "scale",
                    "params": {"factor": 10},
                },
                {"at_round": 3, "action": "crash", "nodes": ["dev0-1"]},
            ]
        ),
        TOPOLOGY,
    )
    assert behaviour_schedules(events) == {
        "dev0-0": [
            {"from_round": 2, "until_round": 5, "name": "sign_flip", "params": {}},
            {"from_round": 7, "until_round": None, "name": "scale", "params": {"factor": 10}},
        ]
    }
