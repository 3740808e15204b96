"""The vanilla roles driven by aggregation strategies (no aggregator names in the roles):
what each strategy keeps and rejects is what the publisher's round record says, and the
rewards paid on chain are `rewards.by_samples` of the contributions the chain recorded.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory. Every
device answers before the (long) deadline, so the counts below do not depend on timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.learning.train import configure_torch_threads
from node.schemes.rewards import Payout, by_samples, contributions
from orchestrator.collect import read_records
from tests.sim.vanilla_net import TASK_ID, VanillaNet
from tests.unit.node_configs import learning_config

ROUNDS = 2
DEVICES = ["dev0-0", "dev0-1", "dev1-0", "dev1-1"]
POOL = 1000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def _rounds(tmp_path: Path, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The publisher's round records of a 2-MEC, 4-device run with aggregator `name`;
    checks that the rewards paid are the reward rule applied to the chain's records."""
    net = VanillaNet.build(mecs=2, devices_per_mec=2, seed=3, fixed_keys=True)
    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=ROUNDS,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=120,
    )
    config = {"startup_timeout_s": 120, "aggregator": {"name": name, "params": params}}
    nodes = net.run(tmp_path, learning, seed=3, reward_pool=POOL, config=config)
    records = [r for r in read_records(tmp_path / "pub") if r["event"] == "round"]
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    replica = nodes["pub"].replica
    assert replica is not None
    state = replica.chain.state
    task = state.get("task", TASK_ID)
    assert (task["round"], task["status"]) == (ROUNDS, "closed"), "every round is on chain"
    balances = dict(state.items("token.balance"))
    paid = [Payout(d, balances[d]) for d in DEVICES if balances.get(d)]
    assert paid == by_samples(POOL, contributions(state, TASK_ID))
    assert sum(balances.values()) == POOL
    return records


@pytest.mark.parametrize(
    ("name", "params", "kept", "reason"),
    [
        ("fedavg", {}, 4, None),
        ("top_k_accuracy", {"k": 3}, 3, "not_top_k"),
        ("multi_krum", {"f": 0, "m": 2}, 2, "krum_score"),
        ("krum", {"f": 0}, 1, "krum_score"),
        ("accuracy_threshold", {"threshold": 0.0}, 4, None),
    ],
)
def test_the_round_record_says_what_the_strategy_kept(
    tmp_path: Path, name: str, params: dict[str, Any], kept: int, reason: str | None
) -> None:
    for record in _rounds(tmp_path, name, params):
        assert record["contributors"] == kept, record
        assert len(record["rejected"]) == len(DEVICES) - kept, record
        assert set(record["rejected"]) <= set(DEVICES)
        assert set(record["rejected_reasons"].values()) <= {reason}, record


def test_a_round_where_nothing_passes_keeps_the_global_model(tmp_path: Path) -> None:
    records = _rounds(tmp_path, "accuracy_threshold", {"threshold": 2.0})
    for record in records:
        assert record["contributors"] == 0
        assert record["rejected_reasons"] == {d: "below_threshold" for d in DEVICES}
    assert records[0]["accuracy"] == records[1]["accuracy"], "the model did not change"


def test_an_aggregator_refusing_a_round_leaves_the_model_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    records = _rounds(tmp_path, "krum", {"f": 1})  # 4 updates; Krum needs n > 2f + 2 = 4

    for record in records:
        assert record["contributors"] == 0
        assert record["rejected_reasons"] == {d: "aggregator_refused" for d in DEVICES}
    assert records[0]["accuracy"] == records[1]["accuracy"], "the model did not change"
