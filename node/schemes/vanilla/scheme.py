"""The vanilla scheme's parameters and plan (its protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from node.contracts.runtime import Genesis
from node.core.finality import Committee, Finality, SingleWriter
from node.ledger.chain import ChainConfig
from node.roles.base import Role
from node.schemes.base import ChainPlan, NodePlan, Plan, PlanInputs, Scheme
from topologies import NodeKind, TopologySpec

MAIN_CHAIN = "main"
PUBLISHER = "pub"


class VanillaScheme(Scheme):
    """Hierarchical FedAvg (devices → MEC → publisher) with one task chain kept by every
    node; the publisher writes it alone, or the MECs order it by PBFT (``ledger.consensus``)."""

    name = "vanilla"
    summary = (
        "hierarchical FedAvg: devices -> their MEC -> the publisher; one task chain on every "
        "node, written by the publisher (ledger.consensus: single) or ordered by the MECs "
        "with PBFT (ledger.consensus: pbft)"
    )

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """Every daemon keeps the one chain; roles by node kind."""
        daemons = topology.daemons()
        mecs = [n.id for n in daemons if n.kind == NodeKind.MEC]  # topology order
        finality: Finality = (
            Committee.bft(tuple(keys[m] for m in mecs))
            if inputs.consensus == "pbft"
            else SingleWriter(keys[PUBLISHER])
        )
        genesis = Genesis(
            members={n.id: (keys[n.id], str(n.kind)) for n in daemons},
            balances={PUBLISHER: inputs.reward_pool} if inputs.reward_pool else {},
            chain_id=inputs.run_id,
        )
        chain = ChainPlan(
            MAIN_CHAIN,
            ChainConfig(genesis, finality),
            tuple(n.id for n in daemons),
        )
        devices_of: dict[str, list[str]] = {m: [] for m in mecs}
        for n in daemons:
            if n.kind == NodeKind.DEVICE:
                devices_of[str(n.parent)].append(n.id)
        everyone = [n.id for n in daemons]
        nodes = {}
        for n in daemons:
            if n.kind == NodeKind.PUBLISHER:
                peers = [x for x in everyone if x != n.id]
            elif n.kind == NodeKind.MEC:
                peers = [PUBLISHER, *devices_of[n.id], *(m for m in mecs if m != n.id)]
            else:
                peers = [PUBLISHER, str(n.parent)]
            light = self.light_replica(n.kind, inputs)
            nodes[n.id] = NodePlan(
                node_id=n.id,
                role=str(n.kind),
                chains=(MAIN_CHAIN,),
                peers=tuple(peers),
                light_chains=(MAIN_CHAIN,) if light else (),
            )
        return Plan(nodes=nodes, chains={MAIN_CHAIN: chain})

    def light_replica(self, kind: NodeKind, inputs: PlanInputs) -> bool:
        """Whether a node of `kind` keeps the task chain as a light replica (`_light`; only
        for this scheme's own roles and those of a scheme that says its roles read no more
        state than these, schemes reusing this plan have roles of their own)."""
        return type(self) is VanillaScheme and self._light(kind, inputs)

    @staticmethod
    def _light(kind: NodeKind, inputs: PlanInputs) -> bool:
        """Whether a node of `kind` keeps the task chain as a light replica: with
        ``ledger.device_replica: light``, every device, and with a single writer (the
        publisher) also every MEC, since neither reads the chain's state; a MEC of the PBFT
        committee executes every block. Only this scheme's own roles are known to keep no
        state (schemes reusing this plan have roles of their own)."""
        if inputs.device_replica != "light":
            return False
        return kind == NodeKind.DEVICE or (kind == NodeKind.MEC and inputs.consensus != "pbft")

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec, device."""
        from node.schemes.vanilla.device import DeviceRole
        from node.schemes.vanilla.mec import MecRole
        from node.schemes.vanilla.publisher import PublisherRole

        return {
            str(NodeKind.PUBLISHER): PublisherRole,
            str(NodeKind.MEC): MecRole,
            str(NodeKind.DEVICE): DeviceRole,
        }
