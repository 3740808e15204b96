"""Unit tests for the SFL contract: the task and its escrow, submissions, the committed test
set's disclosure, quorum evaluation of the updates and of the aggregate, and the rewards."""

from __future__ import annotations

from typing import Any

import pytest

from node.contracts import sfl, task, token
from node.contracts.genesis import Genesis, genesis_state
from node.contracts.runtime import CONTRACTS, BlockContext, Receipt, TxRejected, default_registry
from node.core.encoding import canonical, sha256
from node.core.tx import Transaction
from node.keys import NodeKey

PUB = NodeKey.from_seed(b"\x70" * 32)
MECS = {f"mec{i}": NodeKey.from_seed(bytes([0x71 + i]) * 32) for i in range(3)}
MEC0, MEC1, MEC2 = MECS.values()
DEVS = {f"dev{i}": NodeKey.from_seed(bytes([0x78 + i]) * 32) for i in range(3)}
DEV0, DEV1, DEV2 = DEVS.values()  # dev2: the malicious device (its updates never qualify)
WALLET = NodeKey.from_seed(b"\x7e" * 32)
STRANGER = NodeKey.from_seed(b"\x7f" * 32)
REWARD = 1000
GENESIS = Genesis(
    members={
        "pub": (PUB.public_key, "publisher"),
        **{m: (k.public_key, "mec") for m, k in MECS.items()},
        **{d: (k.public_key, "device") for d, k in DEVS.items()},
        "wal0": (WALLET.public_key, "bs"),
    },
    balances={"pub": 1500, "dev0": 7},
    chain_id="sfl-test",
)
SEED = sha256(b"the publisher's secret seed")
GROUPS = [sha256(f"group {g}".encode()) for g in range(4)]
MODEL = sha256(b"initial model")
TOTAL = 100


def blob(tag: str) -> bytes:
    """A fake 32-byte blob hash."""
    return sha256(tag.encode())


def init_payload(**over: Any) -> dict[str, Any]:
    """An sfl.init payload: 2 rounds, 3 evaluators, quorum 2, threshold 0.5."""
    return {
        "task_id": "sfl-1",
        "model": MODEL,
        "criterion": "accuracy",
        "threshold": 0.5,
        "reward": REWARD,
        "rounds": 2,
        "groups": GROUPS,
        "group_size": 50,
        "seed_commit": sha256(SEED),
        "evaluators": ["mec0", "mec1", "mec2"],
        "quorum": 2,
        **over,
    }


def submit(round_: int, device: str, payee: str | None = None, **over: Any) -> dict[str, Any]:
    """An sfl.submit_model_update payload."""
    payload = {
        "round": round_,
        "blob": blob(f"{round_}/{device}"),
        "size": 4096,
        "samples": 60,
        "payee": payee or device,
    }
    return {**payload, **over}


def group_of(round_: int) -> int:
    """The group the publisher must disclose in `round_`."""
    return sfl.disclosure_order(SEED, len(GROUPS))[(round_ - 1) % len(GROUPS)]


def disclose(round_: int, **over: Any) -> dict[str, Any]:
    """The right sfl.disclosure_test_data payload of `round_`."""
    g = group_of(round_)
    return {"round": round_, "group": g, "seed": SEED, "group_blob": GROUPS[g], **over}


def local(round_: int, results: list[list[Any]], data: str = "test") -> dict[str, Any]:
    """An sfl.evaluate_local_model payload."""
    return {"round": round_, "data": data, "total": TOTAL, "results": results}


def aggregate(round_: int, selected: list[str], global_blob: bytes) -> dict[str, Any]:
    """An sfl.aggregate_model_update payload."""
    return {"round": round_, "selected": selected, "global_blob": global_blob, "size": 2048}


def check(round_: int, global_blob: bytes, correct: int = 85) -> dict[str, Any]:
    """An sfl.evaluate_model payload."""
    return {"round": round_, "global_blob": global_blob, "correct": correct, "total": TOTAL}


class Chain:
    """A genesis state and the default registry; each call is one tx in its own block."""

    def __init__(self) -> None:
        self.state = genesis_state(GENESIS)
        self.supply = token.total_supply(self.state)
        self.registry = default_registry()
        self.nonces: dict[bytes, int] = {}
        self.height = 0

    def run(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Receipt:
        """Execute one signed tx (the key's next nonce) in the next block."""
        nonce = self.nonces.get(key.public_key, -1) + 1
        self.nonces[key.public_key] = nonce
        self.height += 1
        ctx = BlockContext(self.height, 1_000 * self.height, PUB.public_key)
        tx = Transaction.create(key, type_, nonce, payload)
        return self.registry.execute(self.state, ctx, tx)

    def ok(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Receipt:
        """A tx that succeeds."""
        receipt = self.run(key, type_, payload)
        assert receipt.ok, receipt.error
        return receipt

    def fails(self, key: NodeKey, type_: str, payload: dict[str, Any], match: str) -> Receipt:
        """A tx that is a failed receipt (its writes undone) whose error contains `match`."""
        before = self.state.copy()
        receipt = self.run(key, type_, payload)
        assert not receipt.ok
        assert match in receipt.error, receipt.error
        changed = {k for k in self.state.diff(before) if k[0] != "nonce"}
        assert changed == set(), changed
        return receipt

    def conserved(self) -> None:
        """Token supply invariant: balances + the task's escrow == the genesis supply."""
        assert token.total_supply(self.state) + sfl.escrow_of(self.state) == self.supply

    def phase(self) -> str:
        """The task's phase."""
        found = sfl.get_FL_task(self.state)
        assert found is not None
        return str(found["phase"])


def initialized() -> Chain:
    """A chain with the task published (reward escrowed)."""
    chain = Chain()
    chain.ok(PUB, "sfl.init", init_payload())
    return chain


ALL = ("dev0", "dev1", "dev2")


def submitted(chain: Chain, round_: int, devices: tuple[str, ...] = ALL) -> None:
    """`devices` submit their round-`round_` updates."""
    for device in devices:
        chain.ok(DEVS[device], "sfl.submit_model_update", submit(round_, device))


def evaluated(chain: Chain, round_: int, results: list[list[Any]], data: str = "test") -> None:
    """mec0 and mec1 (a quorum) post the same local evaluation."""
    chain.ok(MEC0, "sfl.evaluate_local_model", local(round_, results, data))
    chain.ok(MEC1, "sfl.evaluate_local_model", local(round_, results, data))


ROUND1 = [["dev0", 80], ["dev1", 70], ["dev2", 10]]  # dev0, dev1 qualify (threshold 0.5)
ROUND2 = [["dev0", 90], ["dev1", 40], ["dev2", 5]]  # dev0 qualifies


def at_aggregate(round_: int = 1) -> Chain:
    """Round 1 submitted, disclosed and evaluated (phase "aggregate")."""
    chain = initialized()
    submitted(chain, 1)
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    evaluated(chain, 1, ROUND1)
    return chain


# ---------------------------------------------------------------------------- the full task


def test_a_two_round_task_with_three_evaluators_pays_the_qualified_devices() -> None:
    chain = Chain()
    receipt = chain.ok(PUB, "sfl.init", init_payload())
    assert receipt.events[0].name == "initialized"
    assert token.balance_of(chain.state, "pub") == 1500 - REWARD
    assert sfl.escrow_of(chain.state) == REWARD
    chain.conserved()
    assert sfl.get_global_model(chain.state) == {"round": 0, "blob": MODEL, "size": 0}

    # round 1: three updates, the test group disclosed, mec2 dissents and is outvoted
    submitted(chain, 1)
    updates = sfl.round_updates(chain.state, 1)
    assert [d for d, _ in updates] == ["dev0", "dev1", "dev2"]
    assert updates[0][1] == {"blob": blob("1/dev0"), "size": 4096, "samples": 60, "payee": "dev0"}
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    assert chain.phase() == "evaluate"
    chain.ok(MEC0, "sfl.evaluate_local_model", local(1, ROUND1))
    assert sfl.round_record(chain.state, 1) is None  # one vote of a quorum of two
    decided = chain.ok(MEC1, "sfl.evaluate_local_model", local(1, ROUND1))
    assert [e.name for e in decided.events] == ["local_vote", "local_evaluated"]
    dissent = [["dev0", 80], ["dev1", 70], ["dev2", 95]]  # it calls the poisoned update good
    chain.fails(MEC2, "sfl.evaluate_local_model", local(1, dissent), "disagrees with the decided")
    record = sfl.round_record(chain.state, 1)
    assert record is not None
    assert record["data"] == "test" and record["qualified"] == ["dev0", "dev1"]
    assert sfl.evaluation(chain.state, 1, "dev2") == {
        "correct": 10,
        "total": TOTAL,
        "accuracy": 0.1,
        "qualified": False,
    }
    assert sfl.evaluation(chain.state, 1, "dev0")["qualified"] is True  # type: ignore[index]
    assert chain.phase() == "aggregate"

    g1 = blob("global 1")
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev0", "dev1"], g1))
    assert chain.phase() == "check"
    chain.ok(MEC0, "sfl.evaluate_model", check(1, g1))
    chain.ok(MEC1, "sfl.evaluate_model", check(1, g1))
    chain.fails(MEC2, "sfl.evaluate_model", check(1, blob("other")), "disagrees")
    assert sfl.get_global_model(chain.state) == {"round": 1, "blob": g1, "size": 2048}
    record = sfl.round_record(chain.state, 1)
    assert record is not None and record["accepted"] is True and record["accuracy"] == 0.85
    task_ = sfl.get_FL_task(chain.state)
    assert task_ is not None and task_["round"] == 2 and task_["phase"] == "submit"

    # round 2: dev0 names another payee; only dev0 qualifies
    chain.ok(DEV0, "sfl.submit_model_update", submit(2, "dev0", payee="wal0"))
    submitted(chain, 2, ("dev1", "dev2"))
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(2))
    evaluated(chain, 2, ROUND2)
    chain.ok(MEC2, "sfl.evaluate_local_model", local(2, ROUND2))  # a late vote that agrees
    g2 = blob("global 2")
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(2, ["dev0"], g2))
    chain.ok(MEC1, "sfl.evaluate_model", check(2, g2, 88))
    done = chain.ok(MEC2, "sfl.evaluate_model", check(2, g2, 88))
    assert "done" in [e.name for e in done.events]
    assert chain.phase() == "done"
    assert sfl.get_global_model(chain.state) == {"round": 2, "blob": g2, "size": 2048}

    # rewards: dev0 qualified twice, dev1 once (3 in all): 666 and 333, 1 refunded
    assert sfl.share_of(chain.state, "dev0") == 666
    assert sfl.share_of(chain.state, "dev1") == 333
    assert sfl.share_of(chain.state, "dev2") == 0
    chain.fails(DEV2, "sfl.finalize_contract", {}, "not qualified")
    assert token.balance_of(chain.state, "dev2") == 0
    paid = chain.ok(DEV0, "sfl.finalize_contract", {})
    assert paid.events[0].data == {"device": "dev0", "payee": "wal0", "amount": 666}
    assert token.balance_of(chain.state, "wal0") == 666  # its last submission's payee
    assert token.balance_of(chain.state, "dev0") == 7
    chain.fails(DEV0, "sfl.finalize_contract", {}, "already paid")
    assert token.balance_of(chain.state, "wal0") == 666
    chain.conserved()

    posted = chain.ok(PUB, "sfl.post_evaluation", {})
    assert posted.events[0].data["refund"] == 1
    assert token.balance_of(chain.state, "pub") == 1500 - REWARD + 1
    chain.fails(PUB, "sfl.post_evaluation", {}, "already posted")
    chain.conserved()
    assert sfl.escrow_of(chain.state) == 333  # dev1's share waits for its finalize
    chain.ok(DEV1, "sfl.finalize_contract", {})  # finalize still works after post_evaluation
    assert token.balance_of(chain.state, "dev1") == 333
    assert sfl.paid_to(chain.state, "dev1") == 333 and sfl.paid_to(chain.state, "dev2") == 0
    assert sfl.escrow_of(chain.state) == 0
    chain.conserved()
    final = sfl.get_FL_task(chain.state)
    assert final is not None
    assert final["paid"] + final["results"]["refund"] == REWARD
    assert final["results"]["qualified"] == ["dev0", "dev1"]
    assert final["results"]["accuracy"] == 0.88


def test_post_evaluation_refunds_everything_when_nobody_qualified() -> None:
    chain = initialized()
    submitted(chain, 1, ("dev2",))
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    evaluated(chain, 1, [["dev2", 3]])
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(1, [], MODEL))
    chain.ok(MEC0, "sfl.evaluate_model", check(1, MODEL))
    chain.ok(MEC1, "sfl.evaluate_model", check(1, MODEL))
    submitted(chain, 2, ())  # nobody submits in round 2: results [] is valid
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(2))
    evaluated(chain, 2, [])
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(2, [], MODEL))
    chain.ok(MEC0, "sfl.evaluate_model", check(2, MODEL))
    chain.ok(MEC2, "sfl.evaluate_model", check(2, MODEL))
    assert chain.phase() == "done"
    chain.fails(DEV2, "sfl.finalize_contract", {}, "not qualified")
    chain.ok(PUB, "sfl.post_evaluation", {})
    assert token.balance_of(chain.state, "pub") == 1500
    assert sfl.escrow_of(chain.state) == 0
    chain.conserved()


# ------------------------------------------------------------------ submission and disclosure


def test_submissions_are_refused_once_the_test_data_is_disclosed() -> None:
    chain = initialized()
    submitted(chain, 1, ("dev0",))
    chain.fails(DEV0, "sfl.submit_model_update", submit(1, "dev0"), "already submitted")
    chain.fails(DEV1, "sfl.submit_model_update", submit(2, "dev1"), "round: 2 is not")
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    chain.fails(DEV1, "sfl.submit_model_update", submit(1, "dev1"), "phase")
    assert [d for d, _ in sfl.round_updates(chain.state, 1)] == ["dev0"]


def test_a_submission_needs_a_registered_payee() -> None:
    chain = initialized()
    chain.fails(DEV0, "sfl.submit_model_update", submit(1, "dev0", payee="nobody"), "payee")
    chain.fails(DEV0, "sfl.submit_model_update", submit(1, "dev0", payee="Bad!"), "payee")


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"group_blob": GROUPS[(group_of(1) + 1) % 4]}, "group_blob: not the committed"),
        ({"group_blob": blob("an altered test set")}, "group_blob: not the committed"),
        ({"group": (group_of(1) + 1) % 4}, "group: round 1 discloses group"),
        ({"seed": sha256(b"another seed")}, "seed: does not match"),
        ({"round": 2}, "round: 2 is not"),
        ({"group": 4}, "group: 4 out of range"),
    ],
)
def test_a_wrong_disclosure_is_refused(over: dict[str, Any], match: str) -> None:
    chain = initialized()
    submitted(chain, 1)
    chain.fails(PUB, "sfl.disclosure_test_data", disclose(1, **over), match)
    assert chain.phase() == "submit"  # the window stays open


def test_the_disclosure_is_by_the_publisher_once_per_round() -> None:
    chain = initialized()
    chain.fails(MEC0, "sfl.disclosure_test_data", disclose(1), "needs 'publisher'")
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    chain.fails(PUB, "sfl.disclosure_test_data", disclose(1), "phase")
    disclosed = chain.state.get(sfl.NS_DISCLOSED, "1")
    assert disclosed == {"group": group_of(1), "blob": GROUPS[group_of(1)].hex()}


def test_disclosure_order_is_a_seeded_permutation() -> None:
    order = sfl.disclosure_order(SEED, 16)
    assert sorted(order) == list(range(16))
    assert order == sfl.disclosure_order(SEED, 16)
    assert order != sfl.disclosure_order(sha256(b"x"), 16)
    keys = [sha256(SEED + i.to_bytes(4, "big")) for i in order]
    assert keys == sorted(keys)
    assert sfl.vote_digest(["test", 1, []]) == sha256(canonical(["test", 1, []]))


# ------------------------------------------------------------------------ local evaluation


def test_the_train_fallback_evaluates_without_disclosure_and_closes_the_window() -> None:
    chain = initialized()
    submitted(chain, 1, ("dev0", "dev1"))
    results = [["dev0", 60], ["dev1", 20]]
    chain.ok(MEC0, "sfl.evaluate_local_model", local(1, results, "train"))
    assert chain.phase() == "evaluate"  # no more submissions, no late disclosure
    chain.fails(DEV2, "sfl.submit_model_update", submit(1, "dev2"), "phase")
    chain.fails(PUB, "sfl.disclosure_test_data", disclose(1), "phase")
    chain.fails(MEC1, "sfl.evaluate_local_model", local(1, results, "test"), "not disclosed")
    chain.ok(MEC1, "sfl.evaluate_local_model", local(1, results, "train"))
    record = sfl.round_record(chain.state, 1)
    assert record is not None and record["data"] == "train" and record["qualified"] == ["dev0"]


def test_test_evaluation_without_disclosure_is_refused() -> None:
    chain = initialized()
    submitted(chain, 1)
    chain.fails(MEC0, "sfl.evaluate_local_model", local(1, ROUND1, "test"), "phase")
    assert chain.phase() == "submit"


def test_train_evaluation_after_disclosure_is_refused() -> None:
    chain = initialized()
    submitted(chain, 1)
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    chain.fails(MEC0, "sfl.evaluate_local_model", local(1, ROUND1, "train"), "use it")


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ([["dev0", 80], ["dev1", 70]], "exactly the round's submitters"),
        ([["dev1", 70], ["dev0", 80], ["dev2", 10]], "exactly the round's submitters"),
        ([["dev0", 80], ["dev1", 70], ["dev2", 10], ["dev2", 10]], "exactly"),
        ([["dev0", 101], ["dev1", 70], ["dev2", 10]], "not in 0..total"),
        ([["dev0", True], ["dev1", 70], ["dev2", 10]], "must be an integer"),
        ([["dev0"], ["dev1", 70], ["dev2", 10]], "[device, correct]"),
        ("dev0", "results: must be a list"),
    ],
)
def test_malformed_results_are_refused(results: Any, match: str) -> None:
    chain = initialized()
    submitted(chain, 1)
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    chain.fails(MEC0, "sfl.evaluate_local_model", local(1, results), match)


def test_an_evaluator_votes_once_and_non_evaluators_not_at_all() -> None:
    chain = initialized()
    submitted(chain, 1)
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    chain.ok(MEC0, "sfl.evaluate_local_model", local(1, ROUND1))
    chain.fails(MEC0, "sfl.evaluate_local_model", local(1, ROUND1), "already posted")
    chain.fails(DEV0, "sfl.evaluate_local_model", local(1, ROUND1), "not one of the task's")
    chain.fails(PUB, "sfl.evaluate_local_model", local(1, ROUND1), "not one of the task's")
    assert sfl.round_record(chain.state, 1) is None


# ------------------------------------------------------------------- aggregate and its check


def test_an_aggregate_with_a_wrong_selection_is_refused() -> None:
    chain = at_aggregate()
    g1 = blob("global 1")
    chain.fails(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev0"], g1), "selected")
    chain.fails(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev1", "dev0"], g1), "selected")
    every = ["dev0", "dev1", "dev2"]
    chain.fails(PUB, "sfl.aggregate_model_update", aggregate(1, every, g1), "selected")
    chain.fails(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev0", "dev0"], g1), "dup")
    chain.fails(MEC0, "sfl.aggregate_model_update", aggregate(1, ["dev0", "dev1"], g1), "role")
    chain.fails(MEC0, "sfl.evaluate_model", check(1, g1), "phase")  # nothing to check yet
    assert chain.phase() == "aggregate"


def test_with_nobody_qualified_the_aggregate_must_be_the_current_global() -> None:
    chain = initialized()
    submitted(chain, 1, ("dev2",))
    chain.ok(PUB, "sfl.disclosure_test_data", disclose(1))
    evaluated(chain, 1, [["dev2", 3]])
    chain.fails(PUB, "sfl.aggregate_model_update", aggregate(1, [], blob("x")), "global_blob")
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(1, [], MODEL))


def test_a_tampered_aggregate_never_becomes_the_global_model() -> None:
    chain = at_aggregate()
    tampered, honest = blob("poisoned global"), blob("fedavg of dev0 and dev1")
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev0", "dev1"], tampered))
    chain.ok(MEC0, "sfl.evaluate_model", check(1, honest, 84))
    receipt = chain.ok(MEC2, "sfl.evaluate_model", check(1, honest, 84))
    names = [e.name for e in receipt.events]
    assert "aggregate_rejected" in names and "global" not in names
    assert sfl.get_global_model(chain.state) == {"round": 0, "blob": MODEL, "size": 0}
    record = sfl.round_record(chain.state, 1)
    assert record is not None
    assert record["accepted"] is False and record["aggregate"] == tampered.hex()
    assert record["global"] == MODEL.hex() and record["correct"] == 84
    # a late vote for the tampered model disagrees with the decision
    chain.fails(MEC1, "sfl.evaluate_model", check(1, tampered, 84), "disagrees")
    task_ = sfl.get_FL_task(chain.state)
    assert task_ is not None and task_["round"] == 2 and task_["phase"] == "submit"


def test_model_votes_need_a_quorum_of_identical_results() -> None:
    chain = at_aggregate()
    g1 = blob("global 1")
    chain.ok(PUB, "sfl.aggregate_model_update", aggregate(1, ["dev0", "dev1"], g1))
    chain.ok(MEC0, "sfl.evaluate_model", check(1, g1, 85))
    chain.ok(MEC1, "sfl.evaluate_model", check(1, g1, 86))  # different accuracy: no quorum
    assert chain.phase() == "check"
    chain.fails(MEC1, "sfl.evaluate_model", check(1, g1, 85), "already posted")
    chain.fails(MEC0, "sfl.evaluate_model", check(1, g1, 101), "correct")
    chain.ok(MEC2, "sfl.evaluate_model", check(1, g1, 85))
    assert sfl.get_global_model(chain.state) == {"round": 1, "blob": g1, "size": 2048}


# -------------------------------------------------------------------------------- rewards


def test_finalize_and_post_evaluation_wait_for_the_end() -> None:
    chain = at_aggregate()
    chain.fails(DEV0, "sfl.finalize_contract", {}, "phase")
    chain.fails(PUB, "sfl.post_evaluation", {}, "phase")
    chain.fails(MEC0, "sfl.finalize_contract", {}, "role")
    chain.conserved()


# ------------------------------------------------------------------ members, roles, payloads


def test_init_is_by_a_publisher_once_and_escrows_the_reward() -> None:
    chain = Chain()
    chain.fails(DEV0, "sfl.init", init_payload(), "needs 'publisher'")
    chain.fails(PUB, "sfl.init", init_payload(reward=1501), "insufficient balance")
    chain.ok(PUB, "sfl.init", init_payload())
    chain.fails(PUB, "sfl.init", init_payload(), "already has its SFL task")
    assert token.balance_of(chain.state, "pub") == 500
    chain.conserved()


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"evaluators": ["mec0", "ghost"]}, "evaluators: 'ghost' is not registered"),
        ({"evaluators": ["mec0", "mec0"]}, "evaluators: duplicate"),
        ({"evaluators": []}, "evaluators: must be a list of 1..64"),
        ({"evaluators": [f"m{i}" for i in range(65)]}, "evaluators: must be a list"),
        ({"quorum": 4}, "quorum: 4 out of range"),
        ({"quorum": 0}, "quorum: 0 out of range"),
        ({"groups": []}, "groups: must be a list"),
        ({"groups": [b"\x01" * 32] * 257}, "groups: must be a list"),
        ({"groups": [b"\x01" * 31]}, "groups: every item"),
        ({"threshold": 1.5}, "threshold"),
        ({"criterion": "loss"}, "criterion"),
        ({"rounds": 0}, "rounds"),
        ({"reward": -1}, "reward"),
        ({"model": b"short"}, "model"),
        ({"task_id": "bad id"}, "task_id"),
        ({"group_size": 0}, "group_size"),
    ],
)
def test_a_bad_init_is_refused(over: dict[str, Any], match: str) -> None:
    chain = Chain()
    chain.fails(PUB, "sfl.init", init_payload(**over), match)
    assert sfl.get_FL_task(chain.state) is None
    assert token.balance_of(chain.state, "pub") == 1500


def test_wrong_roles_are_refused() -> None:
    chain = initialized()
    chain.fails(MEC0, "sfl.submit_model_update", submit(1, "mec0"), "needs 'device'")
    chain.fails(PUB, "sfl.submit_model_update", submit(1, "pub"), "needs 'device'")
    chain.fails(WALLET, "sfl.disclosure_test_data", disclose(1), "needs 'publisher'")
    chain.fails(WALLET, "sfl.evaluate_local_model", local(1, []), "not one of the task's")


def test_a_non_member_transaction_is_rejected_outright() -> None:
    chain = initialized()
    before = chain.state.copy()
    with pytest.raises(TxRejected) as exc:
        chain.run(STRANGER, "sfl.submit_model_update", submit(1, "dev0"))
    assert exc.value.reason == "unknown_sender"
    assert chain.state.diff(before) == {}


def test_calls_before_init_are_refused() -> None:
    chain = Chain()
    chain.fails(DEV0, "sfl.submit_model_update", submit(1, "dev0"), "no SFL task")
    assert sfl.get_global_model(chain.state) is None
    assert sfl.share_of(chain.state, "dev0") == 0 and sfl.escrow_of(chain.state) == 0


EXTRA = [
    (PUB, "sfl.init", lambda: init_payload()),
    (DEV0, "sfl.submit_model_update", lambda: submit(1, "dev0")),
    (PUB, "sfl.disclosure_test_data", lambda: disclose(1)),
    (MEC0, "sfl.evaluate_local_model", lambda: local(1, [])),
    (PUB, "sfl.aggregate_model_update", lambda: aggregate(1, [], MODEL)),
    (MEC0, "sfl.evaluate_model", lambda: check(1, MODEL)),
    (DEV0, "sfl.finalize_contract", lambda: {}),
    (PUB, "sfl.post_evaluation", lambda: {}),
]


@pytest.mark.parametrize(("key", "type_", "payload"), EXTRA, ids=[t for _, t, _ in EXTRA])
def test_extra_payload_fields_are_refused(key: NodeKey, type_: str, payload: Any) -> None:
    chain = Chain() if type_ == "sfl.init" else initialized()
    chain.fails(key, type_, {**payload(), "bonus": 1}, "bonus: unknown field")


def test_the_contract_is_registered_and_its_blobs_are_declared() -> None:
    assert sfl in CONTRACTS
    assert default_registry().methods("sfl") == sorted(sfl.METHODS)
    assert task.BLOB_FIELDS["sfl.submit_model_update"] == ("blob",)
    assert task.BLOB_FIELDS["sfl.disclosure_test_data"] == ("group_blob",)
    assert task.BLOB_FIELDS["sfl.aggregate_model_update"] == ("global_blob",)
