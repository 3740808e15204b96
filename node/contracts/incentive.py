"""The incentive contract: the two-layer paper's Table 1 rewards, paid per round from escrow.

How it works
- Contract items (contract theory, the paper's ref. [14]): the task's publisher clusters the
  devices off chain by their reputation and behaviour history (`node.schemes.device_types`,
  scikit-learn KMeans) and offers one item per device type, each with a reputation floor
  and a reward multiplier. A device signs one item; it may not sign an item whose floor is
  above its reputation (`ReputationApi.reputation_ppm`).
- Reward of device i in round r (exact fractions, each amount floored; our formula, the
  paper names the factors only):
      FL_i = S * q_i * (w_samples * samples_i / SUM samples
                        + w_computation * cpu_mhz_i / SUM cpu_mhz
                        + w_energy * energy_mj_i / SUM energy_mj)
      BC_i = w_mining * blocks_i / SUM blocks + w_relay * relay_bytes_i / SUM relay_bytes
      amount_i = floor(B * m_i * (FL_i + BC_i))
  q_i: the update-quality score the MEC reports (data quality, in [0, 1]); S = min(1,
  ref_ms / duration_ms): task satisfaction, inversely proportional to the round's duration;
  energy is compensated (a device spending more is paid more); blocks: LMUC blocks the
  device co-signed (mining); relay_bytes: bytes it relayed over D2D; m_i: its item's
  multiplier (in (0, 1]); sums over the round's reports (a zero sum makes its term 0).
  B: the round budget, `round_budget` if the offer sets one, else the escrow left divided
  evenly over the rounds left (pool // (rounds - r + 1)); never more than the escrow; fixed
  by the round's first payment. Several payers may pay one round, each once, for its own
  devices (the two-layer scheme: each MEC pays for its devices): a MEC's share is
  B // (the chain's "mec" members), the publisher's is what is left of B; the sums run over
  one payer's reports (our choice: a MEC measures only its own devices). A payer never
  pays more than min(its share, B - already paid in the round), since the weights sum to
  at most 1 and every m_i <= 1; what is not paid stays in escrow (`task.close` refunds it).
  Defaults (ours): w_samples 0.4, w_computation 0.15, w_energy 0.15, w_mining 0.15,
  w_relay 0.15; ref_ms 60000.
- Not paid (listed with a reason in the ``paid`` event): a device whose reputation event of
  this (task, round) is negative (it misbehaved: ``negative_event``), one that signed no
  item (``no_contract``) or an item no longer offered (``withdrawn_item``), one whose
  reputation fell below its item's floor (``below_floor``), an amount that rounds to 0
  (``zero``), one already reported for this round by another payer (``already_reported``),
  one whose task response (`node.contracts.gmuc_request`) names another MEC than the
  reporting one (``not_its_device``: a MEC reports only its own devices).
  Where the chain records the round's GMUC vote (`node.contracts.gmuc`): a report by a MEC
  the vote outvoted is refused (a malfunctioning MEC's figures are not trusted); when no
  aggregate was decided nobody is paid (``undecided``); a device that trained (samples > 0)
  but is not among the decided aggregate's contributors is not paid (``rejected``).
- State: ns "incentive.offer": task id -> {"items": {name: {"type": int, "floor": ppm,
  "multiplier": ppm}}, "weights": {name: ppm}, "round_budget": int (0: spread),
  "ref_ms": int}; ns "incentive.signed": "{task}/{device}" -> {"item": name};
  ns "incentive.paid": "{task}/{round}" -> {"budget": int, "total": int,
  "paid": {device: amount}, "unpaid": {device: reason}, "payers": {payer id: total}}.
- Methods and callers:
  `incentive.offer` {task_id, items: [{name, type, floor, multiplier}], weights?,
      round_budget?, ref_ms?} — the task's publisher; replaces the task's offer.
  `incentive.sign` {task_id, item} — a "device" member; replaces its earlier signature.
  `incentive.pay` {task_id, round, duration_ms, reports: [[device, {quality, samples,
      cpu_mhz, energy_mj, blocks, relay_bytes}], ...]} — the task's publisher or a "mec"
      member; once per (task, round, payer), 1 <= round <= the task's rounds; record the
      round's reputation events and votes first (they decide who misbehaved). Pays each
      amount from the task's escrow to the device through the task contract's internal API
      (`TaskApi.pay`, which credits the token ledger).
- Invariants: the task's reward_pool + paid == what it escrowed (as in the task contract);
  a round's total <= its budget <= the escrow before it; every floor and multiplier is in
  millionths, floors in [0, 1], multipliers in (0, 1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from node.contracts import gmuc, gmuc_request, identity
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    field_of,
    float_field,
    int_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.reputation import SCALE, ReputationApi
from node.contracts.state import State
from node.contracts.task import MAX_ROUNDS, OPEN, TASK_ID_RE, TaskApi, get_task
from node.contracts.token import MAX_AMOUNT
from node.core.tx import Transaction

NAME = "incentive"
NS_OFFER = "incentive.offer"
NS_SIGNED = "incentive.signed"
NS_PAID = "incentive.paid"
MEC = "mec"
ITEM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
MAX_ITEMS = 64
MAX_REPORTS = 1024
MAX_TYPE = 1024
MAX_MS = 10**12
MAX_COUNT = 2**63 - 1
DEFAULT_WEIGHTS: dict[str, int] = {
    "samples": 400_000,
    "computation": 150_000,
    "energy": 150_000,
    "mining": 150_000,
    "relay": 150_000,
}
DEFAULT_REF_MS = 60_000
REPORT_FIELDS = ("quality", "samples", "cpu_mhz", "energy_mj", "blocks", "relay_bytes")


@dataclass(frozen=True)
class Report:
    """What the MEC measured of one device in one round (Table 1's factors)."""

    device: str
    quality: float  # update-quality score in [0, 1]
    samples: int
    cpu_mhz: int
    energy_mj: int
    blocks: int  # LMUC blocks co-signed
    relay_bytes: int  # bytes relayed over D2D

    def to_obj(self) -> list[Any]:
        """The `incentive.pay` payload form."""
        return [self.device, {f: getattr(self, f) for f in REPORT_FIELDS}]


def offer_of(state: State, task_id: str) -> dict[str, Any] | None:
    """The task's current offer, or None."""
    offer: dict[str, Any] | None = state.get(NS_OFFER, task_id)
    return offer


def signed_item(state: State, task_id: str, device: str) -> str | None:
    """The item `device` signed for the task, or None."""
    entry = state.get(NS_SIGNED, f"{task_id}/{device}")
    return None if entry is None else str(entry["item"])


def payment(state: State, task_id: str, round_: int) -> dict[str, Any] | None:
    """The recorded payment of (task, round), or None."""
    paid: dict[str, Any] | None = state.get(NS_PAID, f"{task_id}/{round_}")
    return paid


def _share(part: int, total: int) -> Fraction:
    return Fraction(0) if total == 0 else Fraction(part, total)


def amounts(
    budget: int,
    weights: Mapping[str, int],
    ref_ms: int,
    duration_ms: int,
    reports: list[Report],
    multipliers: Mapping[str, int],
) -> dict[str, int]:
    """The formula of the module docstring: device -> floor(B * m * (FL + BC)), for the
    devices in `multipliers` (weights and multipliers in millionths)."""
    w = {k: Fraction(v, SCALE) for k, v in weights.items()}
    satisfaction = min(Fraction(1), Fraction(ref_ms, duration_ms))
    totals = {
        f: sum(getattr(r, f) for r in reports)
        for f in ("samples", "cpu_mhz", "energy_mj", "blocks", "relay_bytes")
    }
    out: dict[str, int] = {}
    for r in reports:
        if r.device not in multipliers:
            continue
        fl = (
            satisfaction
            * Fraction(r.quality)
            * (
                w["samples"] * _share(r.samples, totals["samples"])
                + w["computation"] * _share(r.cpu_mhz, totals["cpu_mhz"])
                + w["energy"] * _share(r.energy_mj, totals["energy_mj"])
            )
        )
        bc = w["mining"] * _share(r.blocks, totals["blocks"]) + w["relay"] * _share(
            r.relay_bytes, totals["relay_bytes"]
        )
        out[r.device] = math.floor(budget * Fraction(multipliers[r.device], SCALE) * (fl + bc))
    return out


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


def _ppm(payload: dict[str, Any], name: str, lo: float, hi: float) -> int:
    return round(float_field(payload, name, lo, hi) * SCALE)


def _items(payload: dict[str, Any]) -> dict[str, dict[str, int]]:
    value = field_of(payload, "items")
    if not isinstance(value, list) or not value:
        raise ContractError("items: must be a non-empty list of {name, type, floor, multiplier}")
    if len(value) > MAX_ITEMS:
        raise ContractError(f"items: at most {MAX_ITEMS}")
    items: dict[str, dict[str, int]] = {}
    for item in value:
        if not isinstance(item, dict):
            raise ContractError("items: each must be a map {name, type, floor, multiplier}")
        no_extra_fields(item, ("name", "type", "floor", "multiplier"))
        name = str_field(item, "name", 32)
        if not ITEM_RE.fullmatch(name):
            raise ContractError(f"name: {name!r} must match {ITEM_RE.pattern}")
        if name in items:
            raise ContractError(f"name: duplicate item {name!r}")
        multiplier = _ppm(item, "multiplier", 0.0, 1.0)
        if multiplier == 0:
            raise ContractError("multiplier: must be > 0")
        items[name] = {
            "type": int_field(item, "type", 0, MAX_TYPE),
            "floor": _ppm(item, "floor", 0.0, 1.0),
            "multiplier": multiplier,
        }
    return dict(sorted(items.items()))


def _weights(payload: dict[str, Any]) -> dict[str, int]:
    if "weights" not in payload:
        return dict(DEFAULT_WEIGHTS)
    value = payload["weights"]
    if not isinstance(value, dict):
        raise ContractError(f"weights: must be a map of {', '.join(DEFAULT_WEIGHTS)}")
    no_extra_fields(value, tuple(DEFAULT_WEIGHTS))
    weights = dict(DEFAULT_WEIGHTS)
    for name in value:
        weights[name] = _ppm(value, name, 0.0, 1.0)
    if sum(weights.values()) > SCALE:
        raise ContractError("weights: must sum to at most 1")
    return weights


def offer(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """incentive.offer {task_id, items, weights?, round_budget?, ref_ms?}: post the items."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "items", "weights", "round_budget", "ref_ms"))
    sender = identity.require_member(state, tx)
    task_id = _task_id(payload)
    task = _open_task(state, task_id)
    if task["publisher"] != sender:
        raise ContractError(f"sender: only the publisher of {task_id!r} may call this")
    items = _items(payload)
    weights = _weights(payload)
    budget = int_field(payload, "round_budget", 0, MAX_AMOUNT) if "round_budget" in payload else 0
    ref_ms = int_field(payload, "ref_ms", 1, MAX_MS) if "ref_ms" in payload else DEFAULT_REF_MS
    record = {"items": items, "weights": weights, "round_budget": budget, "ref_ms": ref_ms}
    state.set(NS_OFFER, task_id, record)
    return [Event(NAME, "offer", {"task_id": task_id, **record})]


def sign(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """incentive.sign {task_id, item}: a device signs an item whose floor it reaches."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "item"))
    device = identity.require_member(state, tx, identity.DEVICE)
    task_id = _task_id(payload)
    _open_task(state, task_id)
    name = str_field(payload, "item", 32)
    current = offer_of(state, task_id)
    if current is None:
        raise ContractError(f"task_id: {task_id!r} offers no items")
    item = current["items"].get(name)
    if item is None:
        raise ContractError(f"item: {name!r} is not one of {', '.join(current['items'])}")
    have = calls.api("reputation", ReputationApi).reputation_ppm(state, device)
    if have < int(item["floor"]):
        raise ContractError(
            f"item: reputation of {device!r} ({have / SCALE:.6f}) is below the floor of "
            f"{name!r} ({int(item['floor']) / SCALE:.6f})"
        )
    state.set(NS_SIGNED, f"{task_id}/{device}", {"item": name})
    return [Event(NAME, "signed", {"task_id": task_id, "device": device, "item": name})]


def _reports(state: State, payload: dict[str, Any]) -> list[Report]:
    value = field_of(payload, "reports")
    if not isinstance(value, list) or not value:
        raise ContractError("reports: must be a non-empty list of [device, {factors}]")
    if len(value) > MAX_REPORTS:
        raise ContractError(f"reports: at most {MAX_REPORTS}")
    out: list[Report] = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], dict):
            raise ContractError("reports: each must be [device, {factors}]")
        device = identity.check_node_id(entry[0], "reports")
        key = identity.key_of(state, device)
        if key is None or identity.role_of(state, key) != identity.DEVICE:
            raise ContractError(f"reports: {device!r} is not a registered device")
        factors: dict[str, Any] = entry[1]
        no_extra_fields(factors, REPORT_FIELDS)
        out.append(
            Report(
                device,
                float_field(factors, "quality", 0.0, 1.0),
                int_field(factors, "samples", 0, MAX_COUNT),
                int_field(factors, "cpu_mhz", 0, MAX_COUNT),
                int_field(factors, "energy_mj", 0, MAX_COUNT),
                int_field(factors, "blocks", 0, MAX_COUNT),
                int_field(factors, "relay_bytes", 0, MAX_COUNT),
            )
        )
    if len({r.device for r in out}) != len(out):
        raise ContractError("reports: duplicate device")
    return out


def _verdicts(state: State, task_id: str, round_: int, sender: str) -> dict[str, Any] | None:
    """The round's GMUC tally when the chain has one (None: no vote recorded); refuses a
    report by a MEC the vote outvoted."""
    tally = gmuc.get_round(state, task_id, round_)
    if tally is not None and sender in tally["outvoted"]:
        raise ContractError(
            f"sender: MEC {sender!r} was outvoted in round {round_} of {task_id!r}; "
            "its report is refused"
        )
    return tally


def _why_unpaid(
    state: State,
    calls: Calls,
    r: Report,
    task_id: str,
    round_: int,
    record: dict[str, Any],
    tally: dict[str, Any] | None,
    item: dict[str, Any] | None,
    signed: bool,
    payer: str,
    payer_is_mec: bool,
) -> str | None:
    """Why device `r.device` is not paid this round (None: it is eligible)."""
    reputation = calls.api("reputation", ReputationApi)
    if r.device in record["paid"] or r.device in record["unpaid"]:
        return "already_reported"
    response = gmuc_request.get_response(state, task_id, r.device)
    if payer_is_mec and response is not None and response["mec"] != payer:
        return "not_its_device"
    if reputation.event(state, task_id, round_, r.device) is False:
        return "negative_event"
    if tally is not None and not tally["aggregate"]:
        return "undecided"
    if tally is not None and r.samples > 0 and r.device not in tally["contributors"]:
        return "rejected"
    if not signed:
        return "no_contract"
    if item is None:
        return "withdrawn_item"
    if reputation.reputation_ppm(state, r.device) < int(item["floor"]):
        return "below_floor"
    return None


def pay(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """incentive.pay {task_id, round, duration_ms, reports}: pay one payer's devices for a
    round (the module docstring: shares, who is not paid)."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "round", "duration_ms", "reports"))
    sender = identity.require_member(state, tx)
    task_id = _task_id(payload)
    task = _open_task(state, task_id)
    is_mec = identity.role_of(state, tx.sender) == MEC
    if task["publisher"] != sender and not is_mec:
        raise ContractError(f"sender: only the publisher of {task_id!r} or a MEC may pay")
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    if round_ > int(task["rounds"]):
        raise ContractError(f"round: {round_} is beyond task {task_id!r} ({task['rounds']})")
    record = payment(state, task_id, round_)
    if record is not None and sender in record["payers"]:
        raise ContractError(f"round: round {round_} of {task_id!r} is already paid by {sender!r}")
    duration_ms = int_field(payload, "duration_ms", 1, MAX_MS)
    reports = _reports(state, payload)
    current = offer_of(state, task_id)
    if current is None:
        raise ContractError(f"task_id: {task_id!r} offers no items")
    tally = _verdicts(state, task_id, round_, sender)
    pool = int(task["reward_pool"])
    if record is None:
        rounds_left = max(1, int(task["rounds"]) - round_ + 1)
        budget = min(pool, int(current["round_budget"]) or pool // rounds_left)
        record = {"budget": budget, "total": 0, "paid": {}, "unpaid": {}, "payers": {}}
    budget = int(record["budget"])
    left = min(pool, budget - int(record["total"]))
    share = min(left, budget // max(1, gmuc.mec_count(state)) if is_mec else left)
    multipliers: dict[str, int] = {}
    items: dict[str, str] = {}
    unpaid: dict[str, str] = {}
    for r in reports:
        name = signed_item(state, task_id, r.device)
        item = None if name is None else current["items"].get(name)
        why = _why_unpaid(
            state, calls, r, task_id, round_, record, tally, item, name is not None, sender, is_mec
        )
        if why is not None:
            unpaid[r.device] = why
        else:
            multipliers[r.device] = int(item["multiplier"]) if item else 0
            items[r.device] = str(name)
    due = amounts(
        share, current["weights"], int(current["ref_ms"]), duration_ms, reports, multipliers
    )
    paid: dict[str, int] = {}
    escrow = calls.api("task", TaskApi)
    for device, amount in sorted(due.items()):
        if amount <= 0:
            unpaid[device] = "zero"
            continue
        escrow.pay(state, calls, task_id, device, amount)
        paid[device] = amount
    total = sum(paid.values())
    record["total"] = int(record["total"]) + total
    record["paid"] = dict(sorted({**record["paid"], **paid}.items()))
    record["unpaid"] = dict(sorted({**record["unpaid"], **unpaid}.items()))
    record["payers"] = dict(sorted({**record["payers"], sender: total}.items()))
    state.set(NS_PAID, f"{task_id}/{round_}", record)
    return [
        Event(
            NAME,
            "paid",
            {
                "task_id": task_id,
                "round": round_,
                "payer": sender,
                "budget": budget,
                "share": share,
                "total": total,
                "paid": [[d, a, items[d]] for d, a in sorted(paid.items())],
                "unpaid": [[d, why] for d, why in sorted(unpaid.items())],
            },
        )
    ]


class IncentiveApi:
    """The incentive contract's internal API (reads) for other contracts and roles."""

    offer_of = staticmethod(offer_of)
    signed_item = staticmethod(signed_item)
    payment = staticmethod(payment)


METHODS: dict[str, Method] = {"offer": offer, "sign": sign, "pay": pay}
API = IncentiveApi()
