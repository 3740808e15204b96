"""The BEES contract (paper 003, §III-B, Algorithm 1): edge-server reports, per-UE update
transactions, the Proof-of-Learning election check and the top-M FedAvg selection.

How it works
- State: ns "bees.report": ES id -> {"round", "samples", "capacity", "battery", "height"}
  (the ES's latest report: n_k, c_k, B_k of eq. 2); ns "bees.round": "current" -> the last
  elected round (absent: 0); ns "bees.elect": round -> {"es", "rank", "height", "updates"};
  ns "bees.update": "{round}/{ue}" -> {"es", "blob" hex, "accuracy", "samples"};
  ns "bees.global": round -> {"es", "blob" hex, "size", "selected", "samples"};
  ns "bees.config": "m" -> M (absent: DEFAULT_M); ns "bees.block": "last" -> the height of
  the last block that ran a bees transaction.
- A round is one block, and it starts with its election (our rule): the block's proposer
  posts `bees.elect {round, rank}` as the block's first bees transaction, claiming to be
  ranking[rank] of `ranking(state)` (I_k = n_k·c_k/B_k desc, ties by ES id asc, ES without a
  report last). The round's `bees.update` and `bees.aggregate` transactions must follow in
  the same block. A wrong claim, an election that is not the block's first bees
  transaction, or a round transaction without its election in this block raises TxRejected
  (reason BLOCK_INVALID): the runtime then refuses the whole block (`execute_block`
  re-raises; a proposer building a candidate leaves such a transaction out).
- Methods (callers: "mec" members, the paper's edge servers; `identity.require_member`):
  `bees.report {round, samples, capacity, battery}` once per ES per round, for a round not
      yet elected, rounds increasing; any block (our choice: an ES may report before round 1).
  `bees.update {round, ue, blob, accuracy, samples}` once per (round, UE), posted by the UE's
      ES (recorded as "es"), before the round's aggregate.
  `bees.elect {round, rank}` by the block's proposer; round = last elected + 1.
  `bees.aggregate {round, selected, global_blob, size}` by the round's elected ES, once:
      `selected` must equal `top_m(round_updates(state, round), M)` (accuracy desc, ties by
      UE id asc), else ContractError. The weighted average (eq. 3) is computed off chain
      with node.learning.aggregate.fedavg; the contract records its hash.
  `bees.configure {m}` by a "publisher" member before the first election (M = 1: B-EI).
- What it does not check (our choice): which UEs an ES serves (the ES's signature makes it
  accountable), nor whether rank r's turn had come (time is the PoL core's job, not the
  contract's: it checks only that the claim matches the chain's ranking).
"""

from __future__ import annotations

from dataclasses import dataclass
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
from node.contracts.errors import ContractError, TxRejected
from node.contracts.state import State
from node.core.tx import Transaction

NAME = "bees"
NS_REPORT = "bees.report"
NS_ROUND = "bees.round"
NS_ELECT = "bees.elect"
NS_UPDATE = "bees.update"
NS_GLOBAL = "bees.global"
NS_CONFIG = "bees.config"
NS_BLOCK = "bees.block"
ES = "mec"  # the paper's edge servers
UE = identity.DEVICE
DEFAULT_M = 10  # the paper's M
MAX_M = 1024
MAX_ROUNDS = 1_000_000
MAX_UPDATES = 4096  # per round (bounds the state one block can add)
MAX_SAMPLES = 2**53  # exact in a float64, so n_k·c_k/B_k is the same on every replica
MAX_NUMBER = 1e18
MAX_SIZE = 2**63 - 1
BLOB_BYTES = 32
# A block the election check refuses: LedgerError needs a reason from the ledger's REASONS,
# and none names elections; the election is the state-dependent half of the PoL
# certificate (the finality kind checks the proposer's signature), so we use this one.
BLOCK_INVALID = "bad_certificate"


@dataclass(frozen=True)
class Update:
    """One UE's update of one round, as its ES recorded it."""

    ue: str
    es: str
    blob: bytes
    accuracy: float
    samples: int


def importance(samples: int, capacity: float, battery: float) -> float:
    """I_k = n_k·c_k/B_k (eq. 2); float64, so every replica computes the same value."""
    if battery <= 0:
        raise ValueError(f"battery must be > 0, not {battery}")
    return float(samples) * float(capacity) / float(battery)


def _ranked(state: State) -> list[tuple[float, str]]:
    reports = dict(state.items(NS_REPORT))
    out = []
    for _key, entry in state.items(identity.NS):
        if entry["role"] != ES:
            continue
        es = str(entry["id"])
        report = reports.get(es)
        score = (
            -1.0  # unreported: after every reported ES (importance >= 0)
            if report is None
            else importance(report["samples"], report["capacity"], report["battery"])
        )
        out.append((score, es))
    return out


def ranking(state: State) -> tuple[str, ...]:
    """The registered ES ids, best first: I desc, ties by id asc (our choice), ES without a
    report last (by id)."""
    return tuple(es for _, es in sorted(_ranked(state), key=lambda item: (-item[0], item[1])))


def top_m(updates: list[Update], m: int) -> tuple[str, ...]:
    """The UE ids of the `m` best updates: accuracy desc, ties by UE id asc (our choice)."""
    best = sorted(updates, key=lambda u: (-u.accuracy, u.ue))
    return tuple(u.ue for u in best[:m])


def round_updates(state: State, round_: int) -> list[Update]:
    """The updates recorded for `round_`, by UE id."""
    prefix = f"{round_}/"
    return [
        Update(
            ue=key[len(prefix) :],
            es=str(v["es"]),
            blob=bytes.fromhex(v["blob"]),
            accuracy=float(v["accuracy"]),
            samples=int(v["samples"]),
        )
        for key, v in state.items(NS_UPDATE)
        if key.startswith(prefix)
    ]


def global_of(state: State, round_: int) -> dict[str, Any] | None:
    """The round's aggregate {"es", "blob" (hex), "size", "selected", "samples"}, or None."""
    entry: dict[str, Any] | None = state.get(NS_GLOBAL, str(round_))
    return entry


def m_of(state: State) -> int:
    """M: how many updates the aggregate averages (DEFAULT_M unless configured)."""
    return int(state.get(NS_CONFIG, "m", DEFAULT_M))


def current_round(state: State) -> int:
    """The last elected round (0 before the first election)."""
    return int(state.get(NS_ROUND, "current", 0))


def election(state: State, round_: int) -> dict[str, Any] | None:
    """The round's election {"es", "rank", "height", "updates"}, or None."""
    entry: dict[str, Any] | None = state.get(NS_ELECT, str(round_))
    return entry


def _invalid(detail: str) -> TxRejected:
    return TxRejected(BLOCK_INVALID, f"bees: {detail}")


def _touch_block(state: State, ctx: BlockContext) -> None:
    state.set(NS_BLOCK, "last", ctx.height)


def _elected_here(state: State, ctx: BlockContext, round_: int) -> dict[str, Any]:
    """The round's election, which must be in this block; else TxRejected (block invalid)."""
    entry = election(state, round_)
    if entry is None or entry["height"] != ctx.height:
        raise _invalid(f"round {round_}'s transactions without its election first in the block")
    return entry


def report(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """bees.report {round, samples, capacity, battery}: an ES's n_k, c_k (cycles/s), B_k (J)."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "samples", "capacity", "battery"))
    es = identity.require_member(state, tx, ES)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    samples = int_field(payload, "samples", 0, MAX_SAMPLES)
    capacity = float_field(payload, "capacity", 0.0, MAX_NUMBER)
    battery = float_field(payload, "battery", 0.0, MAX_NUMBER)
    if battery <= 0:
        raise ContractError("battery: must be > 0")
    if round_ <= current_round(state):
        raise ContractError(f"round: {round_} is already elected")
    last = state.get(NS_REPORT, es)
    if last is not None and round_ <= last["round"]:
        raise ContractError(f"round: {es!r} already reported round {last['round']}")
    entry = {
        "round": round_,
        "samples": samples,
        "capacity": capacity,
        "battery": battery,
        "height": ctx.height,
    }
    state.set(NS_REPORT, es, entry)
    _touch_block(state, ctx)
    score = importance(samples, capacity, battery)
    return [Event(NAME, "report", {"round": round_, "es": es, "importance": score})]


def elect(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """bees.elect {round, rank}: the block's proposer is ranking[rank]; else the block is
    invalid (every failure here raises TxRejected, a bad payload included: our choice, an
    election is either right or its block is refused)."""
    if tx.sender != ctx.proposer:
        raise _invalid("bees.elect not sent by the block's proposer")
    payload: dict[str, Any] = tx.payload
    try:
        no_extra_fields(payload, ("round", "rank"))
        es = identity.require_member(state, tx, ES)
        round_ = int_field(payload, "round", 1, MAX_ROUNDS)
        rank = int_field(payload, "rank", 0, MAX_ROUNDS)
    except ContractError as exc:
        raise _invalid(f"bees.elect: {exc}") from None
    if state.get(NS_BLOCK, "last") == ctx.height:
        raise _invalid("bees.elect is not the block's first bees transaction")
    if round_ != current_round(state) + 1:
        raise _invalid(f"bees.elect round {round_}, expected {current_round(state) + 1}")
    order = ranking(state)
    if rank >= len(order) or order[rank] != es:
        winner = order[rank] if rank < len(order) else None
        raise _invalid(f"{es!r} is not rank {rank} of round {round_} (that is {winner!r})")
    state.set(NS_ROUND, "current", round_)
    state.set(NS_ELECT, str(round_), {"es": es, "rank": rank, "height": ctx.height, "updates": 0})
    _touch_block(state, ctx)
    return [Event(NAME, "elected", {"round": round_, "es": es, "rank": rank})]


def update(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """bees.update {round, ue, blob, accuracy, samples}: one UE's update, posted by its ES."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "ue", "blob", "accuracy", "samples"))
    es = identity.require_member(state, tx, ES)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    entry = _elected_here(state, ctx, round_)
    ue = identity.check_node_id(str_field(payload, "ue", 32), "ue")
    blob = bytes_field(payload, "blob", BLOB_BYTES)
    accuracy = float_field(payload, "accuracy", 0.0, 1.0)
    samples = int_field(payload, "samples", 1, MAX_SAMPLES)
    ue_key = identity.key_of(state, ue)
    if ue_key is not None and identity.role_of(state, ue_key) != UE:
        raise ContractError(f"ue: {ue!r} is registered, but not as a {UE!r}")
    if global_of(state, round_) is not None:
        raise ContractError(f"round: {round_} is already aggregated")
    key = f"{round_}/{ue}"
    if state.get_bytes(NS_UPDATE, key) is not None:
        raise ContractError(f"ue: {ue!r} already has an update in round {round_}")
    if entry["updates"] >= MAX_UPDATES:
        raise ContractError(f"round: {round_} already has {MAX_UPDATES} updates")
    value = {"es": es, "blob": blob.hex(), "accuracy": accuracy, "samples": samples}
    state.set(NS_UPDATE, key, value)
    state.set(NS_ELECT, str(round_), {**entry, "updates": entry["updates"] + 1})
    _touch_block(state, ctx)
    return [Event(NAME, "update", {"round": round_, "ue": ue, "es": es, "accuracy": accuracy})]


def _selected(payload: dict[str, Any]) -> tuple[str, ...]:
    value = field_of(payload, "selected")
    if not isinstance(value, list) or len(value) > MAX_M:
        raise ContractError(f"selected: must be a list of at most {MAX_M} UE ids")
    return tuple(identity.check_node_id(ue, "selected") for ue in value)


def aggregate(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """bees.aggregate {round, selected, global_blob, size}: the elected ES records the round's
    global model, averaged over the top-M updates it names."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "selected", "global_blob", "size"))
    es = identity.require_member(state, tx, ES)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    entry = _elected_here(state, ctx, round_)
    if entry["es"] != es or tx.sender != ctx.proposer:
        raise _invalid(f"bees.aggregate of round {round_} not by its elected ES {entry['es']!r}")
    selected = _selected(payload)
    blob = bytes_field(payload, "global_blob", BLOB_BYTES)
    size = int_field(payload, "size", 0, MAX_SIZE)
    if global_of(state, round_) is not None:
        raise ContractError(f"round: {round_} is already aggregated")
    updates = round_updates(state, round_)
    if not updates:
        raise ContractError(f"round: {round_} has no updates to aggregate")
    expected = top_m(updates, m_of(state))
    if selected != expected:
        raise ContractError(f"selected: {list(selected)} is not the top-M {list(expected)}")
    chosen = set(expected)
    total = sum(u.samples for u in updates if u.ue in chosen)
    record = {"es": es, "blob": blob.hex(), "size": size, "selected": list(expected)}
    state.set(NS_GLOBAL, str(round_), {**record, "samples": total})
    _touch_block(state, ctx)
    return [Event(NAME, "global", {"round": round_, "es": es, "blob": blob.hex()})]


def configure(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """bees.configure {m}: a publisher sets M before the first election (1: B-EI).

    Our choice: the genesis (node.contracts.genesis.Genesis) carries no contract parameters,
    so M is set by a transaction (like `reputation.configure`) and fixed from round 1 on.
    """
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("m",))
    by = identity.require_member(state, tx, identity.PUBLISHER)
    m = int_field(payload, "m", 1, MAX_M)
    if current_round(state) > 0:
        raise ContractError("configure: a round is elected; M is fixed now")
    state.set(NS_CONFIG, "m", m)
    return [Event(NAME, "configured", {"m": m, "by": by})]


class BeesApi:
    """The BEES contract's reads for other contracts, the roles and the PoL core."""

    importance = staticmethod(importance)
    ranking = staticmethod(ranking)
    top_m = staticmethod(top_m)
    round_updates = staticmethod(round_updates)
    global_of = staticmethod(global_of)
    m_of = staticmethod(m_of)
    current_round = staticmethod(current_round)
    election = staticmethod(election)


METHODS: dict[str, Method] = {
    "report": report,
    "update": update,
    "elect": elect,
    "aggregate": aggregate,
    "configure": configure,
}
API = BeesApi()
