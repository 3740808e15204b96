"""The blockfl scheme's parameters and plan (its protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field

from node.contracts.runtime import Genesis
from node.core.finality import ProofOfWork
from node.ledger.chain import ChainConfig
from node.roles.base import Role
from node.schemes.base import ChainPlan, NodePlan, Plan, PlanInputs, Scheme, SchemeParams
from topologies import NodeKind, TopologySpec

MAIN_CHAIN = "main"
PUBLISHER = "pub"


class BlockflParams(SchemeParams):
    """``scheme: {name: blockfl, difficulty_bits: 12, ...}``."""

    difficulty_bits: int = Field(
        12, ge=0, le=32, description="proof-of-work difficulty: leading zero bits of a block hash"
    )
    confirmations: int = Field(
        1,
        ge=1,
        le=16,
        description="blocks mined on top of a block before a node's ledger stores it",
    )
    settle_s: float = Field(
        0.5,
        ge=0,
        description="seconds a miner holds a new best tip before mining on it, so that "
        "competing blocks of that height reach it first (block interval >> propagation)",
    )
    slice_attempts: int = Field(
        4096, ge=1, description="hashes a miner tries per slice before serving its messages"
    )


class BlockflScheme(Scheme):
    """BlockFL (Kim et al. 2019): one chain kept by every node, mined by proof of work; every
    node aggregates the global model from the latest block."""

    name = "blockfl"
    summary = (
        "BlockFL: devices send signed updates to the miners (the MECs), which race on proof "
        "of work to put the round's updates in a block of the one chain every node keeps; "
        "every device aggregates the global model from the latest block itself; rewards "
        "proportional to data size"
    )
    Params = BlockflParams

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """Every daemon keeps the one chain; the MECs are its miners."""
        if inputs.consensus != "single":
            raise ValueError(
                f"ledger.consensus: {inputs.consensus!r} is not supported by scheme "
                f"{self.name} (its miners run proof of work); allowed: single"
            )
        params = self.params
        assert isinstance(params, BlockflParams)
        daemons = topology.daemons()
        mecs = [n.id for n in daemons if n.kind == NodeKind.MEC]
        if not mecs:
            raise ValueError("topology: blockfl needs at least one MEC (its miners)")
        genesis = Genesis(
            members={n.id: (keys[n.id], str(n.kind)) for n in daemons},
            balances={PUBLISHER: inputs.reward_pool} if inputs.reward_pool else {},
            chain_id=inputs.run_id,
        )
        finality = ProofOfWork(tuple(keys[m] for m in mecs), params.difficulty_bits)
        everyone = [n.id for n in daemons]
        chain = ChainPlan(MAIN_CHAIN, ChainConfig(genesis, finality), tuple(everyone))
        nodes = {}
        for n in daemons:
            if n.kind == NodeKind.DEVICE:
                peers = [PUBLISHER, *mecs]
            else:
                peers = [x for x in everyone if x != n.id]
            nodes[n.id] = NodePlan(
                node_id=n.id, role=str(n.kind), chains=(MAIN_CHAIN,), peers=tuple(peers)
            )
        return Plan(nodes=nodes, chains={MAIN_CHAIN: chain})

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec (a miner), device."""
        from node.schemes.blockfl.roles import (
            BlockflDeviceRole,
            BlockflPublisherRole,
            MinerRole,
        )

        return {
            str(NodeKind.PUBLISHER): BlockflPublisherRole,
            str(NodeKind.MEC): MinerRole,
            str(NodeKind.DEVICE): BlockflDeviceRole,
        }
