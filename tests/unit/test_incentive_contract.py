"""Unit tests for the incentive contract (Table 1 rewards) and the device-type clustering."""

from __future__ import annotations

import random
from typing import Any

import pytest

from node.contracts import incentive, reputation, task, token
from node.contracts.incentive import DEFAULT_WEIGHTS, Report, amounts
from node.schemes.device_types import device_types, features, items_for

from .test_contracts import Chain
from .test_reputation_contract import (
    DEVICE_KEYS,
    GENESIS,
    MEC,
    PUB,
    publish,
    record,
    simulate,
)

D0, D1, D2 = DEVICE_KEYS["d00"], DEVICE_KEYS["d01"], DEVICE_KEYS["d02"]
POOL = 10_000
ITEMS = [
    {"name": "gold", "type": 1, "floor": 0.9, "multiplier": 1.0},
    {"name": "basic", "type": 0, "floor": 0.0, "multiplier": 0.5},
]


def report(device: str, **over: Any) -> list[Any]:
    """A pay report with round numbers."""
    factors = {
        "quality": 1.0,
        "samples": 100,
        "cpu_mhz": 1000,
        "energy_mj": 10,
        "blocks": 1,
        "relay_bytes": 100,
    }
    return [device, {**factors, **over}]


def offered(rounds: int = 2) -> Chain:
    """Task t1 (pool POOL, `rounds` rounds) with ITEMS offered."""
    chain = Chain(GENESIS)
    publish(chain, rounds=rounds, pool=POOL)
    chain.ok(PUB, "incentive.offer", {"task_id": "t1", "items": ITEMS})
    return chain


def escrow_holds(chain: Chain, escrowed: int = POOL) -> None:
    """The task's pool and paid add up to what it escrowed; supply is unchanged."""
    t = task.get_task(chain.state, "t1")
    assert t is not None
    assert int(t["reward_pool"]) + int(t["paid"]) == escrowed
    assert token.total_supply(chain.state) + task.escrowed(chain.state) == 100_000


# ---------------------------------------------------------------------------- formula


def test_amounts_hand_computed() -> None:
    reports = [
        Report("a", 1.0, 100, 1000, 10, 1, 100),
        Report("b", 0.5, 300, 1000, 30, 3, 300),
    ]
    # S = min(1, 60000 / 120000) = 0.5
    # a: FL = 0.5 * 1.0 * (0.4 * 1/4 + 0.15 * 1/2 + 0.15 * 1/4) = 0.10625
    #    BC = 0.15 * 1/4 + 0.15 * 1/4 = 0.075; 1000 * 1.0 * 0.18125 = 181.25
    # b: FL = 0.5 * 0.5 * (0.4 * 3/4 + 0.15 * 1/2 + 0.15 * 3/4) = 0.121875
    #    BC = 0.15 * 3/4 * 2 = 0.225; 1000 * 0.5 * 0.346875 = 173.4375
    got = amounts(1000, DEFAULT_WEIGHTS, 60_000, 120_000, reports, {"a": 1_000_000, "b": 500_000})
    assert got == {"a": 181, "b": 173}
    # a fast round (S capped at 1), only "a" eligible, zero totals give zero terms
    only = [Report("a", 1.0, 0, 0, 0, 0, 0), Report("b", 1.0, 10, 0, 0, 0, 0)]
    assert amounts(1000, DEFAULT_WEIGHTS, 60_000, 1, only, {"a": 1_000_000}) == {"a": 0}
    assert amounts(1000, DEFAULT_WEIGHTS, 60_000, 1, only[1:], {"b": 1_000_000}) == {"b": 400}


def test_amounts_never_exceed_the_budget() -> None:
    rng = random.Random(3)
    for _ in range(200):
        reports = [
            Report(
                f"d{i}",
                rng.random(),
                rng.randrange(0, 1000),
                rng.randrange(0, 3000),
                rng.randrange(0, 500),
                rng.randrange(0, 4),
                rng.randrange(0, 10**6),
            )
            for i in range(rng.randrange(1, 12))
        ]
        mult = {r.device: rng.randrange(1, 1_000_001) for r in reports}
        budget = rng.randrange(0, 10**9)
        got = amounts(budget, DEFAULT_WEIGHTS, rng.randrange(1, 10**5), 1000, reports, mult)
        assert all(v >= 0 for v in got.values()) and sum(got.values()) <= budget


# ---------------------------------------------------------------------------- lifecycle


def test_sign_pay_and_escrow() -> None:
    chain = offered()
    record(chain, 1, [["d00", True], ["d01", True], ["d02", False]])  # T: .95, .95, .05
    chain.ok(D0, "incentive.sign", {"task_id": "t1", "item": "gold"})
    chain.ok(D1, "incentive.sign", {"task_id": "t1", "item": "basic"})
    error = chain.refused(D2, "incentive.sign", {"task_id": "t1", "item": "gold"}, "item:")
    assert error == "item: reputation of 'd02' (0.050000) is below the floor of 'gold' (0.900000)"
    chain.ok(D2, "incentive.sign", {"task_id": "t1", "item": "basic"})
    assert incentive.signed_item(chain.state, "t1", "d02") == "basic"
    before = {d: chain.balance(d) for d in ("d00", "d01", "d02")}
    receipt = chain.ok(
        MEC,
        "incentive.pay",
        {
            "task_id": "t1",
            "round": 1,
            "duration_ms": 60_000,
            "reports": [report("d00"), report("d01"), report("d02")],
        },
    )
    # budget: 10000 // 2 rounds left = 5000; the chain has 2 MECs: this MEC's share is 2500;
    # each device holds a third of every total:
    # (0.4 + 0.15 + 0.15) / 3 + 0.3 / 3 = 1/3 -> gold 833, basic 416; d02 misbehaved
    data = receipt.events[0].data
    assert data == {
        "task_id": "t1",
        "round": 1,
        "payer": "mec",
        "budget": 5000,
        "share": 2500,
        "total": 1249,
        "paid": [["d00", 833, "gold"], ["d01", 416, "basic"]],
        "unpaid": [["d02", "negative_event"]],
    }
    assert chain.balance("d00") - before["d00"] == 833
    assert chain.balance("d01") - before["d01"] == 416
    assert chain.balance("d02") == before["d02"]
    assert incentive.payment(chain.state, "t1", 1) == {
        "budget": 5000,
        "total": 1249,
        "paid": {"d00": 833, "d01": 416},
        "unpaid": {"d02": "negative_event"},
        "payers": {"mec": 1249},
    }
    escrow_holds(chain)
    again = {"task_id": "t1", "round": 1, "duration_ms": 1, "reports": [report("d00")]}
    chain.refused(MEC, "incentive.pay", again, "round 1 of 't1' is already paid by 'mec'")
    # the publisher pays the rest of round 1's budget (5000 - 1249); d00 was paid already
    receipt = chain.ok(
        PUB,
        "incentive.pay",
        {"task_id": "t1", "round": 1, "duration_ms": 60_000, "reports": [report("d00")]},
    )
    data = receipt.events[0].data
    assert (data["share"], data["paid"]) == (3751, [])
    assert data["unpaid"] == [["d00", "already_reported"]]
    # round 2, paid by the publisher: the budget is what is left (8751 // 1)
    record(chain, 2, [["d00", True], ["d01", True]])
    receipt = chain.ok(
        PUB,
        "incentive.pay",
        {"task_id": "t1", "round": 2, "duration_ms": 60_000, "reports": [report("d00")]},
    )
    assert receipt.events[0].data["budget"] == 8751
    assert receipt.events[0].data["paid"] == [["d00", 8751, "gold"]]
    escrow_holds(chain)
    chain.ok(PUB, "task.close", {"task_id": "t1"})
    assert task.escrowed(chain.state) == 0
    escrow_holds(chain)


def test_unpaid_reasons() -> None:
    chain = offered(rounds=4)
    publish(chain, "t2", rounds=3)
    record(chain, 1, [["d00", True], ["d01", True], ["d02", True], ["d03", True]])
    chain.ok(D0, "incentive.sign", {"task_id": "t1", "item": "gold"})
    chain.ok(D1, "incentive.sign", {"task_id": "t1", "item": "basic"})
    chain.ok(DEVICE_KEYS["d03"], "incentive.sign", {"task_id": "t1", "item": "gold"})
    # d00 misbehaves in another task: its one record falls below gold's floor
    record(chain, 1, [["d00", False]], task_id="t2")
    # the publisher re-offers without "basic": d01's item is withdrawn
    chain.ok(PUB, "incentive.offer", {"task_id": "t1", "items": ITEMS[:1], "round_budget": 900})
    receipt = chain.ok(
        MEC,
        "incentive.pay",
        {
            "task_id": "t1",
            "round": 1,
            "duration_ms": 60_000,
            "reports": [
                report("d00"),
                report("d01"),
                report("d02"),
                report("d03", quality=0.0, blocks=0, relay_bytes=0),
                report("d04", samples=0),
            ],
        },
    )
    data = receipt.events[0].data
    assert data["budget"] == 900 and data["paid"] == [] and data["total"] == 0
    assert data["unpaid"] == [
        ["d00", "below_floor"],
        ["d01", "withdrawn_item"],
        ["d02", "no_contract"],
        ["d03", "zero"],
        ["d04", "no_contract"],
    ]
    escrow_holds(chain)


def test_random_rounds_keep_the_escrow_invariant() -> None:
    rng = random.Random(11)
    rounds = 6
    chain = offered(rounds)
    devices = sorted(DEVICE_KEYS)[:10]
    for d in devices:
        chain.ok(DEVICE_KEYS[d], "incentive.sign", {"task_id": "t1", "item": "basic"})
    for round_ in range(1, rounds + 1):
        record(chain, round_, [[d, rng.random() > 0.2] for d in devices])
        reports = [
            report(d, quality=rng.random(), samples=rng.randrange(1, 500), blocks=rng.randrange(3))
            for d in devices
        ]
        payload = {
            "task_id": "t1",
            "round": round_,
            "duration_ms": rng.randrange(1000, 120_000),
            "reports": reports,
        }
        receipt = chain.ok(MEC, "incentive.pay", payload)
        data = receipt.events[0].data
        assert data["total"] <= data["budget"]
        for d, why in data["unpaid"]:
            if why == "negative_event":
                assert reputation.event(chain.state, "t1", round_, d) is False
        escrow_holds(chain)


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("who", "payload", "match"),
    [
        ("mec", {"task_id": "t1", "items": ITEMS}, "only the publisher of 't1'"),
        ("pub", {"task_id": "t9", "items": ITEMS}, "task_id: no task 't9'"),
        ("pub", {"task_id": "t1", "items": []}, "items: must be a non-empty list"),
        ("pub", {"task_id": "t1", "items": [ITEMS[0], ITEMS[0]]}, "duplicate item 'gold'"),
        ("pub", {"task_id": "t1", "items": [{**ITEMS[0], "multiplier": 0}]}, "must be > 0"),
        ("pub", {"task_id": "t1", "items": [{**ITEMS[0], "multiplier": 2}]}, "multiplier: 2"),
        ("pub", {"task_id": "t1", "items": [{**ITEMS[0], "floor": 1.1}]}, "floor: 1.1 out"),
        ("pub", {"task_id": "t1", "items": [{**ITEMS[0], "name": "a b"}]}, "name: 'a b'"),
        ("pub", {"task_id": "t1", "items": [{**ITEMS[0], "colour": 1}]}, "colour: unknown"),
        ("pub", {"task_id": "t1", "items": ["gold"]}, "items: each must be a map"),
        ("pub", {"task_id": "t1", "items": ITEMS, "weights": {"mining": 0.9}}, "sum to at most"),
        ("pub", {"task_id": "t1", "items": ITEMS, "weights": {"luck": 0.1}}, "luck: unknown"),
        ("pub", {"task_id": "t1", "items": ITEMS, "ref_ms": 0}, "ref_ms: 0 out of range"),
        ("pub", {"task_id": "t1", "items": ITEMS, "round_budget": -1}, "round_budget: -1"),
    ],
)
def test_offer_refusals(who: str, payload: dict[str, Any], match: str) -> None:
    chain = offered()
    chain.refused({"pub": PUB, "mec": MEC}[who], "incentive.offer", payload, match)


def test_sign_refusals() -> None:
    chain = Chain(GENESIS)
    publish(chain, pool=POOL)
    sign = {"task_id": "t1", "item": "gold"}
    chain.refused(D0, "incentive.sign", sign, "task_id: 't1' offers no items")
    chain.ok(PUB, "incentive.offer", {"task_id": "t1", "items": ITEMS})
    chain.refused(MEC, "incentive.sign", sign, "needs 'device'")
    chain.refused(D0, "incentive.sign", {**sign, "item": "silver"}, "item: 'silver' is not one of")
    chain.refused(D0, "incentive.sign", sign, "below the floor")  # T = 0.5 with no events
    chain.refused(D0, "incentive.sign", {**sign, "x": 1}, "x: unknown field")
    chain.ok(PUB, "task.close", {"task_id": "t1"})
    chain.refused(D0, "incentive.sign", {**sign, "item": "basic"}, "task 't1' is closed")


@pytest.mark.parametrize(
    ("who", "over", "match"),
    [
        ("d00", {}, "only the publisher of 't1' or a MEC may pay"),
        ("mec", {"round": 3}, "round: 3 is beyond task 't1'"),
        ("mec", {"round": 0}, "round: 0 out of range"),
        ("mec", {"duration_ms": 0}, "duration_ms: 0 out of range"),
        ("mec", {"reports": []}, "reports: must be a non-empty list"),
        ("mec", {"reports": [report("d00"), report("d00")]}, "reports: duplicate device"),
        ("mec", {"reports": [report("mec")]}, "'mec' is not a registered device"),
        ("mec", {"reports": [report("ghost")]}, "'ghost' is not a registered device"),
        ("mec", {"reports": [report("d00", quality=1.5)]}, "quality: 1.5 out of range"),
        ("mec", {"reports": [report("d00", samples=-1)]}, "samples: -1 out of range"),
        ("mec", {"reports": [report("d00", blocks=True)]}, "blocks: must be an integer"),
        ("mec", {"reports": [report("d00", gpu=1)]}, "gpu: unknown field"),
        ("mec", {"reports": [["d00", 5]]}, "reports: each must be [device, {factors}]"),
        ("mec", {"task_id": "t2"}, "task_id: 't2' offers no items"),
        ("mec", {"tip": 1}, "tip: unknown field"),
    ],
)
def test_pay_refusals(who: str, over: dict[str, Any], match: str) -> None:
    chain = offered()
    publish(chain, "t2", rounds=2)
    key = {"mec": MEC, "d00": D0}[who]
    payload = {"task_id": "t1", "round": 1, "duration_ms": 1000, "reports": [report("d00")]}
    chain.refused(key, "incentive.pay", {**payload, **over}, match)


def test_pay_refuses_a_closed_task() -> None:
    chain = offered()
    chain.ok(PUB, "task.close", {"task_id": "t1"})
    payload = {"task_id": "t1", "round": 1, "duration_ms": 1000, "reports": [report("d00")]}
    chain.refused(MEC, "incentive.pay", payload, "task 't1' is closed")


# ---------------------------------------------------------------------------- device types


def test_device_types_separate_flippers_and_give_signable_items() -> None:
    chain, flippers, history = simulate(seed=14)
    devices = sorted(DEVICE_KEYS)
    feats = features(chain.state, devices)
    types = device_types(feats, n_types=3, seed=0)
    assert types == device_types(feats, n_types=3, seed=0)  # seeded: the same every time
    assert {types[d] for d in flippers} == {0}
    assert all(types[d] > 0 for d in devices if d not in flippers)
    reps = history[-1]
    items = items_for(types, reps)
    assert [i["type"] for i in items] == sorted({*types.values()})
    assert items[-1]["multiplier"] == 1.0
    # the publisher posts them; every device can sign its own type's item, a flipper
    # cannot sign the top one
    chain.ok(
        PUB,
        "task.publish",
        {"task_id": "t2", "reward_pool": 0, "rounds": 1, "model": "m", "dataset": "d"},
    )
    chain.ok(PUB, "incentive.offer", {"task_id": "t2", "items": items})
    for d in devices:
        chain.ok(DEVICE_KEYS[d], "incentive.sign", {"task_id": "t2", "item": f"type-{types[d]}"})
    top = items[-1]["name"]
    for d in sorted(flippers):
        chain.refused(DEVICE_KEYS[d], "incentive.sign", {"task_id": "t2", "item": top}, "floor")


def test_device_types_edge_cases() -> None:
    assert device_types({}, 3) == {}
    assert device_types({"a": [0.5, 1.0], "b": [0.5, 1.0]}, 3) == {"a": 0, "b": 0}
    assert device_types({"a": [0.9], "b": [0.1]}, 2) == {"a": 1, "b": 0}
    with pytest.raises(ValueError, match="n_types"):
        device_types({"a": [1.0]}, 0)
    with pytest.raises(ValueError, match="finite"):
        device_types({"a": [float("nan")], "b": [1.0]}, 2)


def test_unused_contracts_leave_a_chain_unchanged() -> None:
    """A genesis state has no row of the new contracts (the state roots of existing chains
    do not change by their registration)."""
    chain = Chain(GENESIS)
    namespaces = {ns for ns, _, _ in chain.state.to_rows()}
    assert not {n for n in namespaces if n.startswith(("reputation", "incentive"))}
