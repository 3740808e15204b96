"""Round outcomes of the vanilla scheme that must not hang on timing: what the round
record says was rejected.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from node.codec import Codec
from node.config import LearningConfig, NodeConfig
from node.contracts.runtime import Genesis
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.learning.train import configure_torch_threads
from node.ledger.chain import ChainConfig
from node.ledger.replica import Replica
from node.metrics import MetricsWriter
from node.schemes import role_for
from node.transport import InMemoryNetwork
from orchestrator.collect import read_records
from topologies import HierarchyParams, build_hierarchy

TAMPERER = "mec1"
TARGET = "dev1-0"
ROUNDS = 3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def _run(
    tmp_path: Path,
    behaviours: dict[str, list[dict[str, Any]]],
    deadline_s: float = 120,
) -> dict[str, Daemon]:
    """Run the vanilla scheme to the end."""
    topology = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=2), 7)
    daemons = topology.daemons()
    keys = {n.id: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(daemons)}
    roster = Roster({nid: k.public_key for nid, k in keys.items()})
    network = InMemoryNetwork()
    learning = LearningConfig(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=deadline_s,
    )
    chain = ChainConfig(
        Genesis(
            members={n.id: (keys[n.id].public_key, str(n.kind)) for n in daemons},
            balances={"pub": 100},
            chain_id="sim",
        ),
        (keys["pub"].public_key,),
        1,
    )
    nodes: dict[str, Daemon] = {}
    for spec in daemons:
        config = NodeConfig(
            run_id="sim",
            node_id=spec.id,
            scheme="vanilla",
            seed=7,
            node_dir=str(tmp_path),
            key_path="-",
            bind="-",
            endpoints={},
            roster=roster.to_hex(),
            topology=topology.to_dict(),
            shaping="none",
            learning=learning,
            max_message_bytes=8 * 1024 * 1024,
            startup_timeout_s=120,
            chain=chain.to_dict(),
            task_id="sim-task",
            aggregator={"name": "median", "params": {}},
            behaviours=behaviours.get(spec.id, []),
        )
        (tmp_path / spec.id).mkdir()
        nodes[spec.id] = Daemon(
            config,
            topology,
            network.attach(spec.id),
            Codec(spec.id, keys[spec.id], roster, config.max_message_bytes),
            role_for("vanilla", spec.kind),
            MetricsWriter(tmp_path / spec.id / "metrics.jsonl", {"node": spec.id}),
            replica=Replica(tmp_path / spec.id, chain, keys[spec.id]),
        )
    threads = [
        threading.Thread(target=d.run, kwargs={"install_signal_handlers": False})
        for d in nodes.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "the run did not finish"
    for d in nodes.values():
        d.metrics.close()
    return nodes


def test_tampered_updates_are_in_the_rounds_rejected(tmp_path: Path) -> None:
    """A tampering MEC (the `edge_faults` scenario's behaviour) scales one device's update;
    the publisher catches that it no longer matches the device's signed transaction and
    drops it: the round's ``rejected`` must name it (with the reason), not only the
    publisher's drop counters. The deadline (120 s) is never reached."""
    tamper = {
        "from_round": 2,
        "until_round": None,
        "name": "tamper",
        "params": {"target": TARGET, "action": "scale", "factor": 10.0},
    }

    nodes = _run(tmp_path, {TAMPERER: [tamper]})

    rounds = {r["round"]: r for r in read_records(tmp_path / "pub") if r["event"] == "round"}
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    assert rounds[1]["rejected"] == [] and rounds[1]["rejected_reasons"] == {}
    for r in range(2, ROUNDS + 1):
        assert rounds[r]["rejected"] == [TARGET], rounds[r]
        assert rounds[r]["rejected_reasons"] == {TARGET: "tampered"}
        assert rounds[r]["contributors"] == 3
    assert nodes["pub"].drops["tampered_update"] == ROUNDS - 1

