"""Reward rules (node.schemes.rewards): pure, deterministic, integer payouts within the pool,
read from the task contract's real state."""

from __future__ import annotations

import copy
import random
from fractions import Fraction

import pytest

from node.contracts import task
from node.schemes.rewards import (
    Contribution,
    Payout,
    above_threshold,
    by_quality,
    by_samples,
    contributions,
    proportional,
    weighted,
)

from .test_contracts_task import DEVICES, PUB, global_, published, update


def _publisher_rule_before(pool: int, samples_by_device: dict[str, int]) -> list[Payout]:
    """The vanilla publisher's `_pay_rewards` loop before the rule moved here."""
    total = sum(samples_by_device.values())
    out = []
    for device, samples in sorted(samples_by_device.items()):
        amount = pool * samples // total if total else 0
        if amount > 0:
            out.append(Payout(device, amount))
    return out


def _random_contributions(rng: random.Random) -> list[Contribution]:
    nodes = [f"dev{i}-{j}" for i in range(rng.randint(1, 4)) for j in range(rng.randint(1, 6))]
    return [
        Contribution(r, node, rng.randint(1, 5000), rng.choice([0.1, 0.55, 0.9, 0.97]))
        for r in range(1, rng.randint(1, 8) + 1)
        for node in rng.sample(nodes, rng.randint(1, len(nodes)))
    ]


def _check_payouts(pool: int, payouts: list[Payout]) -> None:
    assert all(type(p.amount) is int and p.amount > 0 for p in payouts)
    assert sum(p.amount for p in payouts) <= pool
    assert [p.to for p in payouts] == sorted({p.to for p in payouts})


@pytest.mark.parametrize("seed", range(20))
def test_by_samples_is_the_vanilla_rule_and_stays_within_the_pool(seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.choice([0, 1, 7, 600, 10_000, 2**62])
    given = _random_contributions(rng)
    frozen = copy.deepcopy(given)
    tally: dict[str, int] = {}
    for c in given:
        tally[c.node] = tally.get(c.node, 0) + c.samples

    payouts = by_samples(pool, given)

    assert payouts == _publisher_rule_before(pool, tally)
    assert payouts == proportional(pool, tally)
    _check_payouts(pool, payouts)
    assert given == frozen, "the rule does not change its input"
    assert by_samples(pool, list(reversed(given))) == payouts, "order does not matter"
    for rule in (by_quality, lambda p, cs: above_threshold(p, cs, 0.5)):
        _check_payouts(pool, rule(pool, given))


def test_rounding_down_leaves_the_remainder_in_escrow() -> None:
    shares = {"a": 1, "b": 1, "c": 1}
    assert proportional(100, shares) == [Payout("a", 33), Payout("b", 33), Payout("c", 33)]
    assert proportional(2, shares) == []  # 2/3 each rounds down to 0: nobody is paid
    assert proportional(0, shares) == []
    assert proportional(100, {}) == [] and proportional(100, {"a": 0}) == []


def test_above_threshold_pays_only_accurate_updates() -> None:
    cs = [
        Contribution(1, "a", 100, 0.9),
        Contribution(1, "b", 300, 0.4),
        Contribution(2, "b", 100, 0.95),
        Contribution(2, "c", 100, 0.5),
    ]
    # counted: a 100, b 100 (round 2 only), c 100 (>= is inclusive)
    assert above_threshold(90, cs, 0.5) == [Payout("a", 30), Payout("b", 30), Payout("c", 30)]
    assert above_threshold(90, cs, 0.99) == []
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        above_threshold(90, cs, float("nan"))


def test_by_quality_weighs_samples_by_accuracy_exactly() -> None:
    cs = [Contribution(1, "a", 100, 0.9), Contribution(1, "b", 100, 0.3)]
    assert by_quality(1000, cs) == [Payout("a", 750), Payout("b", 250)]
    assert weighted(1000, cs, lambda c: Fraction(1)) == [Payout("a", 500), Payout("b", 500)]
    with pytest.raises(ValueError, match="the update of 'a' in round 1 has no accuracy"):
        by_quality(1000, [Contribution(1, "a", 100)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: proportional(-1, {"a": 1}), "pool must be an int >= 0, got -1"),
        (lambda: proportional(True, {"a": 1}), "pool must be an int >= 0, got True"),
        (lambda: proportional(10, {"a": -1}), "share of 'a' must be >= 0"),
        (lambda: proportional(10, {"a": float("inf")}), "share of 'a' must be finite"),
        (lambda: proportional(10, {"a": "1"}), "share of 'a' must be a number"),  # type: ignore[dict-item]
        (lambda: Contribution(1, "a", 0), "samples of 'a' must be > 0"),
        (lambda: Contribution(1, "a", 1.5), "samples of 'a' must be an int"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_a_one_line_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_contributions_from_the_task_contracts_state_pay_out_on_chain() -> None:
    chain = published()  # task t1 with a pool of 300 and 3 rounds
    rounds = {1: ("dev1", "dev2"), 2: ("dev1", "dev3"), 3: ("dev2",)}
    samples = {"dev1": 50, "dev2": 70, "dev3": 30}
    for r, devices in rounds.items():
        for d in devices:
            chain.ok(DEVICES[d], "task.record_update", update(r, f"{d}{r}", samples=samples[d]))
        if r == 1:  # an update that round 1's global model does not use
            chain.ok(DEVICES["dev3"], "task.record_update", update(r, "unused"))
        chain.ok(PUB, "task.record_global", global_(r, list(devices)))

    recorded = contributions(chain.state, "t1")

    # dev3's round-1 update was recorded but not used by round 1's global model: not counted
    assert recorded == [
        Contribution(1, "dev1", 50),
        Contribution(1, "dev2", 70),
        Contribution(2, "dev1", 50),
        Contribution(2, "dev3", 30),
        Contribution(3, "dev2", 70),
    ]
    assert contributions(chain.state, "other") == []
    payouts = by_samples(300, recorded)
    assert payouts == [Payout("dev1", 111), Payout("dev2", 155), Payout("dev3", 33)]
    for p in payouts:
        chain.ok(PUB, "task.reward", {"task_id": "t1", "to": p.to, "amount": p.amount})
    closed = chain.ok(PUB, "task.close", {"task_id": "t1"})
    assert closed.events[-1].data["refund"] == 300 - 299
    assert task.get_task(chain.state, "t1")["paid"] == 299  # type: ignore[index]
