"""The flchain scheme's parameters and plan (its protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field

from node.core.finality import Committee
from node.ledger.chain import ChainConfig
from node.roles.base import Role
from node.schemes.base import ChainPlan, Plan, PlanInputs, SchemeParams
from node.schemes.vanilla.scheme import MAIN_CHAIN, PUBLISHER, VanillaScheme
from topologies import NodeKind, TopologySpec


class FlchainParams(SchemeParams):
    """``scheme: {name: flchain, channels: 1}``."""

    channels: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "channels (MEC groups, consecutive in topology order), each with its own "
            "global model in the state trie; at most the number of MECs"
        ),
    )


def channel_mecs(topology: TopologySpec, channels: int) -> list[list[str]]:
    """The MECs of each channel: the MECs in topology order cut into `channels` consecutive
    groups of (nearly) equal size (our choice; FLchain leaves channel formation open).
    ValueError naming ``channels`` when there are fewer MECs than channels."""
    mecs = [n.id for n in topology.daemons() if n.kind == NodeKind.MEC]
    if channels > len(mecs):
        raise ValueError(
            f"scheme.channels: {channels} is more than the {len(mecs)} MECs; "
            f"allowed: 1..{len(mecs)}"
        )
    return [
        mecs[len(mecs) * c // channels : len(mecs) * (c + 1) // channels] for c in range(channels)
    ]


class FlchainScheme(VanillaScheme):
    """FLchain (Majeed & Hong 2019): the MECs' PBFT chain with a global-model state trie per
    channel; every MEC of a channel computes the channel's model from all its MECs' shares."""

    name = "flchain"
    summary = (
        "FLchain: the MECs order one chain by PBFT; each MEC stores and records its devices' "
        "updates and shares them with its channel's MECs, every MEC computes the channel's "
        "global model (state trie entry per channel and round); ledger.consensus: pbft"
    )
    Params = FlchainParams

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """Vanilla's plan with the MECs' PBFT committee (every node keeps the chain; the MECs
        talk to each other, their devices and the publisher)."""
        if inputs.consensus != "pbft":
            raise ValueError(
                f"ledger.consensus: {inputs.consensus!r} is not supported by scheme "
                f"{self.name} (its chain is the MECs' PBFT committee); allowed: pbft"
            )
        assert isinstance(self.params, FlchainParams)
        mecs = [m for group in channel_mecs(topology, self.params.channels) for m in group]
        if len(mecs) < 3:
            raise ValueError(
                f"topology: scheme {self.name} needs at least 3 MECs (PBFT needs 4 replicas: "
                f"the MECs, with the publisher when there are 3), not {len(mecs)}"
            )
        base = super().plan(topology, keys, inputs)
        if len(mecs) >= 4:
            return base
        # 3 MECs (the paper's case study): PBFT needs n >= 3f + 1 >= 4, so the publisher is
        # the 4th replica (our choice; it orders and signs blocks, it computes no model)
        chain = base.chains[MAIN_CHAIN]
        members = (*(keys[m] for m in mecs), keys[PUBLISHER])
        config = ChainConfig(chain.config.genesis, Committee.bft(members))
        return Plan(base.nodes, {MAIN_CHAIN: ChainPlan(MAIN_CHAIN, config, chain.keepers)})

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec, device (vanilla's device)."""
        from node.schemes.flchain.mec import FlchainMecRole
        from node.schemes.flchain.publisher import FlchainPublisherRole
        from node.schemes.vanilla.device import DeviceRole

        return {
            str(NodeKind.PUBLISHER): FlchainPublisherRole,
            str(NodeKind.MEC): FlchainMecRole,
            str(NodeKind.DEVICE): DeviceRole,
        }
