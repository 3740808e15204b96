"""Schemes: each maps node kinds to the roles that run on them."""

from __future__ import annotations

from collections.abc import Callable

from node.roles.base import Role
from node.schemes import vanilla
from topologies import NodeKind

RoleFactory = Callable[[], Role]

SCHEMES: dict[str, dict[NodeKind, RoleFactory]] = {
    "vanilla": vanilla.ROLES,
}


def role_for(scheme: str, kind: NodeKind) -> Role:
    """A fresh role for a node of `kind` in `scheme`."""
    roles = SCHEMES.get(scheme)
    if roles is None:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    factory = roles.get(kind)
    if factory is None:
        raise ValueError(f"scheme {scheme!r} has no role for {kind} nodes")
    return factory()
