"""The vanilla scheme with its devices keeping the task chain as light replicas: the rounds
run as with full replicas, every device ends at the publisher's head with a light store
(no state) whose header chain verifies, and each device's own update transactions are
proven included by Merkle proofs against its own headers.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from node.keys import NodeKey
from node.learning.train import configure_torch_threads
from node.ledger.chain import ChainConfig
from node.ledger.chains import ChainSet, open_chains
from node.ledger.light import LightChain, is_light_store, verify_light_store
from orchestrator.collect import read_records
from tests.sim import vanilla_net
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config

ROUNDS = 3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def test_light_devices_follow_the_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def light_devices(node_dir: Path, configs: Mapping[str, ChainConfig], key: NodeKey) -> ChainSet:
        light = tuple(configs) if Path(node_dir).name.startswith("dev") else ()
        return open_chains(node_dir, configs, key, light=light)

    monkeypatch.setattr(vanilla_net, "open_chains", light_devices)
    net = VanillaNet.build(mecs=2, devices_per_mec=2, seed=5, fixed_keys=True)
    learning = learning_config(
        rounds=ROUNDS, local_epochs=1, batch_size=16, learning_rate=0.1, round_deadline_s=120
    )
    nodes = net.run(tmp_path, learning, seed=5, reward_pool=100, config={"startup_timeout_s": 120})

    records = [r for r in read_records(tmp_path / "pub") if r["event"] == "round"]
    assert [r["contributors"] for r in records] == [4] * ROUNDS
    pub = nodes["pub"].replica
    assert pub is not None and not pub.light
    devices = {nid: d for nid, d in nodes.items() if nid.startswith("dev")}
    globals_ = [
        tx.payload["blob"]
        for h in range(1, pub.height + 1)
        for tx in pub.chain.store.block(h).txs  # type: ignore[union-attr]
        if tx.type == "task.record_global"
    ]
    assert len(globals_) == ROUNDS
    assert len(devices) == 4
    for nid, daemon in devices.items():
        replica = daemon.replica
        assert replica is not None and isinstance(replica.chain, LightChain), nid
        assert replica.chain.head == pub.chain.head, nid
        assert is_light_store(replica.chain.store) and not replica.chain.store.state_rows()
        assert verify_light_store(replica.chain.store).ok, nid
        own = [
            tx
            for h in range(1, pub.height + 1)
            for tx in pub.chain.store.block(h).txs  # type: ignore[union-attr]
            if tx.sender == net.keys[nid].public_key
        ]
        assert len(own) == ROUNDS, nid
        for tx in own:
            proof = replica.chain.inclusion(tx.hash)
            assert proof is not None and proof.verify(), nid
            assert replica.blobs.has(tx.payload["blob"]), "its own updates stay with it"
        # a light replica holds no replicated blobs (global models): it neither keeps the
        # ones it trained from nor fetches them
        assert not replica.sync.missing_blobs and not replica.sync.failures, nid
        assert not any(replica.blobs.has(b) for b in globals_), nid
    assert not any(d.drops for d in nodes.values()), {n: d.drops for n, d in nodes.items()}
