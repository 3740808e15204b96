"""What the two-layer roles share: parameters, chain lookup, a second PBFT validator's timers."""

from __future__ import annotations

from typing import Any, cast

from node.roles.base import NodeContext
from node.schemes.two_layer.scheme import GMUC_PREFIX, LMUC_PREFIX, TwoLayerParams, TwoLayerScheme

DEVICE_DEADLINE_FRACTION = 0.6  # of the publisher's round deadline: devices' updates
VOTE_DEADLINE_FRACTION = 0.9  # of the round deadline: LMUC blocks relayed, aggregate voted


def params_of(ctx: NodeContext) -> TwoLayerParams:
    """This run's scheme parameters."""
    return cast(TwoLayerParams, TwoLayerScheme.parse_params(ctx.config.scheme_params))


def own_chain(ctx: NodeContext, prefix: str) -> str:
    """The id of the chain this node keeps whose id starts with `prefix`."""
    found = [c for c in ctx.config.plan.chains if c.startswith(prefix)]
    if len(found) != 1:
        raise RuntimeError(f"node {ctx.node_id} keeps {len(found)} chains named {prefix}*")
    return found[0]


def gmuc_of(ctx: NodeContext) -> str:
    """The id of the GMUC task chain this node keeps."""
    return own_chain(ctx, GMUC_PREFIX)


def lmuc_of(ctx: NodeContext) -> str:
    """The id of the LMUC this node keeps."""
    return own_chain(ctx, LMUC_PREFIX)


class TimerSpace:
    """`ctx` with its timers renamed into `prefix` (a node running two PBFT validators, one
    per chain, keeps their timers apart: `PbftValidator` names its timers ``pbft:*``)."""

    def __init__(self, ctx: NodeContext, prefix: str) -> None:
        self._ctx = ctx
        self.prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def set_timer(self, name: str, delay_s: float) -> None:
        """The node's timer `prefix + name`."""
        self._ctx.set_timer(self.prefix + name, delay_s)

    def cancel_timer(self, name: str) -> None:
        """Cancel the node's timer `prefix + name`."""
        self._ctx.cancel_timer(self.prefix + name)

    def owns(self, name: str) -> bool:
        """Whether the node's timer `name` is one of this space's."""
        return name.startswith(self.prefix)

    def inner(self, name: str) -> str:
        """The name the validator gave the node's timer `name`."""
        return name.removeprefix(self.prefix)

    def view(self) -> NodeContext:
        """This space as a context."""
        return cast(NodeContext, self)
