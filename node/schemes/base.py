"""What a scheme is: its parameters, its plan for a run, and the roles its nodes run.

How it works
------------
A scheme is one folder under ``node/schemes/`` with a `Scheme` subclass and one line in the
registry (``node/schemes/__init__.py``). The orchestrator knows no concrete scheme: it
validates the scenario's ``scheme:`` section against the scheme's `Params` (a pydantic
model), asks ``plan(topology, keys, inputs)`` for the run's `Plan` and writes it into the
node configs; each node daemon asks the same scheme for the `Role` its `NodePlan` names.

A plan says, per node, which role it runs, which chains it keeps and whom it talks to; per
chain, its `ChainConfig` (genesis: members, balances; finality rule) and which nodes keep
a replica. Plans are pure functions of their inputs (same topology, keys and inputs → the
same plan), so a run is reproducible from its scenario and seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from node.config import NodePlan
from node.ledger.chain import ChainConfig
from node.ledger.chains import check_chain_id
from node.roles.base import Role
from topologies import TopologySpec
from topologies.settings import shown

__all__ = ["ChainPlan", "NodePlan", "Plan", "PlanInputs", "Scheme", "SchemeParams"]


class SchemeParams(BaseModel):
    """A scheme's own parameters (the fields next to ``name`` in ``scheme:``); subclass it,
    with a docstring per field in `description` (shown by ``bcfl schemes``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class ChainPlan:
    """One chain of a run: its config (genesis and finality rule) and who keeps a replica."""

    chain_id: str
    config: ChainConfig
    keepers: tuple[str, ...]

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)


@dataclass(frozen=True)
class Plan:
    """A scheme's plan for one run."""

    nodes: Mapping[str, NodePlan]
    chains: Mapping[str, ChainPlan]

    def __post_init__(self) -> None:
        for node in self.nodes.values():
            unknown = [c for c in node.chains if c not in self.chains]
            if unknown:
                raise ValueError(f"node {node.node_id} keeps unknown chain {unknown[0]!r}")
        for chain in self.chains.values():
            for keeper in chain.keepers:
                plan = self.nodes.get(keeper)
                if plan is None or chain.chain_id not in plan.chains:
                    raise ValueError(
                        f"chain {chain.chain_id!r}: keeper {keeper!r} does not list it"
                    )


@dataclass(frozen=True)
class PlanInputs:
    """What a plan may depend on besides the topology and the keys (all from the scenario)."""

    run_id: str
    task_id: str
    seed: int
    reward_pool: int
    consensus: str  # the scenario's ledger.consensus, for schemes that let it be chosen
    device_replica: str = "full"  # the scenario's ledger.device_replica: full | light


class Scheme(ABC):
    """A blockchain-FL scheme: parameters, plan, roles."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[SchemeParams]] = SchemeParams

    def __init__(self, params: SchemeParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def parse_params(cls, raw: Mapping[str, Any]) -> SchemeParams:
        """Validate the scheme's section (without ``name``); ValueError naming the field and
        what is allowed."""
        try:
            return cls.Params.model_validate(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(section)"
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(["name", *cls.Params.model_fields]) or "name"
                raise ValueError(f"{field}: unknown field; allowed: {allowed}") from None
            msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
            shown_input = shown(err.get("input"))
            raise ValueError(f"{field}: {shown_input} is invalid; allowed: {msg}") from None

    @abstractmethod
    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """The run's plan: every daemon of `topology` gets a `NodePlan` (keys: node id →
        Ed25519 public key)."""

    def check_data(self, train: int, test: int) -> None:
        """ValueError (naming the ``scheme.`` field and what is allowed) if this scheme
        cannot use a data set of `train` training and `test` test samples; any by default."""
        return None

    @abstractmethod
    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """Role name → factory (imported here, not at module import: the orchestrator loads
        schemes for their parameters and plans only)."""

    def role(self, node: NodePlan) -> Role:
        """A fresh role for `node`."""
        factories = self.role_factories()
        factory = factories.get(node.role)
        if factory is None:
            raise ValueError(
                f"scheme {self.name!r} has no role {node.role!r}; allowed: {', '.join(factories)}"
            )
        return factory()

    @classmethod
    def describe_params(cls) -> list[tuple[str, str, str, str]]:
        """(field, type, default, description) per parameter, for ``bcfl schemes``."""
        out = []
        for name, f in cls.Params.model_fields.items():
            kind = getattr(f.annotation, "__name__", None) or str(f.annotation)
            default = "required" if f.is_required() else repr(f.default)
            out.append((name, kind.replace("typing.", ""), default, f.description or ""))
        return out
