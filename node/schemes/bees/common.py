"""What the bees roles share: parameters, the ES and UE profiles, timing fractions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from node.roles.base import NodeContext
from node.schemes.bees.model import BeesModelParams, ESProfile, UEProfile, sample_profiles
from node.schemes.bees.scheme import BeesParams, model_params
from node.schemes.vanilla.common import PUBLISHER
from topologies import LinkKind, NodeKind, TopologySpec

__all__ = [
    "COLLECT_FRACTION",
    "PUBLISHER",
    "SHARE_FRACTION",
    "UE_FRACTION",
    "Profiles",
    "params_of",
    "profiles_of",
    "uplink_rate_bps_of",
]

# Fractions of the publisher's round deadline (our choice; the paper has no deadlines): a UE
# has until 50% to answer, its ES collects until 60% (offloaded training included), waits
# for the other ES's shares until 75%, and PoL takes the rest (turns of pol_timeout_s).
UE_FRACTION = 0.5
COLLECT_FRACTION = 0.6
SHARE_FRACTION = 0.75


def params_of(ctx: NodeContext) -> BeesParams:
    """This run's scheme parameters (bees or b-ei)."""
    from node.schemes import scheme_class

    cls = scheme_class(ctx.config.scheme)
    return cast(BeesParams, cls.parse_params(ctx.config.scheme_params))


def always_local(ctx: NodeContext) -> bool:
    """Whether UEs never offload (b-ei)."""
    from node.schemes import scheme_class
    from node.schemes.bees.scheme import BeesScheme

    cls = scheme_class(ctx.config.scheme)
    return issubclass(cls, BeesScheme) and cls.always_local


@dataclass(frozen=True)
class Profiles:
    """The run's model parameters and every ES's and UE's profile, by node id."""

    model: BeesModelParams
    es: dict[str, ESProfile]
    ue: dict[str, UEProfile]


def profiles_of(topology: TopologySpec, params: BeesParams, seed: int) -> Profiles:
    """Every ES (MEC, topology order) and UE (device, in its MEC's order) profile, drawn by
    `sample_profiles` from the run's seed: every node draws the same ones.

    A UE's uplink rate is its emulated link's (`uplink_rate_bps_of`), so the predicted
    transfer time (eq. 6) is that of the link the backend shapes."""
    model = model_params(params.model)
    mecs = [n.id for n in topology.of_kind(NodeKind.MEC)]
    groups = {m: [d.id for d in topology.of_kind(NodeKind.DEVICE) if d.parent == m] for m in mecs}
    served = [m for m in mecs if groups[m]]
    rates = [[uplink_rate_bps_of(topology, d) for d in groups[m]] for m in served]
    servers, ues = sample_profiles(model, [len(groups[m]) for m in served], seed, rates)
    es = {m: servers[i] for i, m in enumerate(served)}
    ue = {d: ues[i][j] for i, m in enumerate(served) for j, d in enumerate(groups[m])}
    # an ES without UEs still has a profile (no UE draws): the model's constants
    for m in mecs:
        if m not in es:
            es[m] = ESProfile(-1, model.es_cycles_min, model.es_cpu_hz, model.es_battery_j, 0)
    return Profiles(model, es, ue)


def uplink_rate_bps_of(topology: TopologySpec, device: str) -> float:
    """The rate of `device`'s emulated uplink in bit/s: its cellular link to its MEC's BS
    (eq. 5 in `topologies.builders`), or, without one, the first hop of its route to its
    MEC (our choice: a hand-made topology may attach a device otherwise)."""
    mec = topology.node(device).parent
    if mec is None:
        raise ValueError(f"uplink_rate_bps_of: device {device!r} has no MEC")
    bs = topology.node(mec).parent
    for link in topology.links_from(device):
        if link.kind == LinkKind.CELLULAR and link.dst == bs:
            return link.bandwidth_mbit * 1e6
    return topology.route(device, mec)[0].bandwidth_mbit * 1e6


def ctx_profiles(ctx: NodeContext) -> Profiles:
    """`profiles_of` for this node's run."""
    return profiles_of(ctx.topology, params_of(ctx), ctx.config.seed)
