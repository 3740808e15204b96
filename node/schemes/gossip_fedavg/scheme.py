"""The gossip-fedavg scheme's parameters and plan (its protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field

from node.gossip import GossipConfig
from node.roles.base import Role
from node.schemes.base import NodePlan, Plan, PlanInputs, SchemeParams
from node.schemes.vanilla.scheme import PUBLISHER, VanillaScheme
from topologies import LinkKind, NodeKind, TopologySpec


class GossipFedAvgParams(SchemeParams):
    """``scheme: {name: gossip-fedavg, fanout: 2, ...}``."""

    fanout: int = Field(2, ge=1, description="neighbours a new update or block is pushed to")
    ttl: int = Field(8, ge=1, le=255, description="D2D hops an update or block may travel")
    heartbeat_s: float = Field(
        0.2, gt=0, description="seconds between announcements (IHAVE) of held items"
    )
    want_timeout_s: float = Field(
        1.0, gt=0, description="seconds a pull (IWANT) waits before asking the next neighbour"
    )

    def gossip_config(self, seed: int) -> GossipConfig:
        """The gossip core's configuration for a run with `seed`."""
        return GossipConfig(
            ttl=self.ttl,
            fanout=self.fanout,
            want_timeout_s=self.want_timeout_s,
            seed=str(seed).encode(),
        )


def d2d_neighbours(topology: TopologySpec, node_id: str) -> list[str]:
    """The devices `node_id` has a D2D link to."""
    links = topology.links
    return sorted({lk.dst for lk in links if lk.src == node_id and lk.kind == LinkKind.D2D})


def gossip_peers(topology: TopologySpec, node_id: str) -> list[str]:
    """Whom a node gossips with: a device its D2D neighbours and its MEC, a MEC its devices."""
    node = topology.node(node_id)
    if node.kind == NodeKind.DEVICE:
        return [*d2d_neighbours(topology, node_id), str(node.parent)]
    if node.kind == NodeKind.MEC:
        return sorted(n.id for n in topology.of_kind(NodeKind.DEVICE) if n.parent == node_id)
    return []


class GossipFedAvgScheme(VanillaScheme):
    """Hierarchical FedAvg whose devices gossip their signed updates and the round's blocks
    over D2D links; each MEC averages the updates that reached it."""

    name = "gossip-fedavg"
    summary = (
        "devices gossip their signed update transactions and the round's block over D2D "
        "links (push to a fan-out, pull of what is missing); each MEC averages the updates "
        "that reached it; the publisher writes the one task chain (ledger.consensus: single)"
    )
    Params = GossipFedAvgParams

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """Vanilla's chain and roles; a device talks to its D2D neighbours, its MEC and the
        publisher, a MEC to its devices and the publisher."""
        if inputs.consensus != "single":
            raise ValueError(
                f"ledger.consensus: {inputs.consensus!r} is not supported by scheme "
                f"{self.name}; allowed: single"
            )
        base = super().plan(topology, keys, inputs)
        nodes = {}
        for node_id, node in base.nodes.items():
            if node_id == PUBLISHER:
                nodes[node_id] = node
                continue
            peers = (PUBLISHER, *gossip_peers(topology, node_id))
            nodes[node_id] = NodePlan(
                node_id=node_id, role=node.role, chains=node.chains, peers=peers
            )
        return Plan(nodes=nodes, chains=base.chains)

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec, device."""
        from node.schemes.gossip_fedavg.roles import (
            GossipDeviceRole,
            GossipMecRole,
            GossipPublisherRole,
        )

        return {
            str(NodeKind.PUBLISHER): GossipPublisherRole,
            str(NodeKind.MEC): GossipMecRole,
            str(NodeKind.DEVICE): GossipDeviceRole,
        }
