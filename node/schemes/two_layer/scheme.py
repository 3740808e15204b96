"""The two-layer scheme's parameters and plan (its protocol: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import Field, ValidationInfo, field_validator

from node.contracts.runtime import Genesis
from node.core.finality import Committee
from node.gossip import GossipConfig
from node.ledger.chain import ChainConfig
from node.roles.base import Role
from node.schemes.base import ChainPlan, NodePlan, Plan, PlanInputs, Scheme, SchemeParams
from node.schemes.gossip_fedavg.scheme import gossip_peers
from topologies import LinkKind, NodeKind, TopologySpec

PUBLISHER = "pub"
GMUC_PREFIX = "gmuc-"
LMUC_PREFIX = "lmuc-"


class TwoLayerParams(SchemeParams):
    """``scheme: {name: two-layer, full_devices: 3, ...}``."""

    tasks: int = Field(
        1,
        ge=1,
        description="FL tasks learned concurrently, each on its own subset of the MECs "
        "(consecutive in topology order) and its own GMUC shard (isolation sharding)",
    )
    cooperative: bool = Field(
        False,
        description="cooperative sharding: the tasks are sub-tasks of one task; each round "
        "the shards' decided aggregates are combined (weighted by their workers' samples) "
        "into the one global model every shard trains next",
    )
    full_devices: int = Field(
        3,
        ge=3,
        description="devices per MEC that mine its LMUC with it (PBFT, so at least 3); "
        "the rest are light and only relay",
    )
    reputation_threshold: float = Field(
        0.0, ge=0.0, le=1.0, description="lowest reputation a device needs to be selected"
    )
    top_k: int = Field(0, ge=0, description="devices a MEC selects per round (0: all)")
    min_samples: int = Field(
        0, ge=0, description="task request: local training samples a worker must hold"
    )
    min_cpu_mhz: int = Field(
        0, ge=0, description="task request: CPU frequency (MHz) a worker must declare"
    )
    min_energy_j: int = Field(
        0, ge=0, description="task request: energy budget (J) a worker must give the task"
    )
    fanout: int = Field(2, ge=1, description="D2D neighbours a new update or block is pushed to")
    ttl: int = Field(8, ge=1, le=255, description="D2D hops an update or block may travel")
    lazy_fanout: int = Field(
        6,
        ge=1,
        description="D2D neighbours told of held items (IHAVE) each heartbeat, chosen anew "
        "each time (gossipsub's D_lazy, our choice of its default 6)",
    )
    heartbeat_s: float = Field(
        1.0,
        gt=0,
        description="seconds between gossip announcements (IHAVE) of held items "
        "(gossipsub v1.1's heartbeat, our choice)",
    )
    want_delay_s: float = Field(
        2.0,
        ge=0,
        description="seconds a device that hears of an update it lacks (IHAVE) waits for "
        "a pushed copy before pulling it (IWANT; Plumtree's lazy-push timer, our choice of "
        "2 s: see bench/gossip_messages.py); LMUC blocks, small and awaited by the round, "
        "are pulled at once",
    )
    want_timeout_s: float = Field(
        3.0,
        gt=0,
        description="seconds a gossip pull (IWANT) waits before asking the next neighbour; "
        "each further ask waits twice as long",
    )

    @field_validator("cooperative")
    @classmethod
    def _cooperative_needs_shards(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("tasks", 1) < 2:
            raise ValueError("false with tasks: 1 (cooperative sharding needs tasks >= 2)")
        return value

    def gossip_config(self, seed: int) -> GossipConfig:
        """The gossip core's configuration for a run with `seed`."""
        return GossipConfig(
            ttl=self.ttl,
            fanout=self.fanout,
            lazy_fanout=self.lazy_fanout,
            want_timeout_s=self.want_timeout_s,
            want_delay_s=self.want_delay_s,
            want_backoff=2.0,
            seed=str(seed).encode(),
        )


def gmuc_id(task: int) -> str:
    """The chain id of task number `task`'s GMUC shard (task-specific chain)."""
    return f"{GMUC_PREFIX}t{task}"


def lmuc_id(mec: str) -> str:
    """The chain id of `mec`'s local model update chain."""
    return f"{LMUC_PREFIX}{mec}"


def devices_by_mec(topology: TopologySpec) -> dict[str, list[str]]:
    """MEC id -> its devices, in topology order."""
    out: dict[str, list[str]] = {n.id: [] for n in topology.of_kind(NodeKind.MEC)}
    for n in topology.of_kind(NodeKind.DEVICE):
        out[str(n.parent)].append(n.id)
    return out


def full_devices(devices: list[str], count: int) -> list[str]:
    """The full devices of a MEC: its first `count` devices in topology order (our choice;
    the paper leaves how they are chosen open)."""
    return devices[:count]


def task_shards(mecs: list[str], tasks: int) -> list[list[str]]:
    """The MECs of each task: `tasks` consecutive groups in topology order, sizes differing by
    at most one (our choice); ValueError if a task would get fewer than 3 MECs (its GMUC's
    PBFT: the MECs and the publisher, at least 4 replicas)."""
    if len(mecs) < 3 * tasks:
        raise ValueError(
            f"topology: scheme two-layer needs at least 3 MECs per task (the GMUC's PBFT: "
            f"the MECs and the publisher, at least 4 replicas): {len(mecs)} MECs for "
            f"tasks: {tasks}"
        )
    base, extra = divmod(len(mecs), tasks)
    out, start = [], 0
    for i in range(tasks):
        size = base + (1 if i < extra else 0)
        out.append(mecs[start : start + size])
        start += size
    return out


def lmuc_committee(keys: Mapping[str, bytes], mec: str, full: list[str]) -> Committee:
    """The LMUC's PBFT committee: the MEC first (primary of view 0), then its full devices."""
    return Committee.bft(tuple(keys[n] for n in [mec, *full]))


class TwoLayerScheme(Scheme):
    """LMUC per MEC (PBFT among the MEC and its full devices, updates by D2D gossip) and a
    GMUC task chain among the MECs, which vote the cross-verified aggregate."""

    name = "two-layer"
    summary = (
        "two-layer blockchain FL: a local model update chain per MEC (PBFT among the MEC and "
        "its full devices, updates gossiped over D2D) and a task-specific global chain among "
        "the MECs, which cross-verify every LMUC block and vote the aggregate (PBFT)"
    )
    Params = TwoLayerParams

    def plan(self, topology: TopologySpec, keys: Mapping[str, bytes], inputs: PlanInputs) -> Plan:
        """One GMUC per task (its MECs and the publisher keep and order it) and one LMUC
        per MEC (kept and ordered by the MEC and its full devices; its light devices keep a
        replica too, fed by gossip: they sign their update transactions with its nonces)."""
        params = self.params
        assert isinstance(params, TwoLayerParams)
        if inputs.consensus != "pbft":
            raise ValueError(
                f"ledger.consensus: {inputs.consensus!r} is not supported by scheme "
                f"{self.name}; allowed: pbft"
            )
        groups = devices_by_mec(topology)
        shards = task_shards(list(groups), params.tasks)
        daemons = topology.daemons()
        task_of = {m: i for i, shard in enumerate(shards) for m in shard}
        chains: dict[str, ChainPlan] = {}
        for i, shard in enumerate(shards):
            gmuc = gmuc_id(i)
            members = {PUBLISHER: (keys[PUBLISHER], str(NodeKind.PUBLISHER))}
            for m in shard:
                members[m] = (keys[m], str(NodeKind.MEC))
                members |= {d: (keys[d], str(NodeKind.DEVICE)) for d in groups[m]}
            # the pool split between the tasks (the first gets the remainder): our choice
            pool = inputs.reward_pool // len(shards)
            pool += inputs.reward_pool % len(shards) if i == 0 else 0
            chains[gmuc] = ChainPlan(
                gmuc,
                ChainConfig(
                    Genesis(
                        members=members,
                        balances={PUBLISHER: pool} if pool else {},
                        chain_id=f"{inputs.run_id}/{gmuc}",
                    ),
                    # the MECs and the publisher (our choice: PBFT needs 4 replicas, and the
                    # paper's case study has 3 MECs)
                    Committee.bft(tuple(keys[m] for m in [*shard, PUBLISHER])),
                ),
                (PUBLISHER, *shard),
            )
        for mec, devices in groups.items():
            if len(devices) < params.full_devices:
                raise ValueError(
                    f"topology: MEC {mec} has {len(devices)} devices; scheme two-layer needs "
                    f"at least full_devices ({params.full_devices}) per MEC (PBFT needs 4 "
                    "replicas: the MEC and 3 full devices)"
                )
            cid = lmuc_id(mec)
            # on its LMUC the MEC opens the task and closes its rounds (our choice): the
            # task contract then records the devices' updates round by round. Its genesis
            # lists only the MEC (someone must submit the first transaction); the devices
            # register there (identity.enroll, Step 1). The committee's keys (the MEC and
            # the full devices) are in the finality rule: they certify blocks from genesis.
            members = {mec: (keys[mec], "publisher")}
            full = full_devices(devices, params.full_devices)
            chains[cid] = ChainPlan(
                cid,
                ChainConfig(
                    Genesis(members=members, balances={}, chain_id=f"{inputs.run_id}/{cid}"),
                    lmuc_committee(keys, mec, full),
                ),
                (mec, *devices),
            )
        # every MEC has >= full_devices (3) devices here, so no D2D link means d2d: off
        if not any(link.kind == LinkKind.D2D for link in topology.links):
            raise ValueError(
                "topology.d2d: off is invalid for scheme two-layer; allowed: a D2D link class "
                "(each LMUC gossips its devices' updates and blocks over D2D links)"
            )
        nodes: dict[str, NodePlan] = {}
        for n in daemons:
            if n.kind == NodeKind.PUBLISHER:
                own: tuple[str, ...] = tuple(gmuc_id(i) for i in range(len(shards)))
                peers = [x.id for x in daemons if x.id != n.id]
            elif n.kind == NodeKind.MEC:
                shard = shards[task_of[n.id]]
                own = (gmuc_id(task_of[n.id]), lmuc_id(n.id))
                peers = [PUBLISHER, *groups[n.id], *(m for m in shard if m != n.id)]
            else:
                mec = str(n.parent)
                own = (lmuc_id(mec),)
                full = full_devices(groups[mec], params.full_devices)
                peers = [PUBLISHER, *gossip_peers(topology, n.id), *full]
            peers = [p for p in dict.fromkeys(peers) if p != n.id]
            # a light device (outside its LMUC's committee) keeps the LMUC as a light replica
            # (certified headers: `node.ledger.light`) when ledger.device_replica is light
            light = (
                own
                if n.kind == NodeKind.DEVICE
                and inputs.device_replica == "light"
                and n.id not in full_devices(groups[str(n.parent)], params.full_devices)
                else ()
            )
            nodes[n.id] = NodePlan(
                node_id=n.id,
                role=str(n.kind),
                chains=own,
                peers=tuple(peers),
                light_chains=light,
            )
        return Plan(nodes=nodes, chains=chains)

    def role_factories(self) -> Mapping[str, Callable[[], Role]]:
        """publisher, mec, device."""
        from node.schemes.two_layer.device import TwoLayerDeviceRole
        from node.schemes.two_layer.mec import TwoLayerMecRole
        from node.schemes.two_layer.publisher import ShardedPublisherRole

        return {
            str(NodeKind.PUBLISHER): ShardedPublisherRole,
            str(NodeKind.MEC): TwoLayerMecRole,
            str(NodeKind.DEVICE): TwoLayerDeviceRole,
        }
