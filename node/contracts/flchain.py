"""The FLchain contract: a global-model state trie per channel, written by the channel's MECs.

How it works
- State: ns "flchain.updates": "{task}/{channel}/{round}/{mec}" -> {"updates": [[node, blob
  hex, samples], ...]} (the local updates a MEC stores for its devices, as it shares them
  with its channel; sorted by node); ns "flchain.global": "{task}/{channel}/{round}" ->
  {"blob": hex, "size": int, "holders": [mec ids, sorted]} (the channel's global model of
  that round and the MECs that computed and hold it: the "global model state trie").
- Methods and callers (a "mec" member each):
  `flchain.record_updates` {task_id, channel, round, updates}: once per (task, channel,
      round, MEC).
  `flchain.record_global` {task_id, channel, round, blob, size}: the MEC holds the
      channel's global model of that round. The first record fixes the entry; a MEC whose
      model differs is reverted (its disagreement stays visible as a failed receipt); once
      per MEC.
- What it does not check (FLchain's own trust model, our reading of it): that the updates a
  MEC records are what its devices signed (the devices' ``task.record_update`` transactions
  sit beside them on the chain, so an audit can compare them afterwards), which MECs form a
  channel, and the task's round (the task contract keeps rounds). Blobs are 32-byte hashes;
  weights stay off chain.
"""

from __future__ import annotations

from typing import Any

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
from node.contracts.task import BLOB_BYTES, MAX_CONTRIBUTORS, MAX_ROUNDS, MAX_SIZE, TASK_ID_RE
from node.core.tx import Transaction

NAME = "flchain"
NS_UPDATES = "flchain.updates"
NS_GLOBAL = "flchain.global"
MEC = "mec"
MAX_CHANNELS = 1024


def global_key(task_id: str, channel: int, round_: int) -> str:
    """The "flchain.global" key of a channel's global model in one round."""
    return f"{task_id}/{channel}/{round_}"


def updates_key(task_id: str, channel: int, round_: int, mec: str) -> str:
    """The "flchain.updates" key of the updates one MEC recorded in one round."""
    return f"{task_id}/{channel}/{round_}/{mec}"


def channel_global(state: State, task_id: str, channel: int, round_: int) -> dict[str, Any] | None:
    """The state trie's entry of `channel`'s global model of `round_`, or None."""
    entry: dict[str, Any] | None = state.get(NS_GLOBAL, global_key(task_id, channel, round_))
    return entry


def _common(payload: dict[str, Any]) -> tuple[str, int, int]:
    task_id = str_field(payload, "task_id", 64)
    if not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    channel = int_field(payload, "channel", 0, MAX_CHANNELS - 1)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    return task_id, channel, round_


def _updates(payload: dict[str, Any]) -> list[list[Any]]:
    value = field_of(payload, "updates")
    if not isinstance(value, list) or len(value) > MAX_CONTRIBUTORS:
        raise ContractError(f"updates: must be a list of at most {MAX_CONTRIBUTORS} entries")
    out: list[list[Any]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3):
            raise ContractError("updates: each entry must be [node, blob, samples]")
        node, blob, samples = item
        identity.check_node_id(node, "updates")
        if not isinstance(blob, bytes) or len(blob) != BLOB_BYTES:
            raise ContractError(f"updates: blob of {node!r} must be {BLOB_BYTES} bytes")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples <= 0:
            raise ContractError(f"updates: samples of {node!r} must be a positive integer")
        out.append([node, blob.hex(), samples])
    nodes = [u[0] for u in out]
    if len(set(nodes)) != len(nodes):
        raise ContractError("updates: duplicate node id")
    return sorted(out)


def record_updates(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """flchain.record_updates {task_id, channel, round, updates}: a MEC's stored updates."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "channel", "round", "updates"))
    sender = identity.require_member(state, tx, MEC)
    task_id, channel, round_ = _common(payload)
    updates = _updates(payload)
    key = updates_key(task_id, channel, round_, sender)
    if state.get_bytes(NS_UPDATES, key) is not None:
        raise ContractError(f"round: {sender!r} already recorded its updates for round {round_}")
    state.set(NS_UPDATES, key, {"updates": updates})
    return [
        Event(
            NAME,
            "updates",
            {
                "task_id": task_id,
                "channel": channel,
                "round": round_,
                "mec": sender,
                "count": len(updates),
            },
        )
    ]


def record_global(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """flchain.record_global {task_id, channel, round, blob, size}: a MEC holds the model."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "channel", "round", "blob", "size"))
    sender = identity.require_member(state, tx, MEC)
    task_id, channel, round_ = _common(payload)
    blob = bytes_field(payload, "blob", BLOB_BYTES).hex()
    size = int_field(payload, "size", 0, MAX_SIZE)
    key = global_key(task_id, channel, round_)
    entry = channel_global(state, task_id, channel, round_)
    if entry is None:
        entry = {"blob": blob, "size": size, "holders": []}
    elif entry["blob"] != blob or entry["size"] != size:
        first = entry["holders"][0]
        raise ContractError(f"blob: differs from channel {channel}'s model recorded by {first!r}")
    if sender in entry["holders"]:
        raise ContractError(f"round: {sender!r} already holds round {round_}'s model")
    entry["holders"] = sorted([*entry["holders"], sender])
    state.set(NS_GLOBAL, key, entry)
    return [
        Event(
            NAME,
            "global",
            {"task_id": task_id, "channel": channel, "round": round_, "mec": sender, "blob": blob},
        )
    ]


METHODS: dict[str, Method] = {"record_updates": record_updates, "record_global": record_global}
API = None
