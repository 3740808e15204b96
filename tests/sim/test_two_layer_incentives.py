"""The two-layer scheme's incentives (Table 1) over the in-memory network (3 MECs x 4 devices,
3 full devices per MEC): contract items on the GMUC, devices' signatures, each MEC's
``incentive.pay`` per round; honest devices earn, a label flipper does not, full devices get
mining rewards, and the task never pays more than its pool."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from node.contracts import incentive, reputation, task, token
from node.core.tx import Transaction
from node.schemes.gossip_fedavg.scheme import gossip_peers
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import TASK_ID, VanillaNet
from topologies.spec import LinkKind

ROUNDS = 4
POOL = 12_000
PARAMS = {
    "full_devices": 3,
    "fanout": 2,
    "heartbeat_s": 0.1,
    "want_timeout_s": 0.5,
    "reputation_threshold": 0.5,
}
FLIPPER = "dev1-1"  # a full device: it mines its MEC's LMUC blocks even once unselected


def gmuc_txs(chain: Any) -> list[Transaction]:
    """Every transaction of the GMUC, in order."""
    store = chain.replica.chain.store
    return [tx for h in range(1, chain.height + 1) for tx in store.block(h).txs]


def test_rounds_pay_honest_devices_and_miners_not_the_flipper(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=6)
    learning = digits_learning(ROUNDS, local_epochs=2)
    flip = {"from_round": 1, "until_round": None, "name": "label_flip", "params": {"strength": 1.0}}
    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=PARAMS,
        seed=6,
        reward_pool=POOL,
        config={
            "startup_timeout_s": 120,
            "behaviours": lambda nid: [flip] if nid == FLIPPER else [],
        },
    )
    chain = nodes["pub"].chains["gmuc-t0"]
    state = chain.replica.chain.state
    devices = sorted(n.id for n in net.topology.daemons() if n.id.startswith("dev"))
    full = {f"dev{m}-{i}" for m in range(3) for i in range(3)}
    txs = gmuc_txs(chain)
    # the items are on chain: the first offer with the task, a new one every round
    assert sum(tx.type == "incentive.offer" for tx in txs) == ROUNDS + 1
    device_of = {net.keys[d].public_key: d for d in devices}
    signers = {device_of[tx.sender] for tx in txs if tx.type == "incentive.sign"}
    assert signers == set(devices)  # every device signed the first offer's item
    # every round: each MEC's signed payment after the round's votes and records
    pays = [tx for tx in txs if tx.type == "incentive.pay"]
    assert {(tx.payload["round"], tx.sender) for tx in pays} >= {
        (r, nodes[m].chains["gmuc-t0"].replica.key.public_key)
        for r in range(1, ROUNDS + 1)
        for m in ("mec0", "mec1", "mec2")
    }
    total = 0
    for r in range(1, ROUNDS + 1):
        record = incentive.payment(state, TASK_ID, r)
        assert record is not None, r
        assert record["total"] == sum(record["paid"].values()) <= record["budget"]
        assert FLIPPER not in record["paid"], (r, record)
        total += record["total"]
    assert incentive.payment(state, TASK_ID, 1)["unpaid"][FLIPPER] == "negative_event"  # type: ignore[index]
    # the pool: every payment came out of it, the rest went back at task.close
    t = task.get_task(state, TASK_ID)
    assert t is not None and t["status"] == task.CLOSED
    assert 0 < total == int(t["paid"]) <= POOL
    balances = {d: token.balance_of(state, d) for d in devices}
    assert balances[FLIPPER] == 0, balances
    assert all(balances[d] > 0 for d in devices if d != FLIPPER), balances
    assert token.balance_of(state, "pub") == POOL - total
    # mining: the full devices' reports count LMUC blocks they co-signed, the light ones none
    blocks: dict[str, int] = {}
    for tx in pays:
        for device, factors in tx.payload["reports"]:
            blocks[device] = blocks.get(device, 0) + factors["blocks"]
    # every certificate holds the MEC's and at least two full devices' signatures (PBFT, 4)
    for m in range(3):
        honest = [d for d in sorted(full) if d.startswith(f"dev{m}-") and d != FLIPPER]
        assert sum(blocks.get(d, 0) for d in honest) >= ROUNDS, (m, blocks)
    assert all(blocks.get(d, 0) == 0 for d in devices if d not in full), blocks
    # relay: each device's figure is the gossip bytes it forwarded to its neighbours (pushes
    # and pull answers of others' items), not what it received: it differs between devices
    relay: dict[str, int] = {}
    for tx in pays:
        for device, factors in tx.payload["reports"]:
            relay[device] = relay.get(device, 0) + factors["relay_bytes"]
    gossip = {d: nodes[d]._role.gossip.stats for d in devices}  # type: ignore[attr-defined]
    peers = {d: gossip_peers(net.topology, d) for d in devices}
    for d in devices:  # a device claims what its gossip counted; the MEC caps it
        assert relay.get(d, 0) <= gossip[d].forwarded_bytes, (d, relay, gossip[d])
        assert gossip[d].forwarded_bytes > 0 and len(peers[d]) == 4  # full D2D mesh + its MEC
    honest = [d for d in devices if d != FLIPPER]
    assert all(relay[d] > 0 for d in honest), relay
    assert relay[FLIPPER] < min(relay[d] for d in honest)  # unselected rounds are not paid
    assert reputation.reputation(state, FLIPPER) < 0.5


def test_relay_rewards_follow_the_bytes_each_device_forwarded(tmp_path: Path) -> None:
    """D2D links in a line per group (d0 - d1 - d2 - d3, each also linked to its MEC): the
    middle devices forward each item to two peers, the ends to one at most, and the relay
    figure the MEC pays follows what each forwarded (in a full mesh every device forwards the
    same: the first test)."""
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=7)
    pos = {
        n.id: int(n.id.rsplit("-", 1)[1]) for n in net.topology.daemons() if n.id.startswith("dev")
    }
    line = tuple(
        lk
        for lk in net.topology.links
        if lk.kind != LinkKind.D2D or abs(pos[lk.src] - pos[lk.dst]) == 1
    )
    net = VanillaNet(dataclasses.replace(net.topology, links=line), net.keys)
    learning = digits_learning(3)
    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=PARAMS,
        seed=7,
        reward_pool=POOL,
        config={"startup_timeout_s": 120},
    )
    pays = [tx for tx in gmuc_txs(nodes["pub"].chains["gmuc-t0"]) if tx.type == "incentive.pay"]
    relay: dict[str, int] = {}
    for tx in pays:
        for device, factors in tx.payload["reports"]:
            relay[device] = relay.get(device, 0) + factors["relay_bytes"]
    devices = sorted(pos)
    gossip = {d: nodes[d]._role.gossip.stats for d in devices}  # type: ignore[attr-defined]
    figures = {
        d: (gossip[d].received_bytes, gossip[d].forwarded_bytes, relay.get(d)) for d in devices
    }
    for d in devices:
        assert len(gossip_peers(net.topology, d)) == (3 if pos[d] in (1, 2) else 2)
        assert 0 < relay[d] <= gossip[d].forwarded_bytes, figures
    for m in range(3):
        middle = [f"dev{m}-1", f"dev{m}-2"]
        ends = [f"dev{m}-0", f"dev{m}-3"]
        # the ends forward each item to one peer at most, the middle devices to two
        assert min(gossip[d].forwarded_bytes for d in middle) > max(
            gossip[d].forwarded_bytes for d in ends
        ), figures
        assert min(relay[d] for d in middle) > max(relay[d] for d in ends), figures
        # what the MEC can check itself: the relayed copies each device sent it
        seen = nodes[f"mec{m}"]._role.gossip.stats.relayed_from  # type: ignore[attr-defined]
        assert all(seen[d] <= gossip[d].forwarded_bytes for d in middle + ends), (seen, figures)
        assert sum(seen[d] for d in middle + ends) > 0, seen
