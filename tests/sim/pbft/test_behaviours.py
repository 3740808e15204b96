"""One named scenario per Byzantine behaviour, view changes, checkpoints and faults."""

from __future__ import annotations

import itertools

import pytest

from node.consensus.pbft import PbftReplica
from tests.sim.pbft.harness import Cluster, build, run_to_completion, submit
from tests.sim.pbft.network import NetConfig

REQUESTS = [b"block-%d" % i for i in range(6)]


def _run(
    n: int,
    byzantine: dict[int, str],
    net: NetConfig | None = None,
    seed: int = 7,
    until: float = 120.0,
) -> Cluster:
    cluster = build(n, byzantine, net or NetConfig(), seed)
    submit(cluster, REQUESTS)
    run_to_completion(cluster, until, seed)
    return cluster


def _max_view(cluster: Cluster) -> int:
    return max(r.view for r in cluster.honest_replicas())


@pytest.mark.parametrize("n", [4, 7])
def test_no_faults_commits_in_view_0(n: int) -> None:
    cluster = _run(n, {})
    assert _max_view(cluster) == 0


def test_silent_backup() -> None:
    assert _max_view(_run(4, {3: "silent"})) == 0


def test_crashed_primary_commits_in_view_1() -> None:
    cluster = _run(4, {0: "silent"})
    assert {r.view for r in cluster.honest_replicas()} == {1}


def test_two_successive_faulty_primaries() -> None:
    cluster = _run(7, {0: "silent", 1: "silent"})
    assert {r.view for r in cluster.honest_replicas()} == {2}


def test_equivocating_primary() -> None:
    cluster = _run(4, {0: "equivocate"})
    assert _max_view(cluster) <= cluster.f + 2


def test_equivocating_primary_n7() -> None:
    cluster = _run(7, {0: "equivocate", 3: "vote_all"})
    assert _max_view(cluster) <= cluster.f + 2


def test_wrong_digests() -> None:
    cluster = _run(4, {0: "wrong_digest"})
    assert any(r.stats["bad_digest"] for r in cluster.honest_replicas())
    assert _max_view(cluster) <= cluster.f + 2


def test_replayed_messages() -> None:
    cluster = _run(4, {2: "replay"})
    stats = sum(
        (r.stats for r in cluster.honest_replicas()), start=type(cluster.replicas[0].stats)()
    )
    assert stats["sender_mismatch"] and (stats["duplicate"] or stats["stale"])


def test_forged_signatures() -> None:
    cluster = _run(4, {1: "forge"})
    for r in cluster.honest_replicas():
        assert r.stats["bad_signature"] and r.stats["sender_mismatch"]


def test_forging_primary_forces_view_change() -> None:
    cluster = _run(4, {0: "forge"})
    assert _max_view(cluster) == 1


def test_vote_for_everything() -> None:
    _run(7, {1: "vote_all", 2: "vote_all"})


@pytest.mark.parametrize("twin", [0, 2])
def test_twins(twin: int) -> None:
    _run(4, {twin: "twins"})


def test_lossy_duplicating_reordering_network() -> None:
    net = NetConfig(drop=0.2, dup=0.2, max_delay=0.1, stable_at=2.0)
    _run(7, {5: "silent"}, net)


def test_partition_heals() -> None:
    net = NetConfig(stable_at=3.0, partitions=[(frozenset({"r0", "r1"}), 0.0, 3.0)])
    cluster = _run(4, {}, net)
    assert all(r.last_exec >= len(REQUESTS) for r in cluster.honest_replicas())


def test_checkpoints_garbage_collect_the_log() -> None:
    cluster = build(4, {}, NetConfig(), 3)
    for k in range(10):
        submit(cluster, [b"gc-%d" % k], at=k * 0.2)
    r0: PbftReplica = cluster.replicas[0]
    sizes = []
    while not cluster.all_committed() and cluster.sim.step():
        sizes.append(r0.log_size())
    assert cluster.all_committed()
    shrinks = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
    assert shrinks >= 4  # one per stable checkpoint (K=2, 10 requests)
    assert max(sizes) < 10 * 8 // 2  # never the whole history: GC keeps about a window
    for r in cluster.replicas:
        assert r.low >= 8 and r.last_exec == 10
        assert not any(s <= r.low for s in r._slots)
