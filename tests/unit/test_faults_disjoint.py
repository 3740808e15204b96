"""The SFL population (paper 004 §V-A): disjoint malicious / unreliable / honest groups drawn
by seed with ``exclude_chosen``, its errors, and a 300-device topology without D2D."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from orchestrator.faults import resolve_faults
from orchestrator.scenario import ScenarioError, parse_scenario
from topologies import HierarchyParams, LinkKind, NodeKind, TopologySpec, build_hierarchy

MALICIOUS: dict[str, Any] = {
    "at_round": 1,
    "action": "malicious",
    "role": "device",
    "fraction": 0.2,
    "behaviour": "label_flip",
    "params": {"strength": 1.0},
}
UNRELIABLE: dict[str, Any] = {
    "at_round": 1,
    "action": "malicious",
    "role": "device",
    "fraction": 0.2,
    "behaviour": "unreliable",
    "params": {"target_emd": 1.0},
    "exclude_chosen": True,
}


def topology(devices: int) -> TopologySpec:
    """One BS, one MEC with `devices` devices, no D2D links."""
    return build_hierarchy(
        HierarchyParams(bs_count=1, mecs_per_bs=1, devices_per_mec=devices, d2d=None), 1
    )


def scenario(faults: list[dict[str, Any]], seed: int = 1) -> Any:
    return parse_scenario({"seed": seed, "training": {"rounds": 5}, "faults": faults})


def groups(devices: int, seed: int) -> tuple[set[str], set[str], set[str]]:
    """(malicious, unreliable, honest) device ids."""
    spec = topology(devices)
    events = resolve_faults(scenario([MALICIOUS, UNRELIABLE], seed), spec)
    by_behaviour = {e.behaviour: set(e.nodes) for e in events}
    everyone = {n.id for n in spec.of_kind(NodeKind.DEVICE)}
    bad, unreliable = by_behaviour["label_flip"], by_behaviour["unreliable"]
    return bad, unreliable, everyone - bad - unreliable


@pytest.mark.parametrize(("devices", "fifth"), [(10, 2), (100, 20), (300, 60)])
def test_groups_are_disjoint_and_sized(devices: int, fifth: int) -> None:
    bad, unreliable, honest = groups(devices, seed=7)
    assert len(bad) == fifth and len(unreliable) == fifth
    assert not bad & unreliable
    assert len(honest) == devices - 2 * fifth  # 60 %


@pytest.mark.parametrize("devices", [10, 100, 300])
def test_same_seed_same_groups_other_seed_other_draw(devices: int) -> None:
    first = groups(devices, seed=7)
    assert groups(devices, seed=7) == first
    other = groups(devices, seed=8)
    assert other[0] != first[0] or other[1] != first[1]


def test_entries_without_the_flag_select_as_before() -> None:
    plain = {**UNRELIABLE, "exclude_chosen": False}
    spec = topology(10)
    events = resolve_faults(scenario([MALICIOUS, plain], seed=1), spec)
    pool = sorted(n.id for n in spec.of_kind(NodeKind.DEVICE))
    rng = np.random.default_rng([1, 0xFA17, 1])  # the unchanged draw: whole role, entry 1
    assert events[1].nodes == tuple(sorted(rng.choice(pool, size=2, replace=False).tolist()))


def test_only_malicious_entries_are_excluded() -> None:
    crash_all = {"at_round": 2, "action": "crash", "role": "device", "count": 10}
    events = resolve_faults(scenario([crash_all, {**UNRELIABLE, "fraction": 1.0}]), topology(10))
    assert len(events[1].nodes) == 10  # a crash does not take nodes out of the pool


def test_too_small_a_pool_names_the_field_and_what_is_left() -> None:
    spec = topology(10)
    with pytest.raises(ScenarioError) as info:
        resolve_faults(scenario([MALICIOUS, {**UNRELIABLE, "fraction": 0.9}]), spec)
    message = str(info.value)
    assert message.startswith("faults[1].fraction: 0.9")
    assert "8 of 10 are left" in message and "9 needed" in message
    with pytest.raises(ScenarioError) as info:
        count = {k: v for k, v in UNRELIABLE.items() if k != "fraction"}
        resolve_faults(scenario([MALICIOUS, {**count, "count": 9}]), spec)
    assert str(info.value).startswith("faults[1].count: 9")


@pytest.mark.parametrize(
    "entry",
    [
        {"at_round": 2, "action": "crash", "nodes": ["dev0-0"], "exclude_chosen": True},
        {"at_round": 2, "action": "crash", "role": "device", "exclude_chosen": True},
    ],
)
def test_exclude_chosen_needs_role_and_a_size(entry: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario([entry])
    assert "exclude_chosen: only with role and fraction or count" in str(info.value)


def test_300_devices_without_d2d_build_fast() -> None:
    section = {"base_stations": 1, "mecs_per_bs": 1, "devices_per_mec": 300, "d2d": "off"}
    start = time.perf_counter()
    parsed = parse_scenario({"seed": 3, "topology": section})
    spec = build_hierarchy(parsed.topology.to_params(), parsed.seed)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # measured ~0.03 s; with D2D (89,700 links) ~0.8 s
    assert len(spec.of_kind(NodeKind.DEVICE)) == 300
    assert not [link for link in spec.links if link.kind == LinkKind.D2D]
