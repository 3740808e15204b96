"""The fault schedule: scenario entries resolved to concrete events on concrete nodes.

Selection by ids, or by role with a seeded fraction or count, is resolved once, before
anything starts, so a bad entry (unknown node, behaviour, parameter or round) fails with
an error naming the entry. Behaviour changes (``malicious``, ``recover``) take effect at
the exact round, by one of two paths:

* control plane on (the run's ``metrics.control_plane``; auto: up to CONTROL_PLANE_AUTO_MAX
  node processes): every node starts with ``await_start`` and no behaviours in its config;
  the runner waits for its control socket, sends its entries in round order with
  ``SetBehaviour(behaviour, params, from_round)`` (``recover``: honest again), then
  ``Start``. Before ``Start`` the role keeps no round, so each entry takes effect at exactly
  its round, however loaded the machine (a live ``SetBehaviour``, through ``bcfl control``,
  takes effect at the first round a node has not begun). A restarted process is sent all its
  entries again; its own round counter decides which apply. events.csv: ``applied_by`` is
  "orchestrator (control plane)";
* control plane off: `behaviour_schedules` go into the nodes' configs (``behaviours``) and
  each node switches itself at the start of the round; events.csv: "node (config)".

Process events (``crash``, ``restart``) and link events (``link_down``, ``link_up``) are
applied by the orchestrator when the publisher has finished the previous round (so they land
early in round r).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.learning.attacks import DEVICE_ATTACKS, EDGE_FAULTS, make_params
from orchestrator.scenario import Scenario, ScenarioError, show
from topologies import NodeKind, TopologySpec

PROCESS_ACTIONS = ("crash", "restart")
LINK_ACTIONS = ("link_down", "link_up")


@dataclass(frozen=True)
class FaultEvent:
    """One resolved schedule entry."""

    index: int
    round: int
    action: str
    nodes: tuple[str, ...] = ()
    behaviour: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    link: tuple[str, str] | None = None

    def describe(self) -> str:
        """A short human-readable summary."""
        what = self.behaviour or ""
        target = "-".join(self.link) if self.link else " ".join(self.nodes)
        return f"round {self.round}: {self.action} {what} {target}".replace("  ", " ")


def _error(index: int, name: str, value: object, allowed: str) -> ScenarioError:
    return ScenarioError(f"faults[{index}].{name}: {show(value)} is invalid; allowed: {allowed}")


def _select(
    index: int,
    entry: Any,
    topology: TopologySpec,
    seed: int,
    chosen: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """The entry's nodes: its ids, or a seeded draw from its role. With ``exclude_chosen``
    the draw skips `chosen` (the nodes of earlier malicious entries) while its size stays a
    fraction of the whole role (our choice)."""
    if entry.nodes is not None:
        known = {n.id for n in topology.daemons()}
        for nid in entry.nodes:
            if nid not in known:
                raise _error(index, "nodes", nid, f"node ids of this topology ({_span(known)})")
        return tuple(entry.nodes)
    pool = sorted(n.id for n in topology.of_kind(NodeKind(entry.role)))
    if entry.count is not None:
        k = entry.count
    elif entry.fraction is not None:
        k = max(1, round(entry.fraction * len(pool)))
    else:
        k = len(pool)
    if k > len(pool):
        raise _error(index, "count", k, f"at most {len(pool)} {entry.role} nodes")
    if entry.exclude_chosen:
        left = [nid for nid in pool if nid not in chosen]
        if k > len(left):
            name = "count" if entry.count is not None else "fraction"
            value = entry.count if entry.count is not None else entry.fraction
            raise _error(
                index,
                name,
                value,
                f"a draw of at most {len(left)} {entry.role} nodes: {len(left)} of "
                f"{len(pool)} are left after earlier malicious entries, {k} needed",
            )
        pool = left
    rng = np.random.default_rng([seed, 0xFA17, index])
    return tuple(sorted(rng.choice(pool, size=k, replace=False).tolist()))


def _span(ids: set[str]) -> str:
    ordered = sorted(ids)
    return ", ".join(ordered) if len(ordered) <= 6 else f"{ordered[0]} … {ordered[-1]}"


def _check_behaviour(
    index: int, entry: Any, nodes: tuple[str, ...], topology: TopologySpec
) -> None:
    for nid in nodes:
        kind = topology.node(nid).kind
        registry = {NodeKind.DEVICE: DEVICE_ATTACKS, NodeKind.MEC: EDGE_FAULTS}.get(kind)
        if registry is None:
            raise _error(index, "nodes", nid, "devices and MEC servers for malicious")
        if entry.behaviour not in registry:
            raise _error(index, "behaviour", entry.behaviour, f"for {kind}: {', '.join(registry)}")
        try:
            make_params(registry, entry.behaviour, entry.params)
        except ValueError as exc:
            raise ScenarioError(f"faults[{index}].params: {exc}") from None


def resolve_faults(scenario: Scenario, topology: TopologySpec) -> list[FaultEvent]:
    """Concrete events, sorted by round; ScenarioError naming the first bad entry."""
    rounds = scenario.training.rounds
    events = []
    chosen: set[str] = set()  # nodes of earlier malicious entries (for exclude_chosen)
    for i, entry in enumerate(scenario.faults):
        if entry.at_round > rounds:
            raise _error(i, "at_round", entry.at_round, f"1..{rounds} (training.rounds)")
        if entry.action in LINK_ACTIONS:
            a, b = entry.link or ("", "")
            try:
                topology.link(a, b)
            except Exception:
                raise _error(i, "link", [a, b], "a pair of directly linked nodes") from None
            if entry.at_round < 2:
                raise _error(i, "at_round", entry.at_round, ">= 2 for link events")
            events.append(FaultEvent(i, entry.at_round, entry.action, link=(a, b)))
            continue
        nodes = _select(i, entry, topology, scenario.seed, frozenset(chosen))
        if entry.action == "malicious":
            chosen.update(nodes)
        if entry.action in PROCESS_ACTIONS and entry.at_round < 2:
            raise _error(i, "at_round", entry.at_round, ">= 2 for crash and restart")
        if "pub" in nodes and entry.action in (*PROCESS_ACTIONS, "malicious"):
            raise _error(i, "nodes", "pub", "devices and MEC servers (the publisher is trusted)")
        if entry.action == "malicious":
            _check_behaviour(i, entry, nodes, topology)
        events.append(
            FaultEvent(i, entry.at_round, entry.action, nodes, entry.behaviour, dict(entry.params))
        )
    return sorted(events, key=lambda e: (e.round, e.index))


def behaviour_schedules(events: list[FaultEvent]) -> dict[str, list[dict[str, Any]]]:
    """Per node, the intervals of behaviour it applies itself."""
    out: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        if ev.action not in ("malicious", "recover"):
            continue
        for nid in ev.nodes:
            schedule = out.setdefault(nid, [])
            if schedule and schedule[-1]["until_round"] is None:
                schedule[-1]["until_round"] = ev.round
            if ev.action == "malicious":
                schedule.append(
                    {
                        "from_round": ev.round,
                        "until_round": None,
                        "name": ev.behaviour,
                        "params": ev.params,
                    }
                )
    return {nid: s for nid, s in out.items() if s}
