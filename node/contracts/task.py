"""The FL task contract: a publisher escrows a reward, devices and the publisher record rounds.

How it works
- State: ns "task": task id -> {"publisher": id, "reward_pool": int (what is left in
  escrow), "paid": int (rewards paid so far), "rounds": int, "model": str, "dataset": str,
  "round": int (last recorded global round, 0 before the first), "status": "open"|"closed"};
  ns "task.update": "{task}/{round}/{node}" -> {"blob": hex, "size": int, "samples": int};
  ns "task.global": "{task}/{round}" -> {"blob": hex, "size": int, "accuracy": float,
  "contributors": [node ids, sorted]}.
- Methods and callers:
  `task.publish` {task_id, reward_pool, rounds, model, dataset} — a "publisher" member;
      moves reward_pool from its balance into escrow (TokenApi.debit).
  `task.record_update` {task_id, round, blob, size, samples} — a "device" member; once per
      (task, round, device), only for the round being trained (current + 1 <= rounds).
  `task.record_global` {task_id, round, blob, size, accuracy, contributors} — the task's
      publisher; round == current + 1; every contributor has an update for that round (none:
      no update was used and the global model is the previous one; the round still closes, so
      that the next round's updates are recorded).
  `task.reward` {task_id, to, amount} — the task's publisher; pays from escrow
      (TokenApi.credit) to a registered member.
  `task.close` {task_id} — the task's publisher; refunds what is left to the publisher.
- Internal API (TaskApi, via `Calls.api("task", TaskApi)`): `pay(state, calls, task_id, to,
  amount)` moves `amount` of an open task's escrow to `to` through the token ledger (what
  `task.reward` does; the incentive contract pays its per-round rewards with it).
- Invariants: reward_pool + paid == the escrowed amount; 0 <= round <= rounds; a closed
  task accepts nothing and holds no tokens; blobs are 32-byte hashes (weights stay
  off chain).
"""

from __future__ import annotations

import re
from typing import Any

from node.contracts import identity
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    bytes_field,
    field_of,
    float_field,
    int_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.contracts.token import MAX_AMOUNT, TokenApi
from node.core.tx import Transaction

NAME = "task"
NS = "task"
NS_UPDATE = "task.update"
NS_GLOBAL = "task.global"
TASK_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_ROUNDS = 100_000
MAX_SIZE = 2**63 - 1
MAX_CONTRIBUTORS = 1024
BLOB_BYTES = 32
OPEN = "open"
CLOSED = "closed"


def update_key(task_id: str, round_: int, node_id: str) -> str:
    """The "task.update" key of one device's update."""
    return f"{task_id}/{round_}/{node_id}"


def global_key(task_id: str, round_: int) -> str:
    """The "task.global" key of one global round."""
    return f"{task_id}/{round_}"


def get_task(state: State, task_id: str) -> dict[str, Any] | None:
    """The task record, or None."""
    task: dict[str, Any] | None = state.get(NS, task_id)
    return task


def escrowed(state: State) -> int:
    """Tokens held in escrow by all tasks."""
    return sum(int(t["reward_pool"]) for _, t in state.items(NS))


def _task_id(payload: dict[str, Any]) -> str:
    task_id = str_field(payload, "task_id", 64)
    if not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    return task_id


def _open_task(state: State, task_id: str) -> dict[str, Any]:
    task = get_task(state, task_id)
    if task is None:
        raise ContractError(f"task_id: no task {task_id!r}")
    if task["status"] != OPEN:
        raise ContractError(f"task_id: task {task_id!r} is {task['status']}")
    return task


def _own_open_task(state: State, tx: Transaction, task_id: str) -> tuple[str, dict[str, Any]]:
    sender = identity.require_member(state, tx)
    task = _open_task(state, task_id)
    if task["publisher"] != sender:
        raise ContractError(f"sender: only the publisher of {task_id!r} may call this")
    return sender, task


def _next_round(payload: dict[str, Any], task: dict[str, Any]) -> int:
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    expected = int(task["round"]) + 1
    if expected > int(task["rounds"]):
        raise ContractError(f"round: all {task['rounds']} rounds are recorded")
    if round_ != expected:
        raise ContractError(f"round: {round_} is not the round being trained ({expected})")
    return round_


def publish(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """task.publish {task_id, reward_pool, rounds, model, dataset}: open a task with escrow."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "reward_pool", "rounds", "model", "dataset"))
    sender = identity.require_member(state, tx, identity.PUBLISHER)
    task_id = _task_id(payload)
    pool = int_field(payload, "reward_pool", 0, MAX_AMOUNT)
    rounds = int_field(payload, "rounds", 1, MAX_ROUNDS)
    model = str_field(payload, "model")
    dataset = str_field(payload, "dataset")
    if get_task(state, task_id) is not None:
        raise ContractError(f"task_id: {task_id!r} already exists")
    if pool > 0:
        calls.api("token", TokenApi).debit(state, sender, pool)
    state.set(
        NS,
        task_id,
        {
            "publisher": sender,
            "reward_pool": pool,
            "paid": 0,
            "rounds": rounds,
            "model": model,
            "dataset": dataset,
            "round": 0,
            "status": OPEN,
        },
    )
    return [
        Event(
            NAME,
            "published",
            {"task_id": task_id, "publisher": sender, "reward_pool": pool, "rounds": rounds},
        )
    ]


def record_update(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """task.record_update {task_id, round, blob, size, samples}: a device's local update."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "round", "blob", "size", "samples"))
    sender = identity.require_member(state, tx, identity.DEVICE)
    task_id = _task_id(payload)
    task = _open_task(state, task_id)
    round_ = _next_round(payload, task)
    blob = bytes_field(payload, "blob", BLOB_BYTES)
    size = int_field(payload, "size", 0, MAX_SIZE)
    samples = int_field(payload, "samples", 1, MAX_SIZE)
    key = update_key(task_id, round_, sender)
    if state.get_bytes(NS_UPDATE, key) is not None:
        raise ContractError(f"round: {sender!r} already recorded an update for round {round_}")
    state.set(NS_UPDATE, key, {"blob": blob.hex(), "size": size, "samples": samples})
    return [
        Event(
            NAME,
            "update",
            {
                "task_id": task_id,
                "round": round_,
                "node": sender,
                "blob": blob.hex(),
                "samples": samples,
            },
        )
    ]


def _contributors(state: State, payload: dict[str, Any], task_id: str, round_: int) -> list[str]:
    value = field_of(payload, "contributors")
    if not isinstance(value, list):
        raise ContractError(f"contributors: must be a list, not {type(value).__name__}")
    if len(value) > MAX_CONTRIBUTORS:
        raise ContractError(f"contributors: must name at most {MAX_CONTRIBUTORS} nodes")
    for node_id in value:
        identity.check_node_id(node_id, "contributors")
        if state.get_bytes(NS_UPDATE, update_key(task_id, round_, node_id)) is None:
            raise ContractError(f"contributors: {node_id!r} has no update for round {round_}")
    if len(set(value)) != len(value):
        raise ContractError("contributors: duplicate node id")
    return sorted(value)


def record_global(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """task.record_global {task_id, round, blob, size, accuracy, contributors}: close a round."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "round", "blob", "size", "accuracy", "contributors"))
    task_id = _task_id(payload)
    _, task = _own_open_task(state, tx, task_id)
    round_ = _next_round(payload, task)
    blob = bytes_field(payload, "blob", BLOB_BYTES)
    size = int_field(payload, "size", 0, MAX_SIZE)
    accuracy = float_field(payload, "accuracy", 0.0, 1.0)
    contributors = _contributors(state, payload, task_id, round_)
    state.set(
        NS_GLOBAL,
        global_key(task_id, round_),
        {
            "blob": blob.hex(),
            "size": size,
            "accuracy": accuracy,
            "contributors": contributors,
        },
    )
    task["round"] = round_
    state.set(NS, task_id, task)
    return [
        Event(
            NAME,
            "global",
            {
                "task_id": task_id,
                "round": round_,
                "blob": blob.hex(),
                "accuracy": accuracy,
                "contributors": contributors,
            },
        )
    ]


def reward(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """task.reward {task_id, to, amount}: the publisher pays a member from the escrow."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "to", "amount"))
    task_id = _task_id(payload)
    _own_open_task(state, tx, task_id)
    to = identity.check_node_id(field_of(payload, "to"), "to")
    amount = int_field(payload, "amount", 1, MAX_AMOUNT)
    if not identity.id_registered(state, to):
        raise ContractError(f"to: {to!r} is not registered")
    pay(state, calls, task_id, to, amount)
    return [Event(NAME, "reward", {"task_id": task_id, "to": to, "amount": amount})]


def pay(state: State, calls: Calls, task_id: str, to: str, amount: int) -> None:
    """Move `amount` (> 0) of open task `task_id`'s escrow to `to` (TokenApi.credit);
    ContractError if the task is not open or the amount exceeds what is left in escrow."""
    task = _open_task(state, task_id)
    pool = int(task["reward_pool"])
    if amount <= 0:
        raise ContractError(f"amount: {amount} must be > 0")
    if amount > pool:
        raise ContractError(f"amount: {amount} exceeds the reward pool ({pool})")
    calls.api("token", TokenApi).credit(state, to, amount)
    task["reward_pool"] = pool - amount
    task["paid"] = int(task["paid"]) + amount
    state.set(NS, task_id, task)


def close(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """task.close {task_id}: the publisher ends the task and gets the rest of the pool back."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id",))
    task_id = _task_id(payload)
    sender, task = _own_open_task(state, tx, task_id)
    refund = int(task["reward_pool"])
    if refund > 0:
        calls.api("token", TokenApi).credit(state, sender, refund)
    task["reward_pool"] = 0
    task["status"] = CLOSED
    state.set(NS, task_id, task)
    return [
        Event(NAME, "closed", {"task_id": task_id, "refund": refund, "round": int(task["round"])})
    ]


class TaskApi:
    """The task contract's internal API for other contracts (the incentive contract)."""

    pay = staticmethod(pay)
    get_task = staticmethod(get_task)


METHODS: dict[str, Method] = {
    "publish": publish,
    "record_update": record_update,
    "record_global": record_global,
    "reward": reward,
    "close": close,
}
API = TaskApi()

# The payload fields of each transaction type that hold a blob hash (weights stay off
# chain). The ledger's blob references (`node.ledger.blobrefs`) are derived from this.
# BEES (node/contracts/bees.py; its names written out here: that contract does not import
# this one): an ES signs its UEs' ``bees.update`` and keeps their weights; the round's
# proposer signs ``bees.aggregate`` and keeps the global model. `chain verify` expects each
# node to hold the blobs of the transactions it signed (node.ledger.blobrefs).
BLOB_FIELDS: dict[str, tuple[str, ...]] = {
    f"{NAME}.record_update": ("blob",),
    f"{NAME}.record_global": ("blob",),
    "bees.update": ("blob",),
    "bees.aggregate": ("global_blob",),
    # SFL (node/contracts/sfl.py): a device signs its update, the publisher the disclosed
    # test group and the aggregate.
    "sfl.submit_model_update": ("blob",),
    "sfl.disclosure_test_data": ("group_blob",),
    "sfl.aggregate_model_update": ("global_blob",),
}
# The types whose blobs every replica fetches (the global models); an update's blob stays
# with the device that signed it and the MEC it sent it to.
REPLICATED_BLOB_TYPES: tuple[str, ...] = (f"{NAME}.record_global",)
