"""The scheme registry, the vanilla scheme's plan, and `bcfl schemes`."""

from __future__ import annotations

import dataclasses

import pytest

from node.config import NodePlan
from node.keys import NodeKey
from node.schemes import SCHEMES, PlanInputs, make_scheme
from node.schemes.base import ChainPlan, Plan
from orchestrator.cli import main
from topologies import HierarchyParams, NodeKind, build_hierarchy

TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=2, mecs_per_bs=2, devices_per_mec=3), 5)
KEYS = {
    n.id: NodeKey.from_seed(n.id.encode().ljust(32, b"\0")).public_key for n in TOPOLOGY.daemons()
}


def _inputs(consensus: str = "single") -> PlanInputs:
    return PlanInputs(run_id="r1", task_id="t", seed=5, reward_pool=100, consensus=consensus)


def test_vanilla_plans_every_daemon_with_its_role_and_the_one_chain() -> None:
    plan = make_scheme("vanilla").plan(TOPOLOGY, KEYS, _inputs())

    assert set(plan.nodes) == {n.id for n in TOPOLOGY.daemons()}
    for node in TOPOLOGY.daemons():
        assert plan.nodes[node.id].role == str(node.kind)
        assert plan.nodes[node.id].chains == ("main",)
    assert set(plan.chains["main"].keepers) == set(plan.nodes)
    device = next(n for n in TOPOLOGY.daemons() if n.kind == NodeKind.DEVICE)
    assert plan.nodes[device.id].peers == ("pub", device.parent)


def test_vanilla_plan_is_a_function_of_its_inputs() -> None:
    scheme = make_scheme("vanilla")

    first = scheme.plan(TOPOLOGY, KEYS, _inputs())
    again = scheme.plan(TOPOLOGY, KEYS, _inputs())

    assert first.nodes == again.nodes
    assert first.chains["main"].config.encoded == again.chains["main"].config.encoded


def test_vanilla_pbft_plan_gives_the_mecs_as_committee() -> None:
    plan = make_scheme("vanilla").plan(TOPOLOGY, KEYS, _inputs("pbft"))
    single = make_scheme("vanilla").plan(TOPOLOGY, KEYS, _inputs("single"))

    mec_keys = {KEYS[n.id] for n in TOPOLOGY.of_kind(NodeKind.MEC)}
    assert plan.chains["main"].config.to_dict() != single.chains["main"].config.to_dict()
    assert mec_keys <= {bytes.fromhex(v) for v in _hexes(plan.chains["main"].config.to_dict())}


def _hexes(d: object) -> list[str]:
    """Every hex string of 64 characters inside `d` (public keys)."""
    if isinstance(d, dict):
        return [h for v in d.values() for h in _hexes(v)]
    if isinstance(d, list | tuple):
        return [h for v in d for h in _hexes(v)]
    return [d] if isinstance(d, str) and len(d) == 64 else []


def test_a_plan_refuses_a_keeper_that_does_not_list_the_chain() -> None:
    good = make_scheme("vanilla").plan(TOPOLOGY, KEYS, _inputs())
    chain = good.chains["main"]
    nodes = dict(good.nodes)
    nodes["pub"] = nodes["pub"].model_copy(update={"chains": ()})

    with pytest.raises(ValueError, match="keeper 'pub' does not list it"):
        Plan(nodes=nodes, chains={"main": chain})
    with pytest.raises(ValueError, match="unknown chain 'other'"):
        Plan(nodes={"pub": NodePlan(node_id="pub", role="publisher", chains=("other",))}, chains={})
    with pytest.raises(ValueError, match="chain id"):
        dataclasses.replace(chain, chain_id="Bad Id")


def test_unknown_scheme_and_role_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'x'; allowed: vanilla"):
        make_scheme("x")
    with pytest.raises(ValueError, match="no role 'miner'; allowed: publisher, mec, device"):
        make_scheme("vanilla").role(NodePlan(node_id="d", role="miner"))


def test_roles_come_from_the_plan() -> None:
    scheme = make_scheme("vanilla")
    factories = scheme.role_factories()

    for role in ("publisher", "mec", "device"):
        assert type(scheme.role(NodePlan(node_id="n", role=role))) is factories[role]


def test_bcfl_schemes_lists_every_registered_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemes"]) == 0

    out = capsys.readouterr().out
    for name, cls in SCHEMES.items():
        assert f"{name}\n  {cls.summary}" in out


def test_chain_plan_keeps_its_config() -> None:
    plan = make_scheme("vanilla").plan(TOPOLOGY, KEYS, _inputs())

    assert isinstance(plan.chains["main"], ChainPlan)
    assert plan.chains["main"].config.genesis.chain_id == "r1"
