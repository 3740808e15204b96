"""The bees and b-ei schemes' parameters and plan (the protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields

from pydantic import Field, field_validator

from node.contracts.runtime import Genesis
from node.core.finality import ProofOfLearning
from node.ledger.chain import ChainConfig
from node.roles.base import Role
from node.schemes.base import ChainPlan, NodePlan, Plan, PlanInputs, Scheme, SchemeParams
from node.schemes.bees.model import BeesModelParams
from topologies import NodeKind, TopologySpec

MAIN_CHAIN = "main"
PUBLISHER = "pub"
_MODEL_FIELDS = {f.name for f in fields(BeesModelParams)}


class BeesParams(SchemeParams):
    """``scheme: {name: bees, top_m: 10, offload_scale: 0.001, pol_timeout_s: 5.0, ...}``."""

    top_m: int = Field(
        10,
        ge=1,
        le=1024,
        description="M: the updates (best accuracy first) the contract averages (paper: 10)",
    )
    offload_scale: float = Field(
        0.001,
        gt=0.0,
        le=1.0,
        description=(
            "fraction of the model's offload size (80 MB) an offloading UE really sends: its "
            "real training samples, padded up to that size (never cut: the ES trains on all)"
        ),
    )
    pol_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=600.0,
        description="PoL turn length: rank r proposes at r x this after the round's start",
    )
    accuracy_tolerance: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description=(
            "an update transaction whose accuracy differs from the verifier's own "
            "evaluation by more than this is left out (proposer) or refused (others)"
        ),
    )
    model: dict[str, float] = Field(
        {},
        description=(
            "overrides of the latency/energy model's parameters "
            "(node.schemes.bees.model.BeesModelParams fields, e.g. ue_cpu_hz)"
        ),
    )

    @field_validator("model")
    @classmethod
    def _known_model_fields(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - _MODEL_FIELDS)
        if unknown:
            raise ValueError(f"fields of BeesModelParams ({', '.join(sorted(_MODEL_FIELDS))})")
        model_params(value)  # raises ValueError naming a bad value
        return value


class BeiParams(BeesParams):
    """``scheme: {name: b-ei}``: as bees, M = 1 (only the best update is shared)."""

    top_m: int = Field(1, ge=1, le=1024, description="M: B-EI shares the single best update")


_INT_FIELDS = {f.name for f in fields(BeesModelParams) if f.type in ("int", int)}


def model_params(overrides: Mapping[str, float]) -> BeesModelParams:
    """The model's parameters with `overrides` (integers where the field is one)."""
    values: dict[str, float | int] = {}
    for name, value in overrides.items():
        if name in _INT_FIELDS:
            if float(value) != int(value):
                raise ValueError(f"model.{name}: {value!r} must be an integer")
            values[name] = int(value)
        else:
            values[name] = float(value)
    return BeesModelParams(**values)  # type: ignore[arg-type]


class BeesScheme(Scheme):
    """BEES (paper 003): UEs train or offload, edge servers post updates, PoL picks the block
    proposer, the contract averages the top-M updates."""

    name = "bees"
    summary = (
        "BEES: each UE trains locally or offloads its data to its edge server (latency/"
        "energy model); the edge servers (MECs) post one transaction per update, the PoL "
        "winner (I = n c / B) proposes the block, the contract averages the top-M by accuracy"
    )
    Params = BeesParams
    always_local = False  # b-ei: every UE trains locally

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """One chain kept by the ES (MECs) and the publisher (a follower), with
        proof-of-learning finality over the ES keys; UEs keep no chain."""
        if inputs.consensus == "pbft":
            raise ValueError(
                f"ledger.consensus: 'pbft' is not supported by scheme {self.name} (its chain "
                "is ordered by proof of learning among the edge servers); allowed: single"
            )
        daemons = topology.daemons()
        mecs = [n.id for n in daemons if n.kind == NodeKind.MEC]
        if not mecs:
            raise ValueError(f"topology: scheme {self.name} needs at least one MEC (edge server)")
        genesis = Genesis(
            members={n.id: (keys[n.id], str(n.kind)) for n in daemons},
            balances={},
            chain_id=inputs.run_id,
        )
        keepers = (*mecs, PUBLISHER)
        chain = ChainPlan(
            MAIN_CHAIN,
            ChainConfig(genesis, ProofOfLearning(tuple(keys[m] for m in mecs))),
            keepers,
        )
        everyone = [n.id for n in daemons]
        nodes = {}
        for n in daemons:
            chains: tuple[str, ...]
            if n.kind == NodeKind.PUBLISHER:
                peers, chains = [x for x in everyone if x != n.id], (MAIN_CHAIN,)
            elif n.kind == NodeKind.MEC:
                own = [d.id for d in daemons if d.parent == n.id and d.kind == NodeKind.DEVICE]
                peers = [PUBLISHER, *own, *(m for m in mecs if m != n.id)]
                chains = (MAIN_CHAIN,)
            else:
                peers, chains = [PUBLISHER, str(n.parent)], ()
            nodes[n.id] = NodePlan(
                node_id=n.id, role=str(n.kind), chains=chains, peers=tuple(peers)
            )
        return Plan(nodes=nodes, chains={MAIN_CHAIN: chain})

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec (edge server), device (UE)."""
        from node.schemes.bees.es import EsRole
        from node.schemes.bees.publisher import BeesPublisherRole
        from node.schemes.bees.ue import UeRole

        return {
            str(NodeKind.PUBLISHER): BeesPublisherRole,
            str(NodeKind.MEC): EsRole,
            str(NodeKind.DEVICE): UeRole,
        }


class BeiScheme(BeesScheme):
    """B-EI (the paper's baseline, its ref. [8]): PoL too, every UE trains locally, the
    single best update is the global model (M = 1)."""

    name = "b-ei"
    summary = (
        "B-EI (BEES's baseline): as bees, but every UE trains locally and only the single "
        "best update (M = 1) becomes the global model"
    )
    Params = BeiParams
    always_local = True
