"""Build a PBFT cluster on the simulated network and check safety and liveness."""

from __future__ import annotations

import random
from dataclasses import dataclass

from node.consensus.actions import PbftConfig
from node.consensus.pbft import PbftReplica
from node.core.encoding import sha256
from node.keys import NodeKey
from tests.sim.pbft.byzantine import BEHAVIOURS
from tests.sim.pbft.network import Endpoint, NetConfig, Sim

SIM_CONFIG = PbftConfig(
    checkpoint_interval=2, log_window=4, request_timeout_s=0.5, max_timeout_s=8.0
)
_KEYS: dict[int, NodeKey] = {}


def key_for(i: int) -> NodeKey:
    """A fixed key per replica index (cached: key generation is not what is tested)."""
    if i not in _KEYS:
        _KEYS[i] = NodeKey.from_seed(sha256(b"pbft-sim-%d" % i))
    return _KEYS[i]


@dataclass
class Cluster:
    """A simulation plus what the checks need."""

    sim: Sim
    n: int
    f: int
    replicas: list[PbftReplica]
    honest: list[bool]
    requests: list[bytes]

    def honest_replicas(self) -> list[PbftReplica]:
        """The cores of honest endpoints."""
        return [r for r, h in zip(self.replicas, self.honest, strict=True) if h]

    def all_committed(self) -> bool:
        """True when every honest endpoint committed every submitted request."""
        want = {sha256(r) for r in self.requests}
        return all(want <= self.sim.digests[i] for i, h in enumerate(self.honest) if h)

    def missing(self) -> dict[str, int]:
        """Per honest replica, how many requests it has not committed."""
        want = {sha256(r) for r in self.requests}
        return {
            self.replicas[i].id: len(want - self.sim.digests[i])
            for i, h in enumerate(self.honest)
            if h and not want <= self.sim.digests[i]
        }


def build(
    n: int,
    byzantine: dict[int, str],
    net: NetConfig,
    seed: int,
    config: PbftConfig = SIM_CONFIG,
) -> Cluster:
    """n replicas r0..r{n-1}; `byzantine` maps an index to a behaviour or "twins"."""
    rng = random.Random(seed ^ 0x5EED)
    ids = [f"r{i}" for i in range(n)]
    group = [(rid, key_for(i).public_key) for i, rid in enumerate(ids)]
    endpoints: list[Endpoint] = []
    replicas: list[PbftReplica] = []
    honest: list[bool] = []
    for i, rid in enumerate(ids):
        core = PbftReplica(rid, key_for(i), group, config)
        behaviour = byzantine.get(i)
        if behaviour is None:
            endpoints.append(core)
        elif behaviour == "twins":
            twin = PbftReplica(rid, key_for(i), group, config)
            endpoints.append(twin)
            replicas.append(twin)
            honest.append(False)
            endpoints.append(core)
        else:
            endpoints.append(BEHAVIOURS[behaviour](core, random.Random(rng.random())))
        replicas.append(core)
        honest.append(behaviour is None)
    sim = Sim(endpoints, honest, net, seed)
    return Cluster(sim, n, (n - 1) // 3, replicas, honest, [])


def submit(cluster: Cluster, requests: list[bytes], at: float = 0.0, gap: float = 0.05) -> None:
    """The client sends each request to every replica, `gap` seconds apart."""
    for k, req in enumerate(requests):
        cluster.requests.append(req)
        cluster.sim.submit(at + k * gap, req)


def run_to_completion(cluster: Cluster, until: float, seed: int) -> None:
    """Run until every honest replica committed everything; assert liveness by `until`."""
    cluster.sim.run(until, cluster.all_committed)
    states: dict[int, bytes] = {}
    for r in cluster.honest_replicas():
        other = states.setdefault(r.last_exec, r.state)
        assert other == r.state, f"seed={seed}: safety: executed histories differ"
    assert cluster.all_committed(), (
        f"seed={seed}: liveness: missing {cluster.missing()} at t={cluster.sim.now:.2f} "
        f"views={[r.view for r in cluster.honest_replicas()]}"
    )
