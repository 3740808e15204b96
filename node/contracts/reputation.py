"""The reputation contract: a subjective-logic opinion of every device, from MECs' checks.

How it works
- Model: Jøsang's subjective logic in the form of Kang et al. (IEEE IoT J. 2019, the
  two-layer paper's ref. [6]; the paper itself only says "reputation opinions from
  interaction histories"). A device's evidence is the weighted, time-faded sum of its
  positive events (alpha) and negative events (beta); with link quality q, base rate a
  and prior weight W (all parameters, see `Params`):
      n = alpha + beta
      c = q * n / (n + W)              (c = q when W = 0: Kang's u = 1 - q)
      belief b = c * alpha / n,  disbelief d = c * beta / n,  uncertainty u = 1 - c
      (n = 0: b = d = 0, u = 1)
      reputation T = b + a * u         (in [0, 1])
  A positive event adds the positive weight kappa, a negative one the negative weight eta
  (Kang: eta > kappa, kappa + eta = 1, so one misbehaviour costs more than one good round
  earns). Freshness: before an event of round r of task t is added, the device's alpha and
  beta are multiplied by fading^(r - r_last), r_last being the last round of t that
  reported on this device (a task's first report counts as one round); an event of a round
  before r_last (a late report) is added with weight kappa|eta * fading^(r_last - r).
- Our choices (the paper is silent): the defaults fading 0.9, kappa 0.3, eta 0.7,
  q 0.9, a 0.5, W 0 (W > 0 adds Jøsang's evidence-count uncertainty, not in Kang's form);
  one record per device for all tasks and shards (the paper's "GMUC keeps the reputation
  records of the devices aggregated from different shards"): every task that reports on a
  device advances its clock by its own rounds, and each event records the task and the
  reporting MEC; each (task, round, device) is judged once.
- Determinism: alpha and beta are stored as integers in millionths (fixed point, SCALE);
  fading^k is an integer power by squaring with a floor at each step; the opinion is
  computed exactly (fractions.Fraction) from the stored integers and only turned into a
  float (correctly rounded) when it is read, so every replica stores the same bytes.
- State: ns "reputation": device id -> {"pos": int, "neg": int (alpha, beta in
  millionths), "n_pos": int, "n_neg": int (event counts), "clock": {task id: last round}};
  ns "reputation.event": "{task}/{round}/{device}" -> {"positive": bool, "by": MEC id};
  ns "reputation.params": "params" -> Params as ints in millionths (absent: the defaults;
  a chain that never calls this contract has no row of it, so its state root is unchanged).
- Methods and callers:
  `reputation.record` {task_id, round, events: [[device, positive], ...]} — a "mec"
      member; the task exists on this chain and is open, 1 <= round <= its rounds (its
      recorded round is not required: the GMUC may decide rounds elsewhere); devices are
      distinct valid node ids (a registered one must be a "device"); each (task, round,
      device) once. Emits ``recorded`` with each device's new
      reputation (millionths).
  `reputation.configure` {fading, positive_weight, negative_weight, link_quality,
      base_rate, prior_weight} (each optional) — a "publisher" member, only before the
      first event is recorded.
- Reads (other contracts and roles): `ReputationApi` (`reputation`, `reputation_ppm`,
  `opinion`, `reputations`, `event`, `params`) and the pure `select_workers`.
- Invariants: 0 <= pos, neg; n_pos + n_neg == the device's rows in "reputation.event";
  0 <= T <= 1; a device without a record has T = a.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from node.contracts import identity
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    field_of,
    float_field,
    int_field,
    no_extra_fields,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.contracts.task import MAX_ROUNDS, OPEN, TASK_ID_RE, get_task
from node.core.tx import Transaction

NAME = "reputation"
NS = "reputation"
NS_EVENT = "reputation.event"
NS_PARAMS = "reputation.params"
PARAMS_KEY = "params"
SCALE = 1_000_000
MEC = "mec"
MAX_EVENTS = 1024
MAX_PRIOR_WEIGHT = 100.0


@dataclass(frozen=True)
class Params:
    """The model's parameters, in millionths (see the module docstring for their roles)."""

    fading: int = 900_000  # freshness factor per round, in (0, 1]
    positive_weight: int = 300_000  # kappa, > 0
    negative_weight: int = 700_000  # eta, > 0
    link_quality: int = 900_000  # q, in [0, 1]
    base_rate: int = 500_000  # a, in [0, 1]
    prior_weight: int = 0  # W, >= 0 (0: Kang's form)

    def to_obj(self) -> dict[str, int]:
        """The stored form."""
        return {name: getattr(self, name) for name in PARAM_RANGES}


# payload name -> (lowest, highest) as a float; fading and the event weights must be > 0
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "fading": (0.0, 1.0),
    "positive_weight": (0.0, 1.0),
    "negative_weight": (0.0, 1.0),
    "link_quality": (0.0, 1.0),
    "base_rate": (0.0, 1.0),
    "prior_weight": (0.0, MAX_PRIOR_WEIGHT),
}
POSITIVE_PARAMS = ("fading", "positive_weight", "negative_weight")


@dataclass(frozen=True)
class Opinion:
    """A subjective-logic opinion (b + d + u = 1) with its base rate."""

    belief: float
    disbelief: float
    uncertainty: float
    base_rate: float

    @property
    def reputation(self) -> float:
        """T = b + a * u."""
        return self.belief + self.base_rate * self.uncertainty


def params(state: State) -> Params:
    """The chain's parameters (the defaults unless `reputation.configure` set them)."""
    stored = state.get(NS_PARAMS, PARAMS_KEY)
    return Params() if stored is None else Params(**{k: int(v) for k, v in stored.items()})


def fade(value: int, factor: int, steps: int) -> int:
    """`value` (fixed point) times factor^steps (factor in millionths), floored; exact ints."""
    if steps <= 0 or value == 0:
        return value
    power, base = SCALE, factor
    while steps:
        if steps & 1:
            power = power * base // SCALE
        base = base * base // SCALE
        steps >>= 1
        if power == 0:
            return 0
    return value * power // SCALE


def _record(state: State, device: str) -> dict[str, Any]:
    record: dict[str, Any] | None = state.get(NS, device)
    if record is None:
        return {"pos": 0, "neg": 0, "n_pos": 0, "n_neg": 0, "clock": {}}
    return record


def _exact(state: State, device: str) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """(b, d, u, a) as exact fractions."""
    p = params(state)
    record = state.get(NS, device)
    a = Fraction(p.base_rate, SCALE)
    if record is None or int(record["pos"]) + int(record["neg"]) == 0:
        return Fraction(0), Fraction(0), Fraction(1), a
    alpha = Fraction(int(record["pos"]), SCALE)
    beta = Fraction(int(record["neg"]), SCALE)
    n = alpha + beta
    c = Fraction(p.link_quality, SCALE) * n / (n + Fraction(p.prior_weight, SCALE))
    return c * alpha / n, c * beta / n, 1 - c, a


def opinion(state: State, device: str) -> Opinion:
    """The device's current opinion (no record: b = d = 0, u = 1)."""
    b, d, u, a = _exact(state, device)
    return Opinion(float(b), float(d), float(u), float(a))


def reputation_ppm(state: State, device: str) -> int:
    """The device's reputation T in millionths, floored (for on-chain comparisons)."""
    b, _, u, a = _exact(state, device)
    return math.floor((b + a * u) * SCALE)


def reputation(state: State, device: str) -> float:
    """The device's reputation T = b + a * u in [0, 1] (correctly rounded from the exact T)."""
    b, _, u, a = _exact(state, device)
    return float(b + a * u)


def reputations(state: State, devices: Iterable[str]) -> dict[str, float]:
    """`reputation` of each device, for `select_workers`."""
    return {device: reputation(state, device) for device in devices}


def event_key(task_id: str, round_: int, device: str) -> str:
    """The "reputation.event" key of one judged (task, round, device)."""
    return f"{task_id}/{round_}/{device}"


def event(state: State, task_id: str, round_: int, device: str) -> bool | None:
    """Whether the device's event of (task, round) was positive; None if none is recorded."""
    entry = state.get(NS_EVENT, event_key(task_id, round_, device))
    return None if entry is None else bool(entry["positive"])


def select_workers(
    reputations: Mapping[str, float], threshold: float, top_k: int | None = None
) -> list[str]:
    """Devices whose reputation is >= `threshold`, best first (ties by id), at most `top_k`."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if top_k is not None and (isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    ranked = sorted(
        (device for device, value in reputations.items() if value >= threshold),
        key=lambda device: (-reputations[device], device),
    )
    return ranked if top_k is None else ranked[:top_k]


def _task_round(state: State, payload: dict[str, Any]) -> tuple[str, int]:
    task_id = field_of(payload, "task_id")
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    task = get_task(state, task_id)
    if task is None:
        raise ContractError(f"task_id: no task {task_id!r}")
    if task["status"] != OPEN:
        raise ContractError(f"task_id: task {task_id!r} is {task['status']}")
    if round_ > int(task["rounds"]):
        raise ContractError(f"round: {round_} is beyond task {task_id!r} ({task['rounds']})")
    return task_id, round_


def _events(state: State, payload: dict[str, Any]) -> list[tuple[str, bool]]:
    value = field_of(payload, "events")
    if not isinstance(value, list) or not value:
        raise ContractError("events: must be a non-empty list of [device, positive]")
    if len(value) > MAX_EVENTS:
        raise ContractError(f"events: at most {MAX_EVENTS} per call")
    out: list[tuple[str, bool]] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], bool):
            raise ContractError("events: each must be [device, positive (bool)]")
        device = identity.check_node_id(item[0], "events")
        key = identity.key_of(state, device)
        if key is not None and identity.role_of(state, key) != identity.DEVICE:
            raise ContractError(f"events: {device!r} is not a device")
        out.append((device, item[1]))
    if len({device for device, _ in out}) != len(out):
        raise ContractError("events: duplicate device")
    return out


def record(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """reputation.record {task_id, round, events}: a MEC's quality verdicts for one round."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("task_id", "round", "events"))
    by = identity.require_member(state, tx, MEC)
    task_id, round_ = _task_round(state, payload)
    events = _events(state, payload)
    p = params(state)
    results: list[list[Any]] = []
    for device, positive in events:
        key = event_key(task_id, round_, device)
        if state.get_bytes(NS_EVENT, key) is not None:
            raise ContractError(f"events: {device!r} is already judged for round {round_}")
        state.set(NS_EVENT, key, {"positive": positive, "by": by})
        rec = _record(state, device)
        clock: dict[str, int] = rec["clock"]
        last = clock.get(task_id)
        weight = p.positive_weight if positive else p.negative_weight
        if last is None or round_ > last:
            steps = 1 if last is None else round_ - int(last)
            rec["pos"] = fade(int(rec["pos"]), p.fading, steps)
            rec["neg"] = fade(int(rec["neg"]), p.fading, steps)
            clock[task_id] = round_
        else:  # a late report: the event is as old as its round
            weight = fade(weight, p.fading, int(last) - round_)
        if positive:
            rec["pos"] = int(rec["pos"]) + weight
            rec["n_pos"] = int(rec["n_pos"]) + 1
        else:
            rec["neg"] = int(rec["neg"]) + weight
            rec["n_neg"] = int(rec["n_neg"]) + 1
        state.set(NS, device, rec)
        results.append([device, positive, reputation_ppm(state, device)])
    return [
        Event(
            NAME,
            "recorded",
            {"task_id": task_id, "round": round_, "by": by, "events": results},
        )
    ]


def configure(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """reputation.configure {fading, ...}: a publisher sets parameters before any event."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, tuple(PARAM_RANGES))
    by = identity.require_member(state, tx, identity.PUBLISHER)
    if not payload:
        raise ContractError(f"payload: name at least one of {', '.join(PARAM_RANGES)}")
    if state.items(NS):
        raise ContractError("configure: events are recorded; the parameters are fixed now")
    values = params(state).to_obj()
    for name in sorted(payload):
        lo, hi = PARAM_RANGES[name]
        number = float_field(payload, name, lo, hi)
        ppm = round(number * SCALE)
        if name in POSITIVE_PARAMS and ppm <= 0:
            raise ContractError(f"{name}: must be > 0")
        values[name] = ppm
    state.set(NS_PARAMS, PARAMS_KEY, values)
    return [Event(NAME, "configured", {"by": by, **values})]


class ReputationApi:
    """The reputation contract's internal API for other contracts (and roles' reads)."""

    params = staticmethod(params)
    opinion = staticmethod(opinion)
    reputation = staticmethod(reputation)
    reputation_ppm = staticmethod(reputation_ppm)
    reputations = staticmethod(reputations)
    event = staticmethod(event)


METHODS: dict[str, Method] = {"record": record, "configure": configure}
API = ReputationApi()
