"""The SFL contract (paper 004, §III, Fig. 2): one FL task per chain, devices' model updates,
a committed test set disclosed group by group, evaluation by a quorum of evaluators, the
publisher's aggregate checked by the evaluators, and rewards to qualified devices.

How it works
- State (blob hashes as hex):
  ns "sfl.task": "task" -> {"task_id", "publisher", "model", "criterion", "threshold",
  "reward", "rounds", "groups", "group_size", "seed_commit", "evaluators", "quorum",
  "round" (the round open / being evaluated, from 1), "phase" ("submit" | "evaluate" |
  "aggregate" | "check" | "done"), "global" {"round" (0 = initial), "blob", "size"},
  "qualified_total" (sum of every device's qualified rounds), "paid", "posted",
  "results" (None until post_evaluation)};
  ns "sfl.update": "{round}/{device}" -> {"blob", "size", "samples", "payee"};
  ns "sfl.disclosed": str(round) -> {"group", "blob"};
  ns "sfl.eval_vote": "{round}/{evaluator}" -> {"digest"};
  ns "sfl.eval": "{round}/{device}" -> {"correct", "total", "accuracy", "qualified"};
  ns "sfl.round": str(round) -> {"data", "qualified", "global", "aggregate",
  "aggregate_size", "accepted", "correct", "total", "accuracy"};
  ns "sfl.model_vote": "{round}/{evaluator}" -> {"digest"};
  ns "sfl.qualified": device -> rounds it qualified in; ns "sfl.paid": device -> amount.
- Methods (tx "sfl.<name>"; payload fields exactly as listed):
  `init` {task_id, model, criterion, threshold, reward, rounds, groups, group_size,
      seed_commit, evaluators, quorum} by a "publisher", once per chain; escrows `reward`
      (TokenApi.debit). Phase "submit", round 1, global = {0, model, size 0}.
  `submit_model_update` {round, blob, size, samples, payee} by a "device", phase "submit",
      once per (round, device).
  `disclosure_test_data` {round, group, seed, group_blob} by the publisher: checks the seed
      against its commitment, the group against `disclosure_order` and the blob against the
      committed group hash; closes the submission window (phase "evaluate").
  `evaluate_local_model` {round, data, total, results} by a listed evaluator: "test" needs
      the round's disclosure, "train" (the paper's fallback) needs none and closes the
      window. `quorum` identical digests decide: per-device accuracy = correct/total,
      qualified = accuracy >= threshold; phase "aggregate".
  `aggregate_model_update` {round, selected, global_blob, size} by the publisher: selected
      == the round's qualified devices; phase "check".
  `evaluate_model` {round, global_blob, correct, total} by a listed evaluator: a quorum of
      identical votes decides whether the publisher's aggregate becomes the global model
      (else the previous one stays); then the next round or phase "done".
  `finalize_contract` {} by a device, phase "done": pays its share once.
  `post_evaluation` {} by the publisher, phase "done", once: records the results and
      refunds reward - sum of all shares.
- A vote that comes after its decision is accepted only if it agrees (a differing one is a
  failed transaction: ContractError). Invariant: escrow (reward - paid - refund) + every
  balance == the supply before init.
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
    float_field,
    int_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.contracts.task import TASK_ID_RE
from node.contracts.token import MAX_AMOUNT, TokenApi
from node.core.encoding import canonical, sha256
from node.core.tx import Transaction

NAME = "sfl"
NS_TASK = "sfl.task"
NS_UPDATE = "sfl.update"
NS_DISCLOSED = "sfl.disclosed"
NS_EVAL_VOTE = "sfl.eval_vote"
NS_EVAL = "sfl.eval"
NS_ROUND = "sfl.round"
NS_MODEL_VOTE = "sfl.model_vote"
NS_QUALIFIED = "sfl.qualified"
NS_PAID = "sfl.paid"
TASK_KEY = "task"
PUBLISHER = identity.PUBLISHER
DEVICE = identity.DEVICE
CRITERIA = ("accuracy",)
DATA_KINDS = ("test", "train")
SUBMIT, EVALUATE, AGGREGATE, CHECK, DONE = "submit", "evaluate", "aggregate", "check", "done"
MAX_ROUNDS = 100_000
MAX_GROUPS = 256
MAX_EVALUATORS = 64
MAX_RESULTS = 4096  # submitters (and so results) per round
MAX_COUNT = 2**53  # sample counts: exact in a float64, so correct/total is the same everywhere
MAX_SIZE = 2**63 - 1
BLOB_BYTES = 32
SEED_BYTES = 32


# ------------------------------------------------------------------------------- reads


def get_FL_task(state: State) -> dict[str, Any] | None:
    """The task record (see the module docstring), or None before `sfl.init` (the paper's
    name)."""
    task: dict[str, Any] | None = state.get(NS_TASK, TASK_KEY)
    return task


def get_global_model(state: State) -> dict[str, Any] | None:
    """The current global model {"round", "blob" (bytes), "size"}, or None without a task."""
    task = get_FL_task(state)
    if task is None:
        return None
    current = task["global"]
    return {
        "round": int(current["round"]),
        "blob": bytes.fromhex(current["blob"]),
        "size": int(current["size"]),
    }


def round_updates(state: State, round_: int) -> list[tuple[str, dict[str, Any]]]:
    """The round's submissions as (device, {"blob" (bytes), "size", "samples", "payee"}),
    sorted by device id."""
    prefix = f"{round_}/"
    return [
        (key[len(prefix) :], {**value, "blob": bytes.fromhex(value["blob"])})
        for key, value in state.items(NS_UPDATE)
        if key.startswith(prefix)
    ]


def round_record(state: State, round_: int) -> dict[str, Any] | None:
    """The round's record (created when its local evaluation is decided), or None."""
    record: dict[str, Any] | None = state.get(NS_ROUND, str(round_))
    return record


def evaluation(state: State, round_: int, device: str) -> dict[str, Any] | None:
    """The decided evaluation of a device's update {"correct", "total", "accuracy",
    "qualified"}, or None."""
    entry: dict[str, Any] | None = state.get(NS_EVAL, f"{round_}/{device}")
    return entry


def qualified_rounds(state: State, device: str) -> int:
    """In how many rounds the device's update qualified."""
    return int(state.get(NS_QUALIFIED, device, 0))


def share_of(state: State, device: str) -> int:
    """The device's reward share: reward * q_dev // qualified_total (0 if unqualified)."""
    task = get_FL_task(state)
    if task is None:
        return 0
    total = int(task["qualified_total"])
    q = qualified_rounds(state, device)
    if total == 0 or q == 0:
        return 0
    return int(task["reward"]) * q // total


def paid_to(state: State, device: str) -> int:
    """What `finalize_contract` paid the device (0 if nothing)."""
    return int(state.get(NS_PAID, device, 0))


def escrow_of(state: State) -> int:
    """The tokens the task still holds: reward - paid - the post_evaluation refund."""
    task = get_FL_task(state)
    if task is None:
        return 0
    refund = int(task["results"]["refund"]) if task["results"] is not None else 0
    return int(task["reward"]) - int(task["paid"]) - refund


def disclosure_order(seed: bytes, groups: int) -> list[int]:
    """The order in which the groups are disclosed: the indices 0..groups-1 sorted by
    sha256(seed || i as 4 bytes big-endian) (ties, never seen, by index)."""
    return sorted(range(groups), key=lambda i: (sha256(seed + i.to_bytes(4, "big")), i))


def vote_digest(obj: Any) -> bytes:
    """sha256 of the canonical encoding of `obj` (what a quorum must agree on)."""
    return sha256(canonical(obj))


# ------------------------------------------------------------------------------ helpers


def _task(state: State) -> dict[str, Any]:
    task = get_FL_task(state)
    if task is None:
        raise ContractError("task: no SFL task on this chain")
    return task


def _save(state: State, task: dict[str, Any]) -> None:
    state.set(NS_TASK, TASK_KEY, task)


def _publisher(state: State, tx: Transaction) -> tuple[str, dict[str, Any]]:
    sender = identity.require_member(state, tx, PUBLISHER)
    task = _task(state)
    if task["publisher"] != sender:
        raise ContractError("sender: only the task's publisher may call this")
    return sender, task


def _evaluator(state: State, tx: Transaction) -> tuple[str, dict[str, Any]]:
    sender = identity.require_member(state, tx)
    task = _task(state)
    if sender not in task["evaluators"]:
        raise ContractError(f"sender: {sender!r} is not one of the task's evaluators")
    return sender, task


def _phase(task: dict[str, Any], *allowed: str) -> None:
    if task["phase"] not in allowed:
        raise ContractError(f"phase: {task['phase']!r}, this needs {' or '.join(allowed)}")


def _current_round(payload: dict[str, Any], task: dict[str, Any]) -> int:
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    if round_ != int(task["round"]):
        raise ContractError(f"round: {round_} is not the task's round ({task['round']})")
    return round_


def _hash_list(payload: dict[str, Any], name: str, lo: int, hi: int) -> list[bytes]:
    value = field_of(payload, name)
    if not isinstance(value, list | tuple) or not lo <= len(value) <= hi:
        raise ContractError(f"{name}: must be a list of {lo}..{hi} {BLOB_BYTES}-byte hashes")
    for item in value:
        if not isinstance(item, bytes) or len(item) != BLOB_BYTES:
            raise ContractError(f"{name}: every item must be {BLOB_BYTES} bytes")
    return list(value)


def _id_list(payload: dict[str, Any], name: str, lo: int, hi: int) -> list[str]:
    value = field_of(payload, name)
    if not isinstance(value, list | tuple) or not lo <= len(value) <= hi:
        raise ContractError(f"{name}: must be a list of {lo}..{hi} node ids")
    ids = [identity.check_node_id(item, name) for item in value]
    if len(set(ids)) != len(ids):
        raise ContractError(f"{name}: duplicate node id")
    return ids


def _votes(state: State, ns: str, round_: int) -> list[str]:
    """The digests (hex) voted for `round_` in `ns`."""
    prefix = f"{round_}/"
    return [v["digest"] for k, v in state.items(ns) if k.startswith(prefix)]


def _vote(state: State, ns: str, round_: int, voter: str, digest: bytes, what: str) -> None:
    """Record `voter`'s digest for `round_`; ContractError if it already voted."""
    key = f"{round_}/{voter}"
    if state.get_bytes(ns, key) is not None:
        raise ContractError(f"round: {voter!r} already posted its {what} of round {round_}")
    state.set(ns, key, {"digest": digest.hex()})


# -------------------------------------------------------------------------------- methods


def init(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """sfl.init {task_id, model, criterion, threshold, reward, rounds, groups, group_size,
    seed_commit, evaluators, quorum}: publish the task and escrow its reward."""
    payload: dict[str, Any] = tx.payload
    fields = (
        "task_id",
        "model",
        "criterion",
        "threshold",
        "reward",
        "rounds",
        "groups",
        "group_size",
        "seed_commit",
        "evaluators",
        "quorum",
    )
    no_extra_fields(payload, fields)
    sender = identity.require_member(state, tx, PUBLISHER)
    task_id = str_field(payload, "task_id", 64)
    if not TASK_ID_RE.fullmatch(task_id):
        raise ContractError(f"task_id: {task_id!r} must match {TASK_ID_RE.pattern}")
    model = bytes_field(payload, "model", BLOB_BYTES)
    criterion = str_field(payload, "criterion", 32)
    if criterion not in CRITERIA:
        raise ContractError(f"criterion: {criterion!r} is not one of {', '.join(CRITERIA)}")
    threshold = float_field(payload, "threshold", 0.0, 1.0)
    reward = int_field(payload, "reward", 0, MAX_AMOUNT)
    rounds = int_field(payload, "rounds", 1, MAX_ROUNDS)
    groups = _hash_list(payload, "groups", 1, MAX_GROUPS)
    group_size = int_field(payload, "group_size", 1, MAX_COUNT)
    seed_commit = bytes_field(payload, "seed_commit", BLOB_BYTES)
    evaluators = _id_list(payload, "evaluators", 1, MAX_EVALUATORS)
    for evaluator in evaluators:
        if not identity.id_registered(state, evaluator):
            raise ContractError(f"evaluators: {evaluator!r} is not registered")
    quorum = int_field(payload, "quorum", 1, len(evaluators))
    if get_FL_task(state) is not None:
        raise ContractError("task_id: this chain already has its SFL task")
    if reward > 0:
        calls.api("token", TokenApi).debit(state, sender, reward)
    task = {
        "task_id": task_id,
        "publisher": sender,
        "model": model.hex(),
        "criterion": criterion,
        "threshold": threshold,
        "reward": reward,
        "rounds": rounds,
        "groups": [g.hex() for g in groups],
        "group_size": group_size,
        "seed_commit": seed_commit.hex(),
        "evaluators": evaluators,
        "quorum": quorum,
        "round": 1,
        "phase": SUBMIT,
        # our choice: init carries no size for the initial model, so its size is 0
        "global": {"round": 0, "blob": model.hex(), "size": 0},
        "qualified_total": 0,
        "paid": 0,
        "posted": False,
        "results": None,
    }
    _save(state, task)
    data = {"task_id": task_id, "publisher": sender, "reward": reward, "rounds": rounds}
    return [Event(NAME, "initialized", {**data, "evaluators": evaluators, "quorum": quorum})]


def submit_model_update(
    state: State, tx: Transaction, ctx: BlockContext, calls: Calls
) -> list[Event]:
    """sfl.submit_model_update {round, blob, size, samples, payee}: a device's update."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "blob", "size", "samples", "payee"))
    device = identity.require_member(state, tx, DEVICE)
    task = _task(state)
    round_ = _current_round(payload, task)
    _phase(task, SUBMIT)
    blob = bytes_field(payload, "blob", BLOB_BYTES)
    size = int_field(payload, "size", 0, MAX_SIZE)
    samples = int_field(payload, "samples", 1, MAX_COUNT)
    payee = identity.check_node_id(field_of(payload, "payee"), "payee")
    if not identity.id_registered(state, payee):
        raise ContractError(f"payee: {payee!r} is not registered")
    key = f"{round_}/{device}"
    if state.get_bytes(NS_UPDATE, key) is not None:
        raise ContractError(f"round: {device!r} already submitted an update in round {round_}")
    if len(round_updates(state, round_)) >= MAX_RESULTS:
        raise ContractError(f"round: {round_} already has {MAX_RESULTS} updates")
    value = {"blob": blob.hex(), "size": size, "samples": samples, "payee": payee}
    state.set(NS_UPDATE, key, value)
    data = {"round": round_, "device": device, "blob": blob.hex(), "samples": samples}
    return [Event(NAME, "submitted", data)]


def disclosure_test_data(
    state: State, tx: Transaction, ctx: BlockContext, calls: Calls
) -> list[Event]:
    """sfl.disclosure_test_data {round, group, seed, group_blob}: the publisher discloses the
    round's committed test group; the submission window closes."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "group", "seed", "group_blob"))
    _, task = _publisher(state, tx)
    round_ = _current_round(payload, task)
    groups = task["groups"]
    group = int_field(payload, "group", 0, len(groups) - 1)
    seed = bytes_field(payload, "seed", SEED_BYTES)
    group_blob = bytes_field(payload, "group_blob", BLOB_BYTES)
    _phase(task, SUBMIT)
    if state.get_bytes(NS_DISCLOSED, str(round_)) is not None:
        raise ContractError(f"round: round {round_}'s test data is already disclosed")
    if sha256(seed).hex() != task["seed_commit"]:
        raise ContractError("seed: does not match the committed seed")
    expected = disclosure_order(seed, len(groups))[(round_ - 1) % len(groups)]
    if group != expected:
        raise ContractError(f"group: round {round_} discloses group {expected}, not {group}")
    if group_blob.hex() != groups[group]:
        raise ContractError(f"group_blob: not the committed hash of group {group}")
    state.set(NS_DISCLOSED, str(round_), {"group": group, "blob": group_blob.hex()})
    task["phase"] = EVALUATE
    _save(state, task)
    return [Event(NAME, "disclosed", {"round": round_, "group": group, "blob": group_blob.hex()})]


def _results(payload: dict[str, Any], total: int, submitters: list[str]) -> list[list[Any]]:
    value = field_of(payload, "results")
    if not isinstance(value, list | tuple) or len(value) > MAX_RESULTS:
        raise ContractError(f"results: must be a list of at most {MAX_RESULTS} pairs")
    out: list[list[Any]] = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ContractError("results: every item must be [device, correct]")
        device = identity.check_node_id(item[0], "results")
        correct = item[1]
        if not isinstance(correct, int) or isinstance(correct, bool):
            raise ContractError(f"results: {device!r}'s correct count must be an integer")
        if not 0 <= correct <= total:
            raise ContractError(f"results: {device!r}'s correct count {correct} not in 0..total")
        out.append([device, correct])
    devices = [device for device, _ in out]
    if devices != submitters:
        raise ContractError("results: must name exactly the round's submitters, sorted by id")
    return out


def _decide_local(
    state: State, task: dict[str, Any], round_: int, data: str, total: int, results: list[Any]
) -> list[Event]:
    threshold = float(task["threshold"])
    qualified = []
    for device, correct in results:
        accuracy = correct / total  # from integers: the same on every replica
        ok = accuracy >= threshold
        entry = {"correct": correct, "total": total, "accuracy": accuracy, "qualified": ok}
        state.set(NS_EVAL, f"{round_}/{device}", entry)
        if ok:
            qualified.append(device)
            state.set(NS_QUALIFIED, device, qualified_rounds(state, device) + 1)
    record = {
        "data": data,
        "qualified": qualified,  # results are sorted, so this is too
        "global": None,
        "aggregate": None,
        "aggregate_size": None,  # our choice: the aggregate's size, for the new global
        "accepted": None,
        "correct": None,
        "total": None,
        "accuracy": None,
    }
    state.set(NS_ROUND, str(round_), record)
    task["qualified_total"] = int(task["qualified_total"]) + len(qualified)
    task["phase"] = AGGREGATE
    _save(state, task)
    data_ = {"round": round_, "data": data, "qualified": qualified, "submitters": len(results)}
    return [Event(NAME, "local_evaluated", data_)]


def _late_vote(
    state: State,
    task: dict[str, Any],
    round_: int,
    evaluator: str,
    digest: bytes,
    late: tuple[str, str, str, str],
) -> list[Event]:
    """A vote posted after its round's decision (`late`: namespace, payload field, what is
    voted on, event name): recorded if it agrees with the decided digest, else ContractError."""
    ns, field, what, event = late
    winner = bytes.fromhex(_decided_digest(state, ns, round_, task))
    if digest != winner:
        raise ContractError(f"{field}: {evaluator!r}'s post disagrees with the decided evaluation")
    _vote(state, ns, round_, evaluator, digest, what)
    return [Event(NAME, event, {"round": round_, "evaluator": evaluator})]


def evaluate_local_model(
    state: State, tx: Transaction, ctx: BlockContext, calls: Calls
) -> list[Event]:
    """sfl.evaluate_local_model {round, data, total, results}: an evaluator's correct counts
    for every update of the round; a quorum of identical posts decides who qualified."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "data", "total", "results"))
    evaluator, task = _evaluator(state, tx)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    data = str_field(payload, "data", 8)
    if data not in DATA_KINDS:
        raise ContractError(f"data: {data!r} is not one of {', '.join(DATA_KINDS)}")
    total = int_field(payload, "total", 1, MAX_COUNT)
    submitters = [device for device, _ in round_updates(state, round_)]
    results = _results(payload, total, submitters)
    digest = vote_digest([data, total, results])
    decided = round_record(state, round_)
    if decided is not None:  # a late vote: it must agree with the decision
        late = (NS_EVAL_VOTE, "results", "local evaluation", "local_vote")
        return _late_vote(state, task, round_, evaluator, digest, late)
    if round_ != int(task["round"]):
        raise ContractError(f"round: {round_} is not the task's round ({task['round']})")
    disclosed = state.get_bytes(NS_DISCLOSED, str(round_)) is not None
    if data == "test":
        _phase(task, EVALUATE)
        if not disclosed:
            raise ContractError(f"data: round {round_}'s test data was not disclosed")
    else:
        _phase(task, SUBMIT, EVALUATE)
        if disclosed:
            raise ContractError(f"data: round {round_}'s test data is disclosed; use it")
    _vote(state, NS_EVAL_VOTE, round_, evaluator, digest, "local evaluation")
    events = [Event(NAME, "local_vote", {"round": round_, "evaluator": evaluator})]
    if task["phase"] == SUBMIT:  # the fallback: evaluation begins, submissions end
        task["phase"] = EVALUATE
        _save(state, task)
    if _votes(state, NS_EVAL_VOTE, round_).count(digest.hex()) >= int(task["quorum"]):
        events += _decide_local(state, task, round_, data, total, results)
    return events


def _decided_digest(state: State, ns: str, round_: int, task: dict[str, Any]) -> str:
    """The digest that reached the quorum in `ns` for `round_` (a decided round has one)."""
    votes = _votes(state, ns, round_)
    quorum = int(task["quorum"])
    winners = sorted({d for d in votes if votes.count(d) >= quorum})
    if not winners:
        raise ContractError(f"round: {round_} is not decided")
    return winners[0]


def aggregate_model_update(
    state: State, tx: Transaction, ctx: BlockContext, calls: Calls
) -> list[Event]:
    """sfl.aggregate_model_update {round, selected, global_blob, size}: the publisher's
    FedAvg of the round's qualified updates."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "selected", "global_blob", "size"))
    _, task = _publisher(state, tx)
    round_ = _current_round(payload, task)
    _phase(task, AGGREGATE)
    selected = _id_list(payload, "selected", 0, MAX_RESULTS)
    blob = bytes_field(payload, "global_blob", BLOB_BYTES)
    size = int_field(payload, "size", 0, MAX_SIZE)
    record = round_record(state, round_)
    if record is None:
        raise ContractError(f"round: {round_} has no decided evaluation")
    if selected != record["qualified"]:
        raise ContractError(f"selected: must be the qualified devices {record['qualified']}")
    if not selected and blob.hex() != task["global"]["blob"]:
        raise ContractError("global_blob: nothing qualified, so it must be the current global")
    record["aggregate"] = blob.hex()
    record["aggregate_size"] = size
    state.set(NS_ROUND, str(round_), record)
    task["phase"] = CHECK
    _save(state, task)
    return [Event(NAME, "aggregated", {"round": round_, "blob": blob.hex(), "selected": selected})]


def _decide_model(
    state: State, task: dict[str, Any], round_: int, blob: bytes, correct: int, total: int
) -> list[Event]:
    record = round_record(state, round_)
    if record is None:  # phase "check" comes after the record; never here
        raise ContractError(f"round: {round_} has no decided evaluation")
    accepted = blob.hex() == record["aggregate"]
    events = []
    if accepted:
        size = int(record["aggregate_size"])
        task["global"] = {"round": round_, "blob": blob.hex(), "size": size}
        events.append(Event(NAME, "global", {"round": round_, "blob": blob.hex()}))
    else:
        data = {"round": round_, "aggregate": record["aggregate"], "evaluated": blob.hex()}
        events.append(Event(NAME, "aggregate_rejected", data))
    record.update(
        {
            "global": task["global"]["blob"],  # after the round: accepted or previous
            "accepted": accepted,
            "correct": correct,
            "total": total,
            "accuracy": correct / total,
        }
    )
    state.set(NS_ROUND, str(round_), record)
    if round_ >= int(task["rounds"]):
        task["phase"] = DONE
        events.append(Event(NAME, "done", {"rounds": round_}))
    else:
        task["round"] = round_ + 1
        task["phase"] = SUBMIT
        events.append(Event(NAME, "round", {"round": round_ + 1}))
    _save(state, task)
    return events


def evaluate_model(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """sfl.evaluate_model {round, global_blob, correct, total}: an evaluator's own FedAvg of
    the selected updates and its accuracy; a quorum of identical posts decides."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("round", "global_blob", "correct", "total"))
    evaluator, task = _evaluator(state, tx)
    round_ = int_field(payload, "round", 1, MAX_ROUNDS)
    blob = bytes_field(payload, "global_blob", BLOB_BYTES)
    total = int_field(payload, "total", 1, MAX_COUNT)
    correct = int_field(payload, "correct", 0, total)
    digest = vote_digest([blob, correct, total])
    record = round_record(state, round_)
    if record is not None and record["accepted"] is not None:  # a late vote
        late = (NS_MODEL_VOTE, "global_blob", "model evaluation", "model_vote")
        return _late_vote(state, task, round_, evaluator, digest, late)
    if round_ != int(task["round"]):
        raise ContractError(f"round: {round_} is not the task's round ({task['round']})")
    _phase(task, CHECK)
    _vote(state, NS_MODEL_VOTE, round_, evaluator, digest, "model evaluation")
    events = [Event(NAME, "model_vote", {"round": round_, "evaluator": evaluator})]
    if _votes(state, NS_MODEL_VOTE, round_).count(digest.hex()) >= int(task["quorum"]):
        events += _decide_model(state, task, round_, blob, correct, total)
    return events


def _last_payee(state: State, device: str) -> str:
    suffix = f"/{device}"
    rounds = [
        (int(key[: -len(suffix)]), value["payee"])
        for key, value in state.items(NS_UPDATE)
        if key.endswith(suffix)
    ]
    if not rounds:
        raise ContractError(f"sender: {device!r} never submitted an update")
    return str(max(rounds)[1])


def finalize_contract(
    state: State, tx: Transaction, ctx: BlockContext, calls: Calls
) -> list[Event]:
    """sfl.finalize_contract {}: a qualified device is paid its share, once, to the payee of
    its last submission (our choice: shares by qualified rounds, reward * q // total)."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ())
    device = identity.require_member(state, tx, DEVICE)
    task = _task(state)
    _phase(task, DONE)
    if qualified_rounds(state, device) == 0:
        raise ContractError(f"sender: {device!r} is not qualified")
    if state.get_bytes(NS_PAID, device) is not None:
        raise ContractError(f"sender: {device!r} was already paid")
    share = share_of(state, device)
    payee = _last_payee(state, device)
    if share > 0:
        calls.api("token", TokenApi).credit(state, payee, share)
    state.set(NS_PAID, device, share)
    task["paid"] = int(task["paid"]) + share
    _save(state, task)
    return [Event(NAME, "paid", {"device": device, "payee": payee, "amount": share})]


def post_evaluation(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """sfl.post_evaluation {}: the publisher records the task's results and gets back what no
    share will take (reward - the sum of every device's share)."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ())
    sender, task = _publisher(state, tx)
    _phase(task, DONE)
    if task["posted"]:
        raise ContractError("phase: the task's results are already posted")
    devices = sorted(device for device, q in state.items(NS_QUALIFIED) if int(q) > 0)
    shares = sum(share_of(state, device) for device in devices)
    refund = int(task["reward"]) - shares
    if refund > 0:
        calls.api("token", TokenApi).credit(state, sender, refund)
    last = round_record(state, int(task["round"])) or {}
    results = {
        "rounds": int(task["round"]),
        "global": task["global"],
        "accuracy": last.get("accuracy"),
        "qualified": devices,
        "refund": refund,
    }
    task["posted"] = True
    task["results"] = results
    _save(state, task)
    return [Event(NAME, "posted", results)]


class SflApi:
    """The SFL contract's reads, for the roles and other contracts."""

    get_FL_task = staticmethod(get_FL_task)
    get_global_model = staticmethod(get_global_model)
    round_updates = staticmethod(round_updates)
    round_record = staticmethod(round_record)
    evaluation = staticmethod(evaluation)
    qualified_rounds = staticmethod(qualified_rounds)
    share_of = staticmethod(share_of)
    paid_to = staticmethod(paid_to)
    escrow_of = staticmethod(escrow_of)
    disclosure_order = staticmethod(disclosure_order)
    vote_digest = staticmethod(vote_digest)


METHODS: dict[str, Method] = {
    "init": init,
    "submit_model_update": submit_model_update,
    "disclosure_test_data": disclosure_test_data,
    "evaluate_local_model": evaluate_local_model,
    "aggregate_model_update": aggregate_model_update,
    "evaluate_model": evaluate_model,
    "finalize_contract": finalize_contract,
    "post_evaluation": post_evaluation,
}
API = SflApi()
