"""Unit tests for the FL task contract: escrow, rounds, rewards and a full lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from node.contracts import task, token
from node.contracts.base import Event
from node.contracts.genesis import Genesis
from node.core.encoding import sha256
from node.keys import NodeKey

from .test_contracts import DEV1, DEV2, DEV3, GENESIS, MEC, PUB, Chain

PUB2 = NodeKey.from_seed(b"\x20" * 32)
GENESIS2 = Genesis(
    members={**GENESIS.members, "pub2": (PUB2.public_key, "publisher")},
    balances={**GENESIS.balances, "pub2": 500},
    chain_id=GENESIS.chain_id,
)
PUBLISH = {"task_id": "t1", "reward_pool": 300, "rounds": 3, "model": "cnn", "dataset": "mnist"}
DEVICES = {"dev1": DEV1, "dev2": DEV2, "dev3": DEV3}


def blob(tag: str) -> bytes:
    """A fake 32-byte blob hash."""
    return sha256(tag.encode())


def update(round_: int, tag: str = "u", **over: Any) -> dict[str, Any]:
    """A record_update payload."""
    return {
        "task_id": "t1",
        "round": round_,
        "blob": blob(tag),
        "size": 1024,
        "samples": 50,
        **over,
    }


def global_(round_: int, contributors: list[str], **over: Any) -> dict[str, Any]:
    """A record_global payload."""
    return {
        "task_id": "t1",
        "round": round_,
        "blob": blob(f"g{round_}"),
        "size": 1024,
        "accuracy": 0.5,
        "contributors": contributors,
        **over,
    }


def published() -> Chain:
    """A chain with task t1 published by pub (and pub2 as a second publisher)."""
    chain = Chain(GENESIS2)
    chain.ok(PUB, "task.publish", PUBLISH)
    return chain


def one_round(chain: Chain, round_: int, devices: tuple[str, ...] = ("dev1", "dev2")) -> None:
    """Record updates by `devices` and the global model of `round_`."""
    for node_id in devices:
        chain.ok(DEVICES[node_id], "task.record_update", update(round_, f"{node_id}{round_}"))
    chain.ok(PUB, "task.record_global", global_(round_, list(devices)))


# ---------------------------------------------------------------------------- publish


def test_publish_escrows_the_pool() -> None:
    chain = Chain(GENESIS2)
    receipt = chain.ok(PUB, "task.publish", PUBLISH)
    assert receipt.events == (
        Event(
            "task",
            "published",
            {"task_id": "t1", "publisher": "pub", "reward_pool": 300, "rounds": 3},
        ),
    )
    assert chain.balance("pub") == 700
    assert task.escrowed(chain.state) == 300
    assert task.get_task(chain.state, "t1") == {
        "publisher": "pub",
        "reward_pool": 300,
        "paid": 0,
        "rounds": 3,
        "model": "cnn",
        "dataset": "mnist",
        "round": 0,
        "status": "open",
    }
    chain.ok(PUB, "task.publish", {**PUBLISH, "task_id": "free", "reward_pool": 0})
    assert chain.balance("pub") == 700


@pytest.mark.parametrize(
    ("key", "over", "match"),
    [
        (DEV1, {}, "sender: role 'device'"),
        (MEC, {}, "sender: role 'mec'"),
        (PUB, {"reward_pool": 1001}, "amount: insufficient"),
        (PUB, {"reward_pool": -1}, "reward_pool:"),
        (PUB, {"reward_pool": "10"}, "reward_pool:"),
        (PUB, {"rounds": 0}, "rounds:"),
        (PUB, {"rounds": 2.0}, "rounds:"),
        (PUB, {"task_id": "a/b"}, "task_id:"),
        (PUB, {"task_id": ""}, "task_id:"),
        (PUB, {"task_id": 1}, "task_id:"),
        (PUB, {"model": ""}, "model:"),
        (PUB, {"model": None}, "model:"),
        (PUB, {"dataset": "x" * 200}, "dataset:"),
        (PUB, {"extra": 1}, "extra: unknown field"),
    ],
)
def test_publish_refusals(key: NodeKey, over: dict[str, Any], match: str) -> None:
    Chain(GENESIS2).refused(key, "task.publish", {**PUBLISH, **over}, match)


def test_publish_refuses_missing_field_and_duplicate_id() -> None:
    chain = published()
    chain.refused(
        PUB, "task.publish", {k: v for k, v in PUBLISH.items() if k != "rounds"}, "rounds: missing"
    )
    chain.refused(PUB2, "task.publish", PUBLISH, "task_id: 't1' already exists")


# ----------------------------------------------------------------------- record_update


def test_record_update() -> None:
    chain = published()
    receipt = chain.ok(DEV1, "task.record_update", update(1, "a"))
    assert receipt.events[0] == Event(
        "task",
        "update",
        {"task_id": "t1", "round": 1, "node": "dev1", "blob": blob("a").hex(), "samples": 50},
    )
    assert chain.state.get(task.NS_UPDATE, "t1/1/dev1") == {
        "blob": blob("a").hex(),
        "size": 1024,
        "samples": 50,
    }
    chain.ok(DEV2, "task.record_update", update(1, "b", size=0))


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (PUB, update(1), "sender: role 'publisher'"),
        (MEC, update(1), "sender: role 'mec'"),
        (DEV1, update(1, task_id="nope"), "task_id: no task 'nope'"),
        (DEV1, update(0), "round:"),
        (DEV1, update(2), "round: 2 is not the round being trained (1)"),
        (DEV1, update(True), "round:"),
        (DEV1, update(1, blob=b"short"), "blob: must be 32 bytes"),
        (DEV1, update(1, blob=blob("x").hex()), "blob: must be bytes"),
        (DEV1, update(1, size=-1), "size:"),
        (DEV1, update(1, samples=0), "samples:"),
        (DEV1, update(1, samples="5"), "samples:"),
        (DEV1, update(1, model="x"), "model: unknown field"),
    ],
)
def test_record_update_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    published().refused(key, "task.record_update", payload, match)


def test_record_update_once_per_round_and_only_while_rounds_remain() -> None:
    chain = published()
    chain.ok(DEV1, "task.record_update", update(1, "a"))
    chain.refused(DEV1, "task.record_update", update(1, "b"), "already recorded")
    chain.ok(PUB, "task.record_global", global_(1, ["dev1"]))
    chain.refused(DEV2, "task.record_update", update(1), "round: 1 is not the round")
    chain.ok(DEV1, "task.record_update", update(2, "c"))  # a new round: a new update
    one_round(chain, 2, ("dev2",))
    one_round(chain, 3)
    chain.refused(DEV1, "task.record_update", update(4), "round: all 3 rounds are recorded")


def test_closed_task_accepts_nothing() -> None:
    chain = published()
    chain.ok(DEV1, "task.record_update", update(1))
    chain.ok(PUB, "task.close", {"task_id": "t1"})
    chain.refused(DEV2, "task.record_update", update(1), "task_id: task 't1' is closed")
    chain.refused(PUB, "task.record_global", global_(1, ["dev1"]), "is closed")
    chain.refused(PUB, "task.reward", {"task_id": "t1", "to": "dev1", "amount": 1}, "is closed")
    chain.refused(PUB, "task.close", {"task_id": "t1"}, "is closed")


# ----------------------------------------------------------------------- record_global


def test_record_global() -> None:
    chain = published()
    chain.ok(DEV2, "task.record_update", update(1, "b"))
    chain.ok(DEV1, "task.record_update", update(1, "a"))
    receipt = chain.ok(PUB, "task.record_global", global_(1, ["dev2", "dev1"], accuracy=1))
    assert receipt.events[0].data["contributors"] == ["dev1", "dev2"]
    assert chain.state.get(task.NS_GLOBAL, "t1/1") == {
        "blob": blob("g1").hex(),
        "size": 1024,
        "accuracy": 1.0,
        "contributors": ["dev1", "dev2"],
    }
    assert chain.state.get(task.NS, "t1")["round"] == 1


def test_a_round_without_contributors_closes_and_the_next_one_records() -> None:
    chain = published()
    chain.ok(DEV1, "task.record_update", update(1, "a"))
    chain.ok(PUB, "task.record_global", global_(1, []))  # no update used: the model stays
    chain.ok(DEV1, "task.record_update", update(2, "a2"))
    chain.ok(PUB, "task.record_global", global_(2, ["dev1"]))

    assert chain.state.get(task.NS_GLOBAL, "t1/1")["contributors"] == []
    assert chain.state.get(task.NS, "t1")["round"] == 2


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (PUB2, global_(1, ["dev1"]), "sender: only the publisher of 't1'"),
        (DEV1, global_(1, ["dev1"]), "sender: only the publisher"),
        (PUB, global_(2, ["dev1"]), "round: 2 is not the round being trained (1)"),
        (PUB, global_(1, ["dev2"]), "contributors: 'dev2' has no update for round 1"),
        (PUB, global_(1, ["ghost"]), "contributors: 'ghost' has no update"),
        (PUB, global_(1, ["dev1", "dev1"]), "contributors: duplicate"),
        (PUB, global_(1, "dev1"), "contributors: must be a list"),  # type: ignore[arg-type]
        (PUB, global_(1, [3]), "contributors:"),  # type: ignore[list-item]
        (PUB, global_(1, ["dev1"], accuracy=1.5), "accuracy:"),
        (PUB, global_(1, ["dev1"], accuracy=-0.1), "accuracy:"),
        (PUB, global_(1, ["dev1"], accuracy=False), "accuracy:"),
        (PUB, global_(1, ["dev1"], accuracy="0.5"), "accuracy:"),
        (PUB, global_(1, ["dev1"], blob=b""), "blob:"),
        (PUB, global_(1, ["dev1"], size=None), "size:"),
        (PUB, {"task_id": "t1", "round": 1}, "blob: missing"),
    ],
)
def test_record_global_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    chain = published()
    chain.ok(DEV1, "task.record_update", update(1))
    chain.refused(key, "task.record_global", payload, match)


# ----------------------------------------------------------------------- reward, close


def test_reward_pays_from_the_pool() -> None:
    chain = published()
    receipt = chain.ok(PUB, "task.reward", {"task_id": "t1", "to": "dev3", "amount": 120})
    assert receipt.events == (
        Event("task", "reward", {"task_id": "t1", "to": "dev3", "amount": 120}),
    )
    assert chain.balance("dev3") == 120
    record = chain.state.get(task.NS, "t1")
    assert (record["reward_pool"], record["paid"]) == (180, 120)


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (PUB2, {"task_id": "t1", "to": "dev1", "amount": 1}, "sender: only the publisher"),
        (DEV1, {"task_id": "t1", "to": "dev1", "amount": 1}, "sender: only the publisher"),
        (PUB, {"task_id": "t1", "to": "dev1", "amount": 301}, "exceeds the reward pool (300)"),
        (PUB, {"task_id": "t1", "to": "dev1", "amount": 0}, "amount:"),
        (PUB, {"task_id": "t1", "to": "ghost", "amount": 1}, "to: 'ghost' is not registered"),
        (PUB, {"task_id": "t1", "to": "Dev 1", "amount": 1}, "to:"),
        (PUB, {"task_id": "t2", "to": "dev1", "amount": 1}, "task_id: no task 't2'"),
        (PUB, {"task_id": "t1", "amount": 1}, "to: missing"),
    ],
)
def test_reward_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    published().refused(key, "task.reward", payload, match)


def test_close_refunds_the_rest() -> None:
    chain = published()
    chain.ok(PUB, "task.reward", {"task_id": "t1", "to": "dev1", "amount": 100})
    receipt = chain.ok(PUB, "task.close", {"task_id": "t1"})
    assert receipt.events[0].data == {"task_id": "t1", "refund": 200, "round": 0}
    assert chain.balance("pub") == 900
    assert task.escrowed(chain.state) == 0
    assert chain.state.get(task.NS, "t1")["status"] == "closed"


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (PUB2, {"task_id": "t1"}, "sender: only the publisher"),
        (DEV1, {"task_id": "t1"}, "sender: only the publisher"),
        (PUB, {"task_id": "zz"}, "task_id: no task"),
        (PUB, {}, "task_id: missing"),
    ],
)
def test_close_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    published().refused(key, "task.close", payload, match)


# -------------------------------------------------------------------------- lifecycle


def test_full_lifecycle() -> None:
    chain = Chain(GENESIS2)
    supply = token.total_supply(chain.state)  # 1660
    chain.ok(PUB, "task.publish", PUBLISH)  # pub: 1000 - 300 = 700
    participants = {1: ("dev1", "dev2", "dev3"), 2: ("dev1", "dev2"), 3: ("dev1", "dev3")}
    for round_, devices in participants.items():
        one_round(chain, round_, devices)
        assert chain.state.get(task.NS, "t1")["round"] == round_
        assert token.total_supply(chain.state) + task.escrowed(chain.state) == supply
    # 40 tokens per contribution: dev1 3x = 120, dev2 2x = 80, dev3 2x = 80 (sum 280 of 300)
    for node_id in ("dev1", "dev2", "dev3"):
        count = sum(node_id in devices for devices in participants.values())
        chain.ok(PUB, "task.reward", {"task_id": "t1", "to": node_id, "amount": 40 * count})
    chain.ok(PUB, "task.close", {"task_id": "t1"})  # refund 20: pub 720
    assert {nid: chain.balance(nid) for nid in ("pub", "dev1", "dev2", "dev3", "mec", "pub2")} == {
        "pub": 720,
        "dev1": 220,
        "dev2": 130,
        "dev3": 80,
        "mec": 10,
        "pub2": 500,
    }
    assert token.total_supply(chain.state) == supply
    record = chain.state.get(task.NS, "t1")
    assert record == {
        "publisher": "pub",
        "reward_pool": 0,
        "paid": 280,
        "rounds": 3,
        "model": "cnn",
        "dataset": "mnist",
        "round": 3,
        "status": "closed",
    }
    assert chain.state.get(task.NS_GLOBAL, "t1/2")["contributors"] == ["dev1", "dev2"]
    assert len(chain.state.items(task.NS_UPDATE)) == 7
    assert len(chain.state.items(task.NS_GLOBAL)) == 3
