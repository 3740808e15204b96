"""Unit tests for the two-layer scheme's incentive helpers (`node.schemes.two_layer.incentives`):
item choice, quality and energy figures, the relay meter, the MEC's reports and the
publisher's checks of a MEC's pay report."""

from __future__ import annotations

from typing import Any

from node.contracts.runtime import Genesis, genesis_state
from node.core.block import CommitSignature
from node.core.tx import Transaction
from node.gossip.actions import GossipStats
from node.keys import NodeKey
from node.schemes.two_layer.incentives import (
    DeviceIncentives,
    DeviceTerms,
    ItemOffer,
    MecIncentives,
    PayReport,
    PublisherIncentives,
    RelayMeter,
    choose_item,
    energy_mj,
    offer_payload,
    quality_scores,
)

MEC = NodeKey.from_seed(b"\x21" * 32)
DEV = {f"d{i}": NodeKey.from_seed(bytes([0x30 + i]) * 32) for i in range(3)}
ROSTER = {"mec0": MEC.public_key.hex(), **{d: k.public_key.hex() for d, k in DEV.items()}}


def test_choose_item_takes_the_best_reachable_multiplier() -> None:
    offer = ItemOffer(1, ("a", "b", "c"), (0, 600_000, 900_000), (500_000, 800_000, 1_000_000), 0)
    assert choose_item(offer) == "a"
    assert choose_item(ItemOffer(1, offer.names, offer.floors, offer.multipliers, 700_000)) == "b"
    assert choose_item(ItemOffer(1, ("x",), (10,), (1,), 9)) is None


def test_quality_energy_and_the_relay_meter() -> None:
    assert quality_scores({"a": 0.9, "b": 0.6, "c": 0.3}) == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert quality_scores({"a": 0.0}) == {"a": 1.0} and quality_scores({}) == {}
    # 1e-28 * (1e6 * 100 * 2) * (2e9)^2 J = 0.08 J
    assert energy_mj(100, 2, 2000) == 80 and energy_mj(0, 1, 3000) == 0
    stats = GossipStats()
    meter = RelayMeter(lambda: stats.forwarded_bytes)
    stats.received_bytes = 500  # received is not relayed
    assert meter.take() == 0
    stats.relayed_bytes, stats.served_bytes = 7, 2
    assert meter.take() == 9 and meter.take() == 0
    stats.served_bytes += 4
    assert meter.take() == 4
    assert RelayMeter().take() == 0  # no source: nothing forwarded


def test_a_device_signs_only_a_new_choice() -> None:
    forwarded = [50]
    device = DeviceIncentives(DEV["d0"], "t1", lambda: forwarded[0])
    offer = ItemOffer(3, ("type-0",), (400_000,), (1_000_000,), 500_000)
    terms = device.on_offer(offer, 1234)
    tx = Transaction.from_bytes(terms.sign)
    tx.verify()
    assert (tx.type, tx.nonce, tx.payload) == (
        "incentive.sign",
        1234,
        {"task_id": "t1", "item": "type-0"},
    )
    assert terms.relay_bytes == 50
    again = device.on_offer(offer, 1300)
    assert again == DeviceTerms(3, b"", 0)


def test_the_mec_reports_selected_devices_with_capped_relay_bytes() -> None:
    keys = {k.public_key: d for d, k in DEV.items()}
    mec = MecIncentives("t1", DEV, keys)
    state = genesis_state(
        Genesis(
            members={d: (k.public_key, "device") for d, k in DEV.items()}, balances={}, chain_id="c"
        )
    )
    assert mec.offers(state, 1) == {}  # no offer on chain yet
    sign = DeviceIncentives(DEV["d0"], "t1").on_offer(ItemOffer(1, ("a",), (0,), (1,), 0), 5).sign
    assert mec.on_terms("d0", DeviceTerms(1, sign, 10**9)) is None
    assert mec.on_terms("d1", DeviceTerms(1, sign, 10)) == "terms from d1: not its incentive.sign"
    mec.on_gossip(300)
    block: Any = type("B", (), {})()
    block.certificate = (CommitSignature(DEV["d2"].public_key, bytes(64)),)
    mec.on_block(block, 200)
    reports = dict(
        (d, f)
        for d, f in mec.reports(
            state, {"d0": 120, "d1": 80}, {"d0": 0.8, "d1": 0.4}, 1, 2, ["d0", "d2"]
        )
    )
    assert sorted(reports) == ["d0", "d2"]  # d1 is not selected
    assert reports["d0"]["relay_bytes"] == 2 * 500  # capped: fanout x the group's bytes
    assert reports["d0"]["samples"] == 120 and reports["d0"]["quality"] == 1.0
    assert reports["d2"]["blocks"] == 1 and reports["d2"]["samples"] == 0
    assert mec.reports(state, {}, {}, 1, 2, ["d0"]) == []  # forgotten once reported


def test_the_mec_raises_a_claim_to_what_it_received_and_pays_relay_only_devices() -> None:
    keys = {k.public_key: d for d, k in DEV.items()}
    mec = MecIncentives("t1", DEV, keys)
    witness = GossipStats().relayed_from  # the MEC's gossip counters, a running total
    mec.witness = witness
    state = genesis_state(
        Genesis(
            members={d: (k.public_key, "device") for d, k in DEV.items()}, balances={}, chain_id="c"
        )
    )
    mec.on_gossip(1000)
    witness["d1"] += 300  # d1 relayed 300 bytes to the MEC itself, then claims 100
    witness["outsider"] += 50  # not a device of this MEC: ignored
    assert mec.on_terms("d1", DeviceTerms(1, b"", 100)) is None
    assert mec.on_terms("d2", DeviceTerms(1, b"", 700)) is None  # beyond what the MEC saw
    assert mec.on_terms("d0", DeviceTerms(1, b"", 0)) is None  # forwarded nothing
    reports = dict(mec.reports(state, {"d0": 10}, {"d0": 0.5}, 1, 2, list(DEV)))
    # d1 and d2 trained nothing and mined nothing: paid for their relaying alone
    assert {d: f["relay_bytes"] for d, f in reports.items()} == {"d0": 0, "d1": 300, "d2": 700}
    assert reports["d1"]["samples"] == 0 and reports["d1"]["blocks"] == 0
    mec.on_gossip(100)
    witness["d1"] += 40  # the next round counts only what is new
    assert mec.on_terms("d2", DeviceTerms(2, b"", 10**6)) is None
    again = dict(mec.reports(state, {}, {}, 1, 2, list(DEV)))
    assert {d: f["relay_bytes"] for d, f in again.items()} == {"d1": 40, "d2": 200}  # d2 capped
    mec.on_gossip(1000)
    assert mec.on_terms("d1", DeviceTerms(3, b"", 290)) is None  # 340 in all: 50 new
    assert mec.on_terms("d0", DeviceTerms(3, b"", 80)) is None  # d0 is out of the task now
    third = dict(mec.reports(state, {}, {}, 1, 2, ["d1", "d2"]))
    assert {d: f["relay_bytes"] for d, f in third.items()} == {"d1": 50}  # d2's excess: gone
    mec.on_gossip(1000)
    assert mec.reports(state, {}, {}, 1, 2, list(DEV)) == []  # d0's unselected bytes: gone


def test_offer_items_follow_the_reputations() -> None:
    state = genesis_state(
        Genesis(
            members={d: (k.public_key, "device") for d, k in DEV.items()}, balances={}, chain_id="c"
        )
    )
    payload = offer_payload(state, "t1", sorted(DEV), seed=1, ref_ms=0)
    assert payload == {
        "task_id": "t1",
        "items": [{"name": "type-0", "type": 0, "floor": 0.499999, "multiplier": 1.0}],
        "ref_ms": 1,
    }


def test_the_publisher_checks_a_pay_report() -> None:
    pub = PublisherIncentives(ROSTER, ["mec0"], list(DEV))
    pay = Transaction.create(MEC, "incentive.pay", 1, {"task_id": "t1"})
    sign = Transaction.create(DEV["d1"], "incentive.sign", 9, {"task_id": "t1", "item": "a"})
    forged = Transaction.create(DEV["d1"], "incentive.pay", 2, {"task_id": "t1"})
    assert pub.on_pay("mec0", PayReport(1, (forged.to_bytes(),))) is not None
    assert pub.on_pay("mec0", PayReport(1, (pay.to_bytes(), pay.to_bytes()))) is not None
    assert pub.on_pay("mec0", PayReport(2, (sign.to_bytes(), pay.to_bytes()))) is None
    assert pub.on_pay("mec0", PayReport(1, (pay.to_bytes(),))) is None
    assert [tx.type for tx in pub.take(1)] == ["incentive.pay"]
    assert [tx.type for tx in pub.take()] == ["incentive.sign", "incentive.pay"]
    assert pub.take() == []
