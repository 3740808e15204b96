"""Unit tests for the subjective-logic reputation contract (node/contracts/reputation.py)."""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

import pytest

from node.contracts import reputation
from node.contracts.genesis import Genesis
from node.contracts.reputation import SCALE, ReputationApi, fade, select_workers
from node.keys import NodeKey

from .test_contracts import Chain

PUB = NodeKey.from_seed(b"\x40" * 32)
MEC = NodeKey.from_seed(b"\x41" * 32)
MEC2 = NodeKey.from_seed(b"\x42" * 32)
N_DEVICES = 30
DEVICE_KEYS = {f"d{i:02d}": NodeKey.from_seed(bytes([0x50 + i]) * 32) for i in range(N_DEVICES)}
GENESIS = Genesis(
    members={
        "pub": (PUB.public_key, "publisher"),
        "mec": (MEC.public_key, "mec"),
        "mec2": (MEC2.public_key, "mec"),
        **{d: (k.public_key, "device") for d, k in DEVICE_KEYS.items()},
    },
    balances={"pub": 100_000},
    chain_id="rep-chain",
)


def publish(chain: Chain, task_id: str = "t1", rounds: int = 10, pool: int = 0) -> None:
    """Publish a task the MECs can report on."""
    chain.ok(
        PUB,
        "task.publish",
        {"task_id": task_id, "reward_pool": pool, "rounds": rounds, "model": "m", "dataset": "d"},
    )


def new_chain(rounds: int = 10) -> Chain:
    """A chain with task t1 published."""
    chain = Chain(GENESIS)
    publish(chain, rounds=rounds)
    return chain


def record(
    chain: Chain, round_: int, events: list[list[Any]], task_id: str = "t1", by: NodeKey = MEC
) -> None:
    """One reputation.record that must succeed."""
    chain.ok(by, "reputation.record", {"task_id": task_id, "round": round_, "events": events})


def exact_t(alpha: Fraction, beta: Fraction, q: Fraction, a: Fraction, w: Fraction) -> Fraction:
    """T from the module docstring's formulas, by hand."""
    n = alpha + beta
    c = q * n / (n + w)
    return c * alpha / n + a * (1 - c)


# ---------------------------------------------------------------------------- formulas


def test_a_device_without_events_has_the_base_rate() -> None:
    chain = new_chain()
    op = reputation.opinion(chain.state, "d00")
    assert (op.belief, op.disbelief, op.uncertainty, op.base_rate) == (0.0, 0.0, 1.0, 0.5)
    assert reputation.reputation(chain.state, "d00") == 0.5
    assert reputation.reputation_ppm(chain.state, "d00") == 500_000


def test_one_positive_then_one_negative_hand_computed() -> None:
    chain = new_chain()
    record(chain, 1, [["d00", True]])
    # alpha = kappa = 0.3, beta = 0: b = q = 0.9, d = 0, u = 1 - q = 0.1, T = 0.9 + 0.5 * 0.1
    op = reputation.opinion(chain.state, "d00")
    assert op.belief == pytest.approx(0.9) and op.disbelief == 0.0
    assert op.uncertainty == pytest.approx(0.1)
    assert reputation.reputation_ppm(chain.state, "d00") == 950_000
    record(chain, 2, [["d00", False]])
    # faded once: alpha = 0.27, then beta = eta = 0.7; b = 0.9 * 0.27 / 0.97
    alpha, beta = Fraction(27, 100), Fraction(7, 10)
    assert chain.state.get("reputation", "d00") == {
        "pos": 270_000,
        "neg": 700_000,
        "n_pos": 1,
        "n_neg": 1,
        "clock": {"t1": 2},
    }
    op = reputation.opinion(chain.state, "d00")
    assert op.belief == float(Fraction(9, 10) * alpha / (alpha + beta))
    assert op.disbelief == float(Fraction(9, 10) * beta / (alpha + beta))
    assert op.belief + op.disbelief + op.uncertainty == pytest.approx(1.0)
    t = exact_t(alpha, beta, Fraction(9, 10), Fraction(1, 2), Fraction(0))
    assert reputation.reputation(chain.state, "d00") == float(t)  # 0.3005154...
    assert reputation.reputation_ppm(chain.state, "d00") == 300_515
    assert reputation.event(chain.state, "t1", 2, "d00") is False
    assert reputation.event(chain.state, "t1", 1, "d00") is True
    assert reputation.event(chain.state, "t1", 3, "d00") is None


def test_fading_skips_rounds_and_late_events_count_as_old() -> None:
    assert fade(1_000_000, 900_000, 0) == 1_000_000
    assert fade(1_000_000, 900_000, 2) == 810_000
    assert fade(300_000, 900_000, 3) == 218_700
    assert fade(5, 500_000, 64) == 0
    chain = new_chain()
    record(chain, 1, [["d00", True]])
    record(chain, 4, [["d00", True]])  # three rounds later: 0.3 * 0.9^3 + 0.3
    assert chain.state.get("reputation", "d00")["pos"] == 218_700 + 300_000
    record(chain, 2, [["d00", False]])  # a late report of round 2: 0.7 * 0.9^2, no fading
    rec = chain.state.get("reputation", "d00")
    assert (rec["pos"], rec["neg"], rec["clock"]) == (518_700, 567_000, {"t1": 4})


def test_one_record_per_device_across_tasks() -> None:
    chain = new_chain()
    publish(chain, "t2", rounds=3)
    record(chain, 5, [["d00", True]])
    record(chain, 1, [["d00", False]], task_id="t2", by=MEC2)  # t2's first round: one step
    rec = chain.state.get("reputation", "d00")
    assert (rec["pos"], rec["neg"]) == (270_000, 700_000)
    assert rec["clock"] == {"t1": 5, "t2": 1}
    assert chain.state.get("reputation.event", "t2/1/d00") == {"positive": False, "by": "mec2"}


def test_configure_prior_weight_adds_evidence_uncertainty() -> None:
    chain = new_chain()
    chain.ok(PUB, "reputation.configure", {"prior_weight": 1.0, "link_quality": 0.8})
    assert reputation.params(chain.state).prior_weight == SCALE
    record(chain, 1, [["d00", True]])
    t = exact_t(Fraction(3, 10), Fraction(0), Fraction(4, 5), Fraction(1, 2), Fraction(1))
    assert reputation.reputation(chain.state, "d00") == float(t)  # 0.5923...
    op = reputation.opinion(chain.state, "d00")
    assert op.uncertainty == pytest.approx(1 - 0.8 * 0.3 / 1.3)


def test_the_api_object_matches_the_functions() -> None:
    chain = new_chain()
    record(chain, 1, [["d00", True], ["d01", False]])
    api = reputation.API
    assert isinstance(api, ReputationApi)
    assert api.reputations(chain.state, ["d00", "d01"]) == {
        "d00": reputation.reputation(chain.state, "d00"),
        "d01": reputation.reputation(chain.state, "d01"),
    }


def test_recorded_event_lists_new_reputations() -> None:
    chain = new_chain()
    receipt = chain.ok(
        MEC, "reputation.record", {"task_id": "t1", "round": 1, "events": [["d01", False]]}
    )
    assert receipt.events[0].data == {
        "task_id": "t1",
        "round": 1,
        "by": "mec",
        "events": [["d01", False, 50_000]],  # T = a * (1 - q) = 0.05
    }


def test_replicas_store_identical_bytes() -> None:
    a, b = new_chain(), new_chain()
    for chain in (a, b):
        for round_ in range(1, 6):
            record(chain, round_, [[d, (round_ + i) % 3 != 0] for i, d in enumerate(DEVICE_KEYS)])
    assert a.state.root() == b.state.root()
    assert a.state.to_rows() == b.state.to_rows()


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (PUB, {"task_id": "t1", "round": 1, "events": [["d00", True]]}, "needs 'mec'"),
        (DEVICE_KEYS["d00"], {"task_id": "t1", "round": 1, "events": [["d00", True]]}, "sender"),
        (MEC, {"task_id": "nope", "round": 1, "events": [["d00", True]]}, "task_id: no task"),
        (MEC, {"task_id": "bad id", "round": 1, "events": [["d00", True]]}, "task_id:"),
        (MEC, {"task_id": "t1", "round": 0, "events": [["d00", True]]}, "round: 0 out of range"),
        (MEC, {"task_id": "t1", "round": 11, "events": [["d00", True]]}, "round: 11 is beyond"),
        (MEC, {"task_id": "t1", "round": 1, "events": []}, "events: must be a non-empty"),
        (MEC, {"task_id": "t1", "round": 1, "events": [["d00", 1]]}, "events: each must be"),
        (MEC, {"task_id": "t1", "round": 1, "events": [["D0", True]]}, "not a valid node id"),
        (MEC, {"task_id": "t1", "round": 1, "events": [["mec2", True]]}, "is not a device"),
        (
            MEC,
            {"task_id": "t1", "round": 1, "events": [["d00", True], ["d00", False]]},
            "duplicate device",
        ),
        (MEC, {"task_id": "t1", "round": 1, "events": [["d00", True]], "x": 1}, "x: unknown"),
        (MEC, {"round": 1, "events": [["d00", True]]}, "task_id: missing"),
    ],
)
def test_record_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    new_chain().refused(key, "reputation.record", payload, match)


def test_record_refuses_a_second_verdict_and_a_closed_task() -> None:
    chain = new_chain()
    record(chain, 1, [["d00", True]])
    payload = {"task_id": "t1", "round": 1, "events": [["d01", True], ["d00", False]]}
    chain.refused(MEC2, "reputation.record", payload, "'d00' is already judged for round 1")
    assert reputation.event(chain.state, "t1", 1, "d01") is None  # the whole call reverted
    chain.ok(PUB, "task.close", {"task_id": "t1"})
    payload = {"task_id": "t1", "round": 2, "events": [["d01", True]]}
    chain.refused(MEC, "reputation.record", payload, "task 't1' is closed")


def test_an_unregistered_device_may_be_judged() -> None:
    chain = new_chain()
    record(chain, 1, [["stranger", False]])
    assert reputation.reputation_ppm(chain.state, "stranger") == 50_000


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (MEC, {"fading": 0.5}, "needs 'publisher'"),
        (PUB, {}, "payload: name at least one"),
        (PUB, {"fading": 0.0}, "fading: must be > 0"),
        (PUB, {"fading": 1.5}, "fading: 1.5 out of range"),
        (PUB, {"link_quality": "high"}, "link_quality: must be a number"),
        (PUB, {"prior_weight": 101}, "prior_weight: 101 out of range"),
        (PUB, {"speed": 1.0}, "speed: unknown field"),
    ],
)
def test_configure_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    new_chain().refused(key, "reputation.configure", payload, match)


def test_configure_is_refused_once_events_exist() -> None:
    chain = new_chain()
    record(chain, 1, [["d00", True]])
    chain.refused(PUB, "reputation.configure", {"fading": 0.5}, "parameters are fixed")


# ---------------------------------------------------------------------------- selection


def test_select_workers_threshold_top_k_and_ties() -> None:
    reps = {"b": 0.8, "a": 0.8, "c": 0.95, "d": 0.49, "e": 0.5}
    assert select_workers(reps, 0.5) == ["c", "a", "b", "e"]
    assert select_workers(reps, 0.5, top_k=2) == ["c", "a"]
    assert select_workers(reps, 0.0, top_k=10) == ["c", "a", "b", "e", "d"]
    assert select_workers({}, 0.5) == []
    with pytest.raises(ValueError, match="threshold"):
        select_workers(reps, 1.5)
    with pytest.raises(ValueError, match="top_k"):
        select_workers(reps, 0.5, top_k=0)


THRESHOLD = 0.5


def simulate(seed: int, rounds: int = 10) -> tuple[Chain, set[str], list[dict[str, float]]]:
    """30 devices, 3 of them flipping labels: every round the MEC selects by reputation
    (>= THRESHOLD) and judges each selected device's update; a flipper's check is negative
    with probability 0.9, an honest device's is positive. Returns the chain, the flippers
    and each round's reputations after its events."""
    rng = random.Random(seed)
    chain = new_chain(rounds)
    devices = sorted(DEVICE_KEYS)
    flippers = set(rng.sample(devices, 3))
    history: list[dict[str, float]] = []
    for round_ in range(1, rounds + 1):
        selected = select_workers(reputation.reputations(chain.state, devices), THRESHOLD)
        verdicts = {d: not (d in flippers and rng.random() < 0.9) for d in devices}
        record(chain, round_, [[d, verdicts[d]] for d in sorted(selected)])
        history.append(reputation.reputations(chain.state, devices))
    return chain, flippers, history


def test_flippers_fall_below_the_threshold_within_three_rounds() -> None:
    chain, flippers, history = simulate(seed=14)
    for round_, reps in enumerate(history, start=1):
        honest = {d: t for d, t in reps.items() if d not in flippers}
        assert min(honest.values()) >= THRESHOLD, (round_, honest)
        if round_ >= 3:
            assert max(reps[d] for d in flippers) < THRESHOLD, (round_, flippers, reps)
    final = select_workers(history[-1], THRESHOLD)
    assert set(final) == set(DEVICE_KEYS) - flippers
    # once excluded, a flipper is judged no more: its events stop
    for d in flippers:
        rec = chain.state.get("reputation", d)
        assert rec["n_neg"] >= 1 and rec["n_pos"] + rec["n_neg"] <= 3


def test_flippers_stay_below_even_if_judged_every_round() -> None:
    rng = random.Random(7)
    chain = new_chain()
    devices = sorted(DEVICE_KEYS)
    flippers = set(rng.sample(devices, 3))
    for round_ in range(1, 11):
        record(chain, round_, [[d, not (d in flippers and rng.random() < 0.9)] for d in devices])
        reps = reputation.reputations(chain.state, devices)
        if round_ >= 3:
            assert max(reps[d] for d in flippers) < THRESHOLD, (round_, reps)
        assert min(t for d, t in reps.items() if d not in flippers) >= THRESHOLD


def test_an_honest_device_survives_a_late_false_negative() -> None:
    chain = new_chain()
    for round_ in range(1, 6):
        record(chain, round_, [["d00", True]])
    record(chain, 6, [["d00", False]])
    # alpha = 0.3 * (0.9 + ... + 0.9^5) = 1.10...; beta = 0.7: T = 0.60...
    assert reputation.reputation(chain.state, "d00") > THRESHOLD
