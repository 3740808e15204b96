"""The two-layer scheme on an in-memory network: real `Daemon`s and roles (Ed25519, PBFT,
gossip, torch on digits), each in its own thread, each node opening only the chains its plan
lists; only the transport is in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from node.codec import Codec
from node.config import LearningConfig, NodeConfig
from node.daemon import Daemon
from node.ledger.chains import open_chains
from node.metrics import MetricsWriter
from node.schemes import Plan, PlanInputs, make_scheme
from tests.sim.vanilla_net import TASK_ID, VanillaNet
from tests.unit.node_configs import learning_config

SCHEME = "two-layer"


def digits_learning(
    rounds: int, local_epochs: int = 1, round_deadline_s: float = 120
) -> LearningConfig:
    """The two-layer sim tests' learning: the MLP on digits, iid, batch 16, lr 0.1; the
    deadline is generous (rounds end on answers, not on it) unless a test says otherwise."""
    return learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=round_deadline_s,
    )


def plan_of(net: VanillaNet, params: Mapping[str, Any], seed: int, reward_pool: int) -> Plan:
    """The two-layer plan of `net`."""
    keys = {nid: k.public_key for nid, k in net.keys.items()}
    return make_scheme(SCHEME, params).plan(
        net.topology, keys, PlanInputs("sim", TASK_ID, seed, reward_pool, "pbft")
    )


def run_two_layer(
    net: VanillaNet,
    tmp_path: Path,
    learning: LearningConfig,
    *,
    params: Mapping[str, Any],
    seed: int,
    reward_pool: int,
    config: Mapping[str, Any] | None = None,
    join_timeout_s: float = 300,
    light_devices: bool = False,
    absent: frozenset[str] = frozenset(),
) -> dict[str, Daemon]:
    """Run every daemon to the end (each in a thread); `config`: extra NodeConfig fields (a
    callable value is called with the node id); `light_devices`: a device outside its LMUC's
    committee keeps the LMUC as a light replica (`node.ledger.light`; the daemon's entry
    point does not do this yet); `absent`: nodes of the topology never started (a node
    whose process never came up)."""
    plan = plan_of(net, params, seed, reward_pool)
    chains = {cid: chain.config for cid, chain in plan.chains.items()}
    roster = net.roster
    scheme = make_scheme(SCHEME, params)
    nodes: dict[str, Daemon] = {}
    for spec in net.topology.daemons():
        if spec.id in absent:
            continue
        extra = {
            k: v(spec.id) if isinstance(v, Callable) else v  # type: ignore[arg-type]
            for k, v in (config or {}).items()
        }
        node_config = NodeConfig(
            run_id="sim",
            node_id=spec.id,
            scheme=SCHEME,
            scheme_params=dict(params),
            plan=plan.nodes[spec.id],
            seed=seed,
            node_dir=str(tmp_path),
            key_path="-",
            bind="-",
            endpoints={},
            roster=roster.to_hex(),
            topology=net.topology,
            shaping="none",
            learning=learning,
            max_message_bytes=8 * 1024 * 1024,
            chains=chains,
            task_id=TASK_ID,
            **extra,
        )
        (tmp_path / spec.id).mkdir()
        own = {cid: chains[cid] for cid in node_config.plan.chains}
        nodes[spec.id] = Daemon(
            node_config,
            net.topology,
            net.network.attach(spec.id),
            Codec(spec.id, net.keys[spec.id], roster, node_config.max_message_bytes),
            scheme.role(node_config.plan),
            MetricsWriter(tmp_path / spec.id / "metrics.jsonl", {"node": spec.id}),
            chains=open_chains(
                tmp_path / spec.id,
                own,
                net.keys[spec.id],
                light=[
                    cid
                    for cid, cfg in own.items()
                    if light_devices
                    and spec.id.startswith("dev")
                    and net.keys[spec.id].public_key not in cfg.finality.signers
                ],
            ),
        )
    threads = [
        threading.Thread(target=d.run, kwargs={"install_signal_handlers": False})
        for d in nodes.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=join_timeout_s)
    assert not any(t.is_alive() for t in threads), "the run did not finish"
    for d in nodes.values():
        d.metrics.close()
    return nodes
