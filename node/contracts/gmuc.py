"""The GMUC vote contract (two-layer scheme): the task's MECs vote the round's aggregate.

How it works
- Each MEC of a task recomputes the round's aggregate from the certified LMUC blocks of
  every MEC of the task (cross-verification) and votes its hash:
  `gmuc.vote` {task_id, round, aggregate (32-byte blob hash), contributors (device ids)} —
  a "mec" member, once per (task, round).
- The vote quorum is a majority of the chain's "mec" members (more than half; with 3 MECs,
  2). A BFT quorum 2f+1 alone is not enough here: with 3 MECs f = 0 and one vote would
  decide (our choice, the paper says only "BFT-type").
- State: ns "gmuc.vote": "{task}/{round}/{mec}" -> {"aggregate": hex, "contributors": [..]};
  ns "gmuc.round": "{task}/{round}" -> {"aggregate": hex or "", "contributors": [..],
  "outvoted": [mec ids, sorted]}. The first hash with a quorum of matching votes is the
  round's decided aggregate (never changed later); every MEC whose vote differs from it —
  voted before or after the decision — is listed as outvoted, with an ``outvoted`` event.
- Events: ``vote`` per vote, ``decided`` once per round, ``outvoted`` per dissenting MEC.
"""

from __future__ import annotations

from typing import Any

from node.contracts import gmuc_request, identity
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    bytes_field,
    field_of,
    int_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.contracts.task import MAX_CONTRIBUTORS, MAX_ROUNDS, TASK_ID_RE
from node.core.tx import Transaction

NAME = "gmuc"
NS_VOTE = "gmuc.vote"
NS_ROUND = "gmuc.round"
MEC = "mec"
BLOB_BYTES = 32


def vote_key(task_id: str, round_: int, mec: str) -> str:
    """The "gmuc.vote" key of one MEC's vote."""
    return f"{task_id}/{round_}/{mec}"


def round_key(task_id: str, round_: int) -> str:
    """The "gmuc.round" key of one round's tally."""
    return f"{task_id}/{round_}"


def mec_count(state: State) -> int:
    """The chain's registered "mec" members."""
    return sum(1 for _, entry in state.items(identity.NS) if entry.get("role") == MEC)


def vote_quorum(mecs: int) -> int:
    """Matching votes that decide a round: more than half of `mecs`."""
    return mecs // 2 + 1


def get_round(state: State, task_id: str, round_: int) -> dict[str, Any] | None:
    """A round's tally ({aggregate, contributors, outvoted}), or None before any vote."""
    entry: dict[str, Any] | None = state.get(NS_ROUND, round_key(task_id, round_))
    return entry


def _contributors(payload: dict[str, Any]) -> list[str]:
    value = field_of(payload, "contributors")
    if not isinstance(value, list):
        raise ContractError(f"contributors: must be a list, not {type(value).__name__}")
    if len(value) > MAX_CONTRIBUTORS:
        raise ContractError(f"contributors: must name at most {MAX_CONTRIBUTORS} nodes")
    for node_id in value:
        identity.check_node_id(node_id, "contributors")
    if len(set(value)) != len(value):
        raise ContractError("contributors: duplicate node id")
    return sorted(value)


def vote(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """gmuc.vote {task_id, round, aggregate, contributors}: a MEC's aggregate for a round."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "round", "aggregate", "contributors"))
    sender = identity.require_member(state, tx, MEC)
    task_id = str_field(payload, "task_id", 64)
    if not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    aggregate = bytes_field(payload, "aggregate", BLOB_BYTES).hex()
    contributors = _contributors(payload)
    key = vote_key(task_id, round_, sender)
    if state.get(NS_VOTE, key) is not None:
        raise ContractError(f"round: {sender!r} already voted in round {round_}")
    state.set(NS_VOTE, key, {"aggregate": aggregate, "contributors": contributors})
    events = [
        Event(
            NAME,
            "vote",
            {"task_id": task_id, "round": round_, "mec": sender, "aggregate": aggregate},
        )
    ]
    tally = get_round(state, task_id, round_) or {
        "aggregate": "",
        "contributors": [],
        "outvoted": [],
    }
    votes = {
        k.rsplit("/", 1)[1]: v
        for k, v in state.items(NS_VOTE)
        if k.startswith(f"{task_id}/{round_}/")
    }
    outvoted = set(tally["outvoted"])
    if not tally["aggregate"]:
        matching = [m for m, v in votes.items() if v["aggregate"] == aggregate]
        if len(matching) >= vote_quorum(mec_count(state)):
            tally["aggregate"], tally["contributors"] = aggregate, contributors
            events.append(
                Event(
                    NAME,
                    "decided",
                    {
                        "task_id": task_id,
                        "round": round_,
                        "aggregate": aggregate,
                        "votes": len(matching),
                    },
                )
            )
    if tally["aggregate"]:
        dissent = {m for m, v in votes.items() if v["aggregate"] != tally["aggregate"]}
        for mec in sorted(dissent - outvoted):
            events.append(
                Event(
                    NAME,
                    "outvoted",
                    {
                        "task_id": task_id,
                        "round": round_,
                        "mec": mec,
                        "aggregate": votes[mec]["aggregate"],
                    },
                )
            )
        outvoted |= dissent
    tally["outvoted"] = sorted(outvoted)
    state.set(NS_ROUND, round_key(task_id, round_), tally)
    return events


# the task request and responses (Steps 1-2): `node.contracts.gmuc_request`
METHODS: dict[str, Method] = {"vote": vote, **gmuc_request.METHODS}
API = None
