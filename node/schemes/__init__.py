"""The scheme registry: a scheme is one folder under node/schemes/ plus one line here.

`make_scheme(name, params)` validates a scheme's parameters and returns the `Scheme` the
orchestrator plans a run with and each node daemon builds its role from (see
`node.schemes.base`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.schemes.base import NodePlan, Plan, PlanInputs, Scheme, SchemeParams
from node.schemes.bees.scheme import BeesScheme, BeiScheme
from node.schemes.blockfl import BlockflScheme
from node.schemes.flchain import FlchainScheme
from node.schemes.gossip_fedavg import GossipFedAvgScheme
from node.schemes.sfl import SflScheme
from node.schemes.two_layer import TwoLayerScheme
from node.schemes.vanilla.scheme import VanillaScheme

SCHEMES: dict[str, type[Scheme]] = {
    VanillaScheme.name: VanillaScheme,
    GossipFedAvgScheme.name: GossipFedAvgScheme,
    BlockflScheme.name: BlockflScheme,
    TwoLayerScheme.name: TwoLayerScheme,
    FlchainScheme.name: FlchainScheme,
    BeesScheme.name: BeesScheme,
    BeiScheme.name: BeiScheme,
    SflScheme.name: SflScheme,
}

SCHEME_NAMES = tuple(SCHEMES)

__all__ = [
    "SCHEMES",
    "SCHEME_NAMES",
    "NodePlan",
    "Plan",
    "PlanInputs",
    "Scheme",
    "SchemeParams",
    "make_scheme",
    "scheme_class",
]


def scheme_class(name: str) -> type[Scheme]:
    """The registered scheme `name`; ValueError naming the allowed names."""
    cls = SCHEMES.get(name)
    if cls is None:
        raise ValueError(f"unknown scheme {name!r}; allowed: {', '.join(SCHEMES)}")
    return cls


def make_scheme(name: str, params: Mapping[str, Any] | None = None) -> Scheme:
    """Scheme `name` with its parameters validated (ValueError naming the field)."""
    cls = scheme_class(name)
    return cls(cls.parse_params(params or {}))
