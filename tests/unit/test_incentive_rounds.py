"""The incentive contract on a two-layer GMUC: three MECs each pay their own devices per round,
after the round's votes (gmuc) and reputation records."""

from __future__ import annotations

import random
from typing import Any

from node.contracts import gmuc, gmuc_request, incentive, task, token
from node.contracts.runtime import Genesis
from node.keys import NodeKey

from .test_contracts import Chain

PUB = NodeKey.from_seed(b"\x60" * 32)
MECS = {f"m{i}": NodeKey.from_seed(bytes([0x61 + i]) * 32) for i in range(3)}
DEVICES = {f"d{i:02d}": NodeKey.from_seed(bytes([0x70 + i]) * 32) for i in range(9)}
OWN = {m: [f"d{3 * i + j:02d}" for j in range(3)] for i, m in enumerate(MECS)}
SUPPLY = 90_000
POOL = 60_000
GENESIS = Genesis(
    members={
        "pub": (PUB.public_key, "publisher"),
        **{m: (k.public_key, "mec") for m, k in MECS.items()},
        **{d: (k.public_key, "device") for d, k in DEVICES.items()},
    },
    balances={"pub": SUPPLY},
    chain_id="incentive-rounds",
)
ITEMS = [
    {"name": "type-0", "type": 0, "floor": 0.0, "multiplier": 0.5},
    {"name": "type-1", "type": 1, "floor": 0.6, "multiplier": 1.0},
]
AGG = bytes(range(32))
BAD = bytes(32)


def started(rounds: int = 4) -> Chain:
    """Task t1 published with POOL in escrow, ITEMS offered, every device signed type-0."""
    chain = Chain(GENESIS)
    chain.ok(
        PUB,
        "task.publish",
        {"task_id": "t1", "reward_pool": POOL, "rounds": rounds, "model": "m", "dataset": "d"},
    )
    chain.ok(PUB, "incentive.offer", {"task_id": "t1", "items": ITEMS})
    for key in DEVICES.values():
        chain.ok(key, "incentive.sign", {"task_id": "t1", "item": "type-0"})
    return chain


def factors(**over: Any) -> dict[str, Any]:
    """One device's round figures."""
    base = {
        "quality": 1.0,
        "samples": 100,
        "cpu_mhz": 1000,
        "energy_mj": 50,
        "blocks": 1,
        "relay_bytes": 1000,
    }
    return {**base, **over}


def vote_round(
    chain: Chain, round_: int, contributors: list[str], bad_mec: str | None = None
) -> None:
    """Every MEC votes (`bad_mec` another aggregate) and records its devices' events."""
    for m, key in MECS.items():
        payload = {
            "task_id": "t1",
            "round": round_,
            "aggregate": BAD if m == bad_mec else AGG,
            "contributors": contributors,
        }
        chain.ok(key, "gmuc.vote", payload)


def pay(chain: Chain, mec: str, round_: int, reports: list[list[Any]]) -> dict[str, Any]:
    """One MEC's pay report; its ``paid`` event."""
    payload = {"task_id": "t1", "round": round_, "duration_ms": 30_000, "reports": reports}
    receipt = chain.ok(MECS[mec], "incentive.pay", payload)
    assert [e.name for e in receipt.events] == ["paid"]
    data: dict[str, Any] = receipt.events[0].data
    return data


def invariant(chain: Chain) -> None:
    """Escrow plus paid is the pool; no token created or lost."""
    t = task.get_task(chain.state, "t1")
    assert t is not None
    assert int(t["reward_pool"]) + int(t["paid"]) == POOL
    assert token.total_supply(chain.state) + task.escrowed(chain.state) == SUPPLY


def test_each_mec_pays_its_share_and_the_sums_match() -> None:
    chain = started()
    everyone = sorted(DEVICES)
    vote_round(chain, 1, everyone)
    for m in MECS:
        chain.ok(
            MECS[m],
            "reputation.record",
            {"task_id": "t1", "round": 1, "events": [[d, True] for d in OWN[m]]},
        )
    events = [pay(chain, m, 1, [[d, factors()] for d in OWN[m]]) for m in MECS]
    # budget 60000 // 4 = 15000; a MEC's share 5000; three equal devices at multiplier 0.5:
    # 5000 * 0.5 * (1/3) = 833 each (S = 1: 30 s < ref_ms)
    assert [e["share"] for e in events] == [5000, 5000, 5000]
    assert all(a == 833 for e in events for _, a, _ in e["paid"])
    record = incentive.payment(chain.state, "t1", 1)
    assert record is not None
    assert record["total"] == sum(record["paid"].values()) == sum(e["total"] for e in events)
    assert record["total"] == sum(record["payers"].values()) == 9 * 833
    assert all(chain.balance(d) == 833 for d in DEVICES)
    invariant(chain)


def test_misbehaving_rejected_and_outvoted_are_not_paid() -> None:
    chain = started()
    contributors = sorted(set(DEVICES) - {"d01"})  # the decided aggregate left d01 out
    vote_round(chain, 1, contributors, bad_mec="m2")
    assert gmuc.get_round(chain.state, "t1", 1)["outvoted"] == ["m2"]  # type: ignore[index]
    chain.ok(
        MECS["m0"],
        "reputation.record",
        {"task_id": "t1", "round": 1, "events": [["d00", False], ["d02", True]]},
    )
    data = pay(chain, "m0", 1, [[d, factors()] for d in OWN["m0"]])
    assert data["unpaid"] == [["d00", "negative_event"], ["d01", "rejected"]]
    assert [d for d, _, _ in data["paid"]] == ["d02"]
    # the outvoted MEC's report is refused (a reverted transaction with the reason)
    payload = {"task_id": "t1", "round": 1, "duration_ms": 1, "reports": [["d06", factors()]]}
    error = chain.refused(MECS["m2"], "incentive.pay", payload, "outvoted")
    assert error == "sender: MEC 'm2' was outvoted in round 1 of 't1'; its report is refused"
    # a device another MEC already reported is not paid twice
    data = pay(chain, "m1", 1, [["d02", factors()], ["d03", factors()]])
    assert data["unpaid"] == [["d02", "already_reported"]]
    # a round without a decided aggregate pays nobody
    for m in ("m0", "m1"):
        chain.ok(
            MECS[m],
            "gmuc.vote",
            {"task_id": "t1", "round": 2, "aggregate": bytes([ord(m[1])] * 32), "contributors": []},
        )
    data = pay(chain, "m0", 2, [["d00", factors(samples=0)]])
    assert data["unpaid"] == [["d00", "undecided"]] and data["total"] == 0
    invariant(chain)


def test_the_floor_refuses_a_signature_and_a_fallen_device_is_not_paid() -> None:
    chain = started()
    chain.refused(
        DEVICES["d00"], "incentive.sign", {"task_id": "t1", "item": "type-1"}, "below the floor"
    )
    chain.ok(
        MECS["m0"], "reputation.record", {"task_id": "t1", "round": 1, "events": [["d00", True]]}
    )
    chain.ok(DEVICES["d00"], "incentive.sign", {"task_id": "t1", "item": "type-1"})
    # d00 misbehaves twice: its reputation falls below type-1's floor
    for r in (2, 3):
        chain.ok(
            MECS["m0"],
            "reputation.record",
            {"task_id": "t1", "round": r, "events": [["d00", False]]},
        )
    data = pay(chain, "m0", 4, [["d00", factors()]])
    assert data["unpaid"] == [["d00", "below_floor"]]


def _random_run(seed: int) -> tuple[bytes, list[int]]:
    rng = random.Random(seed)
    rounds = 6
    chain = started(rounds)
    totals: list[int] = []
    for r in range(1, rounds + 1):
        kept = sorted(d for d in DEVICES if rng.random() > 0.1)
        vote_round(chain, r, kept, bad_mec=rng.choice([None, "m1"]))
        for m in MECS:
            events = [[d, rng.random() > 0.2] for d in OWN[m]]
            chain.ok(MECS[m], "reputation.record", {"task_id": "t1", "round": r, "events": events})
        for m in MECS:
            tally = gmuc.get_round(chain.state, "t1", r)
            assert tally is not None
            if m in tally["outvoted"]:
                continue
            reports = [
                [
                    d,
                    factors(
                        quality=rng.random(),
                        samples=rng.randrange(0, 500),
                        cpu_mhz=rng.randrange(0, 3000),
                        energy_mj=rng.randrange(0, 900),
                        blocks=rng.randrange(0, 4),
                        relay_bytes=rng.randrange(0, 10**6),
                    ),
                ]
                for d in OWN[m]
            ]
            data = pay(chain, m, r, reports)
            assert data["total"] <= data["share"] <= data["budget"]
        record = incentive.payment(chain.state, "t1", r)
        assert record is not None
        assert record["total"] == sum(record["paid"].values()) <= record["budget"]
        totals.append(int(record["total"]))
        invariant(chain)
    return chain.state.root(), totals


def test_random_rounds_never_overdraw_and_are_deterministic() -> None:
    root, totals = _random_run(5)
    assert sum(totals) <= POOL and sum(totals) > 0
    assert _random_run(5) == (root, totals)
    assert _random_run(6)[0] != root


def test_a_mec_is_not_paid_for_another_mecs_device() -> None:
    chain = started()
    chain.ok(
        PUB,
        "gmuc.request",
        {"task_id": "t1", "min_samples": 0, "min_cpu_mhz": 0, "min_energy_j": 0},
    )
    resources = {"samples": 100, "cpu_mhz": 1500, "energy_j": 200}
    opinion = [0, 0, 1_000_000]
    for device, mec in (("d00", "m0"), ("d03", "m1")):
        message = gmuc_request.response_message(GENESIS.chain_id, "t1", device, resources, opinion)
        payload = {
            "task_id": "t1",
            "device": device,
            **resources,
            "opinion": opinion,
            "signature": DEVICES[device].sign(message),
        }
        chain.ok(MECS[mec], "gmuc.respond", payload)
    data = pay(chain, "m0", 1, [["d00", factors()], ["d03", factors()]])
    assert [d for d, _, _ in data["paid"]] == ["d00"]
    assert data["unpaid"] == [["d03", "not_its_device"]]
