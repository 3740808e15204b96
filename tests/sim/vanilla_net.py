"""A scheme (vanilla unless told) on an in-memory network: real `Daemon`s and roles (Ed25519,
torch on digits), each in its own thread; only the transport is in memory. Shared by the sim
tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.codec import Codec
from node.config import LearningConfig, NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.ledger.chains import open_chains
from node.metrics import MetricsWriter
from node.roles.base import Role
from node.schemes import PlanInputs, make_scheme
from node.transport import InMemoryNetwork
from topologies import HierarchyParams, NodeSpec, TopologySpec, build_hierarchy

TASK_ID = "sim-task"


@dataclass
class VanillaNet:
    """A topology, its keys and roster, and the in-memory network the daemons attach to."""

    topology: TopologySpec
    keys: dict[str, NodeKey]
    network: InMemoryNetwork = field(default_factory=InMemoryNetwork)

    @classmethod
    def build(
        cls, mecs: int, devices_per_mec: int, seed: int, fixed_keys: bool = False
    ) -> VanillaNet:
        """1 BS; keys from fixed seeds when `fixed_keys` (reproducible hashes), else fresh."""
        params = HierarchyParams(bs_count=1, mecs_per_bs=mecs, devices_per_mec=devices_per_mec)
        topology = build_hierarchy(params, seed)
        daemons = topology.daemons()
        keys = {
            n.id: NodeKey.from_seed(bytes([i + 1]) * 32) if fixed_keys else NodeKey.generate()
            for i, n in enumerate(daemons)
        }
        return cls(topology, keys)

    @property
    def roster(self) -> Roster:
        """Every node's public key."""
        return Roster({nid: k.public_key for nid, k in self.keys.items()})

    def run(
        self,
        tmp_path: Path,
        learning: LearningConfig,
        *,
        seed: int,
        reward_pool: int,
        config: dict[str, Any] | None = None,
        role: Callable[[NodeSpec], Role | None] = lambda spec: None,
        join_timeout_s: float = 300,
        scheme: str = "vanilla",
        params: dict[str, Any] | None = None,
        consensus: str = "single",
        max_message_bytes: int = 8 * 1024 * 1024,
    ) -> dict[str, Daemon]:
        """Run every daemon of `scheme` (with `params`, ``ledger.consensus: consensus``) to the
        end, each in a thread; `config`: extra NodeConfig fields (a callable value is called
        with the node id); `role`: a replacement role or None."""
        daemons = self.topology.daemons()
        roster = self.roster
        the_scheme = make_scheme(scheme, params or {})
        plan = the_scheme.plan(
            self.topology,
            {n.id: self.keys[n.id].public_key for n in daemons},
            PlanInputs("sim", TASK_ID, seed, reward_pool, consensus),
        )
        chains = {cid: chain.config for cid, chain in plan.chains.items()}
        nodes: dict[str, Daemon] = {}
        for spec in daemons:
            extra = {k: v(spec.id) if callable(v) else v for k, v in (config or {}).items()}
            node_config = NodeConfig(
                run_id="sim",
                node_id=spec.id,
                plan=plan.nodes[spec.id],
                seed=seed,
                node_dir=str(tmp_path),
                key_path="-",
                bind="-",
                endpoints={},
                roster=roster.to_hex(),
                topology=self.topology,
                shaping="none",
                learning=learning,
                max_message_bytes=max_message_bytes,
                chains=chains,
                task_id=TASK_ID,
                **{"scheme": scheme, "scheme_params": params or {}, **extra},
            )
            (tmp_path / spec.id).mkdir()
            nodes[spec.id] = Daemon(
                node_config,
                self.topology,
                self.network.attach(spec.id),
                Codec(spec.id, self.keys[spec.id], roster, node_config.max_message_bytes),
                role(spec) or the_scheme.role(node_config.plan),
                MetricsWriter(tmp_path / spec.id / "metrics.jsonl", {"node": spec.id}),
                chains=open_chains(tmp_path / spec.id, chains, self.keys[spec.id]),
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
