"""Live changes to a node's behaviour schedule (the control plane's ``SetBehaviour``).

How it works
------------
`check_request` validates a request like the fault schedule validates a scenario entry
(`orchestrator.faults`): a device takes an attack of `DEVICE_ATTACKS`, a MEC an edge fault of
`EDGE_FAULTS`, with their parameters; anything else raises `BehaviourError` naming the field.
It runs on a gRPC thread and reads nothing of the node's state (the node's kind is given).
Before a node with ``await_start`` starts its role, ``withhold_blobs`` is taken too (the
orchestrator delivers the fault schedule then; the MEC wires it into its chains at start).

`schedule` then runs on the daemon's loop thread: the entry takes effect at the node's first
round that is >= its ``from_round`` and has not begun yet (a round under way is never
changed half-way: its data and its update were chosen at its start); intervals that cover
that round or come later are cut there (our choice: a live change overrides the rest of the
schedule), and the new interval runs to the end (``recover``: none, honest again). The
node's ``config.behaviours`` list is edited in place: it is the one list every role reads
through `node.roles.threats.active_behaviour` (the roles keep the config object, not a copy).
"""

from __future__ import annotations

import json
from typing import Any

from node.config import Behaviour, NodeConfig
from node.learning.attacks import DEVICE_ATTACKS, EDGE_FAULTS, make_params
from node.learning.attacks.withhold import WITHHOLD_BLOBS
from topologies import NodeKind

RECOVER = "recover"
MAX_PARAMS_JSON = 4096


class BehaviourError(ValueError):
    """A refused request; `field` names the request's field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_request(
    kind: str, behaviour: str, params_json: str, from_round: int, before_start: bool = False
) -> tuple[str, dict[str, Any], int]:
    """(behaviour, params, from_round) of a valid request for a node of `kind`; else
    BehaviourError naming the field. `before_start`: the node's role has not started
    (``await_start``): ``withhold_blobs`` is taken too (the role wires it in at its start)."""
    if not isinstance(from_round, int) or not 1 <= from_round < 2**31:
        raise BehaviourError("from_round", f"{from_round!r} is invalid; allowed: 1 <= R < 2**31")
    if len(params_json) > MAX_PARAMS_JSON:
        raise BehaviourError("params_json", f"longer than {MAX_PARAMS_JSON} characters")
    try:
        params = json.loads(params_json) if params_json.strip() else {}
    except ValueError as exc:
        raise BehaviourError("params_json", f"not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise BehaviourError("params_json", "not a JSON object")
    if behaviour == RECOVER:
        if params:
            raise BehaviourError("params_json", "recover takes no parameters")
        return behaviour, {}, from_round
    registry = {NodeKind.DEVICE.value: DEVICE_ATTACKS, NodeKind.MEC.value: EDGE_FAULTS}.get(kind)
    if registry is None:
        raise BehaviourError("behaviour", f"a {kind} node takes no behaviour (devices and MECs)")
    live_only = not before_start and behaviour == WITHHOLD_BLOBS.name
    if behaviour not in registry or live_only:
        # withhold_blobs is wired into the MEC's chains when it starts: not live (our choice)
        allowed = ", ".join(n for n in registry if before_start or n != WITHHOLD_BLOBS.name)
        raise BehaviourError(
            "behaviour", f"{behaviour!r} is invalid for a {kind}; allowed: {allowed}, recover"
        )
    try:
        make_params(registry, behaviour, params)
    except ValueError as exc:
        raise BehaviourError("params_json", str(exc)) from None
    return behaviour, params, from_round


def schedule(
    config: NodeConfig,
    behaviour: str,
    params: dict[str, Any],
    from_round: int,
    current_round: int | None,
) -> int:
    """Add a checked entry to `config.behaviours` (in place, see the module docstring);
    returns the round it takes effect. `current_round`: the round the node is in (None: the
    role keeps none; then `from_round` as it is)."""
    start = from_round if current_round is None else max(from_round, current_round + 1)
    kept: list[Behaviour] = []
    for b in config.behaviours:
        if b.from_round >= start:
            continue  # replaced by the live change
        if b.until_round is None or b.until_round > start:
            b = b.model_copy(update={"until_round": start})
        kept.append(b)
    if behaviour != RECOVER:
        kept.append(Behaviour(name=behaviour, params=params, from_round=start))
    config.behaviours[:] = kept
    return start
