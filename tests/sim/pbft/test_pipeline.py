"""Pipelined proposals: the primary keeps up to a window of sequence numbers in flight
(between the watermarks) and every honest replica still executes them in order."""

from __future__ import annotations

import pytest

from node.core.encoding import sha256
from tests.sim.pbft.harness import SIM_CONFIG, build, run_to_completion, submit
from tests.sim.pbft.network import NetConfig

REQUESTS = [b"pipelined-%d" % i for i in range(20)]


@pytest.mark.parametrize(
    ("n", "byzantine", "slow"),
    [
        (4, {}, {"r3": 0.05}),
        (7, {3: "forge"}, {"r5": 0.1}),
        (7, {2: "vote_all", 4: "silent"}, {}),
        (7, {0: "silent"}, {"r6": 0.05}),  # a crashed primary: view 1 pipelines the rest
    ],
)
def test_pipelined_proposals_commit_in_submission_order(
    n: int, byzantine: dict[int, str], slow: dict[str, float]
) -> None:
    seed = 11
    cluster = build(n, byzantine, NetConfig(slow=slow), seed)
    submit(cluster, REQUESTS, gap=0.0)  # all at once: the primary may pipeline them
    depth = 0
    while not cluster.all_committed() and cluster.sim.step():
        for r in cluster.honest_replicas():
            if r.primary == r.id and r.active:
                depth = max(depth, r._next_seq - r.last_exec)
                assert r._next_seq <= r.low + SIM_CONFIG.log_window  # high watermark

    run_to_completion(cluster, 60.0, seed)
    assert depth == SIM_CONFIG.log_window  # the whole window was in flight at once
    orders = [
        [committed[s] for s in sorted(committed)]
        for committed, honest in zip(cluster.sim.commits, cluster.honest, strict=True)
        if honest
    ]
    want = [sha256(r) for r in REQUESTS]
    assert all(order == orders[0] for order in orders)  # one execution order everywhere
    assert sorted(orders[0]) == sorted(want)
    if {r.view for r in cluster.honest_replicas()} == {0}:  # no view change: the primary's
        assert orders[0] == want  # order, i.e. the order it learned the requests in
