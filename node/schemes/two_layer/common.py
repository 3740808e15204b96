"""What the two-layer roles share: parameters, chain lookup, resources, shard combination."""

from __future__ import annotations

import hashlib
from typing import cast

import numpy as np

from node.learning.weights import Weights
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


def declared_resources(seed: int, device: str) -> dict[str, int]:
    """The CPU frequency (MHz, 1,000-3,000) and energy budget (J, 100-1,000) a device
    declares in its task response: drawn from the seed and its id (our choice; the topology
    gives devices no hardware). Its samples are its real training set's size."""
    h = hashlib.sha256(f"{seed}/resources/{device}".encode()).digest()
    return {
        "cpu_mhz": 1000 + int.from_bytes(h[:4], "big") % 2001,
        "energy_j": 100 + int.from_bytes(h[4:8], "big") % 901,
    }


def task_chain_of(ctx: NodeContext, node_id: str) -> str:
    """The id of the GMUC shard whose genesis lists `node_id` (a device keeps no GMUC, but
    knows every chain's configuration)."""
    found = [
        cid
        for cid, cfg in ctx.config.chains.items()
        if cid.startswith(GMUC_PREFIX) and node_id in cfg.genesis.members
    ]
    if len(found) != 1:
        raise RuntimeError(f"node {node_id} is a member of {len(found)} GMUC shards")
    return found[0]


def combine_shards(results: list[tuple[Weights, int]]) -> Weights:
    """Cooperative sharding: the round's one global model from each shard's decided
    aggregate and its workers' samples, in the given (canonical) order — the average
    weighted by samples, which for FedAvg equals one FedAvg over every shard's updates (it
    is linear); a shard without samples (no update used) counts for nothing; none with
    any: the first shard's weights (every shard kept the same previous model)."""
    if not results:
        raise ValueError("no shard results")
    total = sum(n for _, n in results)
    if total <= 0:
        return dict(results[0][0])
    out: Weights = {}
    for name, first in results[0][0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for weights, n in results:
            if n > 0:
                acc += (n / total) * weights[name].astype(np.float64)
        out[name] = acc.astype(first.dtype)
    return out


def gmuc_of(ctx: NodeContext) -> str:
    """The id of the GMUC task chain this node keeps."""
    return own_chain(ctx, GMUC_PREFIX)


def lmuc_of(ctx: NodeContext) -> str:
    """The id of the LMUC this node keeps."""
    return own_chain(ctx, LMUC_PREFIX)
