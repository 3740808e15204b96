"""The GMUC task request and the devices' responses (two-layer scheme, Steps 1-2).

How it works
- The task request is the publisher's ``task.publish`` (reward pool in escrow, rounds, model,
  data set; `node.contracts.task`) followed by `gmuc.request` {task_id, min_samples,
  min_cpu_mhz, min_energy_j}: the resource requirements a worker must meet — local training
  samples, CPU frequency (MHz) and the energy budget it gives the task (J); our choice of
  resources, the paper names only "resource requirements". Only the task's publisher, once
  per task, while the task is open; the record copies the task's reward pool and rounds.
- A device answers with its response: {task_id, device, samples, cpu_mhz, energy_j, opinion,
  signature}, `signature` being the device's Ed25519 signature of `response_message` (chain
  id, task, device, resources, opinion) with the key the chain registers for it. The device
  keeps no GMUC replica and is no GMUC keeper, so its MEC submits it: `gmuc.respond` — a
  "mec" member; the device a registered "device" member; once per (task, device); the
  request recorded before it. `opinion` is the device's subjective-logic opinion
  [belief, disbelief, uncertainty] (millionths, summing to 1,000,000) of the task's
  publisher: recorded with the response, not used in selection yet (our reading of the
  paper's "reputation opinion").
- State: ns "gmuc.request": task id -> {min_samples, min_cpu_mhz, min_energy_j,
  reward_pool, rounds}; ns "gmuc.response": "{task}/{device}" -> {samples, cpu_mhz,
  energy_j, opinion, mec, eligible (meets every requirement)}.
- Reads: `get_request`, `get_response`, `eligible` (a MEC selects its workers among them).
"""

from __future__ import annotations

from typing import Any

from node import sigcache
from node.contracts import identity
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
from node.contracts.task import OPEN, TASK_ID_RE, get_task
from node.core.encoding import canonical
from node.core.tx import Transaction

NAME = "gmuc"
NS_REQUEST = "gmuc.request"
NS_RESPONSE = "gmuc.response"
MEC = "mec"
MAX_RESOURCE = 2**40
OPINION_SCALE = 1_000_000
SIGNATURE_BYTES = 64
REQUIREMENTS = ("min_samples", "min_cpu_mhz", "min_energy_j")
RESOURCES = ("samples", "cpu_mhz", "energy_j")


def response_key(task_id: str, device: str) -> str:
    """The "gmuc.response" key of one device's response."""
    return f"{task_id}/{device}"


def response_message(
    chain_id: str, task_id: str, device: str, resources: dict[str, int], opinion: list[int]
) -> bytes:
    """What a device signs to answer task `task_id` on chain `chain_id`."""
    return canonical(
        ["bcfl-response", chain_id, task_id, device, [resources[r] for r in RESOURCES], opinion]
    )


def get_request(state: State, task_id: str) -> dict[str, Any] | None:
    """The task's request record, or None."""
    entry: dict[str, Any] | None = state.get(NS_REQUEST, task_id)
    return entry


def get_response(state: State, task_id: str, device: str) -> dict[str, Any] | None:
    """A device's response record, or None."""
    entry: dict[str, Any] | None = state.get(NS_RESPONSE, response_key(task_id, device))
    return entry


def eligible(state: State, task_id: str, devices: list[str]) -> list[str]:
    """Those of `devices` (in order) whose response meets the task's requirements."""
    out = []
    for d in devices:
        r = get_response(state, task_id, d)
        if r is not None and r["eligible"]:
            out.append(d)
    return out


def meets(request: dict[str, Any], resources: dict[str, int]) -> bool:
    """Whether `resources` meet every requirement of `request`."""
    return all(resources[r] >= request[m] for r, m in zip(RESOURCES, REQUIREMENTS, strict=True))


def _task_id(payload: dict[str, Any]) -> str:
    task_id = str_field(payload, "task_id", 64)
    if not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    return task_id


def request(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """gmuc.request {task_id, min_samples, min_cpu_mhz, min_energy_j}: the task's publisher
    states its resource requirements."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", *REQUIREMENTS))
    sender = identity.require_member(state, tx)
    task_id = _task_id(payload)
    task = get_task(state, task_id)
    if task is None or task["status"] != OPEN:
        raise ContractError(f"task_id: no open task {task_id!r}")
    if task["publisher"] != sender:
        raise ContractError(f"sender: only the publisher of {task_id!r} may request workers")
    if get_request(state, task_id) is not None:
        raise ContractError(f"task_id: {task_id!r} already has a request")
    entry: dict[str, Any] = {m: int_field(payload, m, 0, MAX_RESOURCE) for m in REQUIREMENTS}
    entry |= {"reward_pool": int(task["reward_pool"]), "rounds": int(task["rounds"])}
    state.set(NS_REQUEST, task_id, entry)
    return [Event(NAME, "request", {"task_id": task_id, **entry})]


def _opinion(payload: dict[str, Any]) -> list[int]:
    value = field_of(payload, "opinion")
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        or sum(value) != OPINION_SCALE
    ):
        raise ContractError(
            f"opinion: must be [belief, disbelief, uncertainty], non-negative integers "
            f"summing to {OPINION_SCALE}"
        )
    return list(value)


def respond(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """gmuc.respond {task_id, device, samples, cpu_mhz, energy_j, opinion, signature}: a MEC
    submits one of its devices' signed responses."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "device", *RESOURCES, "opinion", "signature"))
    mec = identity.require_member(state, tx, MEC)
    task_id = _task_id(payload)
    req = get_request(state, task_id)
    if req is None:
        raise ContractError(f"task_id: {task_id!r} has no request")
    device = identity.check_node_id(str_field(payload, "device", 32), "device")
    key = identity.key_of(state, device)
    if key is None or identity.role_of(state, key) != identity.DEVICE:
        raise ContractError(f"device: {device!r} is not a registered device")
    if get_response(state, task_id, device) is not None:
        raise ContractError(f"device: {device!r} already answered task {task_id!r}")
    resources = {r: int_field(payload, r, 0, MAX_RESOURCE) for r in RESOURCES}
    opinion = _opinion(payload)
    signature = bytes_field(payload, "signature", SIGNATURE_BYTES)
    chain_id = str(state.get(identity.NS_CHAIN, "id") or "")
    message = response_message(chain_id, task_id, device, resources, opinion)
    if not sigcache.verify(key, message, signature):
        raise ContractError(f"signature: not {device!r}'s signature of this response")
    ok = meets(req, resources)
    state.set(
        NS_RESPONSE,
        response_key(task_id, device),
        {**resources, "opinion": opinion, "mec": mec, "eligible": ok},
    )
    return [Event(NAME, "response", {"task_id": task_id, "device": device, "eligible": ok})]


METHODS: dict[str, Method] = {"request": request, "respond": respond}
