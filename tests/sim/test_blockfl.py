"""The blockfl scheme over the in-memory network: real daemons and roles (Ed25519, torch on
digits, real proof of work), each in its own thread; three miners race for every block."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec
from node.config import LearningConfig, NodeConfig
from node.contracts.task import NS_GLOBAL, global_key
from node.core.finality import ProofOfWork, meets_target
from node.daemon import Daemon
from node.ledger.chain import verify_store
from node.ledger.chains import open_chains
from node.ledger.timing import block_times
from node.metrics import MetricsWriter
from node.schemes import PlanInputs, make_scheme
from node.schemes.blockfl import BlockflScheme
from orchestrator.collect import read_records
from tests.sim.vanilla_net import TASK_ID, VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeKind

ROUNDS = 3
BITS = 10
PARAMS = {"difficulty_bits": BITS, "slice_attempts": 256, "settle_s": 1.5}
POOL = 600


def learning() -> LearningConfig:
    return learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=120,
    )


def run_blockfl(
    net: VanillaNet, tmp_path: Path, *, seed: int, params: dict[str, Any]
) -> dict[str, Daemon]:
    """Every daemon of `net` running scheme blockfl to the end, each in a thread."""
    daemons = net.topology.daemons()
    roster = net.roster
    scheme = make_scheme("blockfl", params)
    plan = scheme.plan(
        net.topology,
        {n.id: net.keys[n.id].public_key for n in daemons},
        PlanInputs("sim", TASK_ID, seed, POOL, "single"),
    )
    chains = {cid: chain.config for cid, chain in plan.chains.items()}
    nodes: dict[str, Daemon] = {}
    for spec in daemons:
        config = NodeConfig(
            run_id="sim",
            node_id=spec.id,
            scheme="blockfl",
            scheme_params=params,
            plan=plan.nodes[spec.id],
            seed=seed,
            node_dir=str(tmp_path),
            key_path="-",
            bind="-",
            endpoints={},
            roster=roster.to_hex(),
            topology=net.topology,
            shaping="none",
            learning=learning(),
            max_message_bytes=8 * 1024 * 1024,
            chains=chains,
            task_id=TASK_ID,
            startup_timeout_s=120,
        )
        (tmp_path / spec.id).mkdir()
        nodes[spec.id] = Daemon(
            config,
            net.topology,
            net.network.attach(spec.id),
            Codec(spec.id, net.keys[spec.id], roster, config.max_message_bytes),
            scheme.role(config.plan),
            MetricsWriter(tmp_path / spec.id / "metrics.jsonl", {"node": spec.id}),
            chains=open_chains(tmp_path / spec.id, chains, net.keys[spec.id]),
        )
    threads = [
        threading.Thread(target=d.run, kwargs={"install_signal_handlers": False})
        for d in nodes.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    assert not any(t.is_alive() for t in threads), "the run did not finish"
    for d in nodes.values():
        d.metrics.close()
    return nodes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VanillaNet, dict[str, Daemon]]:
    tmp_path = tmp_path_factory.mktemp("blockfl")
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=5)
    return tmp_path, net, run_blockfl(net, tmp_path, seed=5, params=PARAMS)


def records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r["event"] == event]


def test_every_round_is_mined_into_one_block_and_every_replica_agrees(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    tmp_path, net, nodes = run
    devices = sorted(n.id for n in net.topology.of_kind(NodeKind.DEVICE))
    miners = sorted(n.id for n in net.topology.of_kind(NodeKind.MEC))

    pub_rounds = records(tmp_path, "pub", "round")
    assert [r["round"] for r in pub_rounds] == list(range(1, ROUNDS + 1))
    assert all(r["contributors"] == len(devices) for r in pub_rounds)
    heads = {nid: (d.replica.height, d.replica.chain.head.hash) for nid, d in nodes.items()}
    assert len(set(heads.values())) == 1, f"every replica holds the same chain: {heads}"
    store = nodes["pub"].replica.chain.store
    assert verify_store(store).ok
    blocks = list(store.blocks(1))
    finality = nodes["pub"].replica.chain.config.finality
    assert isinstance(finality, ProofOfWork) and finality.difficulty_bits == BITS
    miner_keys = {net.keys[m].public_key: m for m in miners}
    for block in blocks:
        assert meets_target(block.hash, BITS)
        assert block.header.proposer in miner_keys
        assert [s.signer for s in block.certificate] == [block.header.proposer]
    for r in range(1, ROUNDS + 1):  # each round's updates, all in one block
        holding = [
            b
            for b in blocks
            if any(tx.type == "task.record_update" and tx.payload["round"] == r for tx in b.txs)
        ]
        assert len(holding) == 1, r
        assert sum(tx.type == "task.record_update" for tx in holding[0].txs) == len(devices)
    # the miners competed: each tried, and more blocks were mined than the chain kept or not
    mined = {m: records(tmp_path, m, "mined") for m in miners}
    assert sum(len(v) for v in mined.values()) >= len(blocks)
    assert all(rec["attempts"] >= 1 for v in mined.values() for rec in v)


def test_every_device_aggregated_the_global_model_the_publisher_recorded(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    _, net, nodes = run
    state = nodes["pub"].replica.chain.state
    for r in range(1, ROUNDS):  # the model each device trained round r+1 from
        rec = state.get(NS_GLOBAL, global_key(TASK_ID, r))
        blob = bytes.fromhex(rec["blob"])
        for dev in net.topology.of_kind(NodeKind.DEVICE):
            assert nodes[dev.id].replica.blobs.has(blob), (dev.id, r)


def test_rewards_are_proportional_to_data_size_and_paid_on_chain(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    _, net, nodes = run
    blocks = list(nodes["pub"].replica.chain.store.blocks(1))
    samples: dict[str, int] = {}
    ids = {net.keys[n].public_key: n for n in net.keys}
    for b in blocks:
        for tx in b.txs:
            if tx.type == "task.record_update":
                node = ids[tx.sender]
                samples[node] = samples.get(node, 0) + tx.payload["samples"]
    paid = {
        tx.payload["to"]: tx.payload["amount"]
        for b in blocks
        for tx in b.txs
        if tx.type == "task.reward"
    }
    total = sum(samples.values())
    assert set(paid) == set(samples)
    for node, amount in paid.items():
        assert amount == POOL * samples[node] // total
    assert any(tx.type == "task.close" for b in blocks for tx in b.txs)


def test_plan_refuses_pbft_and_bad_difficulty() -> None:
    net = VanillaNet.build(mecs=2, devices_per_mec=1, seed=1)
    keys = {nid: k.public_key for nid, k in net.keys.items()}
    scheme = BlockflScheme(BlockflScheme.parse_params({"difficulty_bits": 7}))
    plan = scheme.plan(net.topology, keys, PlanInputs("r", "t", 1, 0, "single"))
    finality = plan.chains["main"].config.finality
    assert isinstance(finality, ProofOfWork)
    assert finality.miners == (keys["mec0"], keys["mec1"])
    assert finality.difficulty_bits == 7
    assert set(plan.chains["main"].keepers) == set(keys)
    with pytest.raises(ValueError, match="allowed: single"):
        scheme.plan(net.topology, keys, PlanInputs("r", "t", 1, 0, "pbft"))
    with pytest.raises(ValueError, match="difficulty_bits"):
        BlockflScheme.parse_params({"difficulty_bits": 40})


def test_a_mined_block_is_timed_from_when_its_miner_began_not_from_its_header(
    run: tuple[Path, VanillaNet, dict[str, Daemon]],
) -> None:
    """blocks.csv's proposed time of a PoW block is its miner's record (when it began mining;
    certified: when it found the proof), not the header's timestamp, which the search moved
    ahead of the clock; every node received and stored the block after that."""
    tmp_path, _, nodes = run
    view = tmp_path.parent / f"{tmp_path.name}-view"
    view.mkdir(exist_ok=True)
    if not (view / "nodes").exists():
        (view / "nodes").symlink_to(tmp_path)  # the run directory layout: nodes/<id>/

    rows = block_times(view)

    store = nodes["pub"].replica.chain.store
    headers = {b.hash.hex(): b.header.timestamp_ms for b in store.blocks(1)}
    assert {r.node for r in rows} == set(nodes)
    assert {(r.hash, r.height) for r in rows} == {
        (h, b.height) for h, b in ((b.hash.hex(), b) for b in store.blocks(1))
    }
    assert all(r.proposed_from == "record" for r in rows)
    for r in rows:
        assert r.proposed_ms <= r.certified_ms <= r.received_ms <= r.stored_ms, r
        assert r.proposed_ms <= headers[r.hash], r
    ahead = sorted(headers[h] - p for h, p in {(r.hash, r.proposed_ms) for r in rows})
    assert ahead[len(ahead) // 2] > 0  # the search ran ahead of the clock: the header lies
