"""BEES over the in-memory network with a hostile UE: in round 1, dev0-0 sends its ES (mec0)
malformed ``bees.offload`` samples instead of its honest transfer (NaN in x, x one column
short, x float64, a label = num_classes, a negative label, y int32). The ES drops each as
``bad_offload``, posts no update of dev0-0 for round 1, collects at its deadline and keeps
going: both rounds complete, every ES's chain verifies and agrees with the publisher's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.contracts import bees as contract
from node.daemon import Daemon
from node.learning.train import configure_torch_threads
from node.ledger.chain import Chain, verify_store
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.store import open_store
from node.roles.base import NodeContext, Role
from node.schemes.bees.messages import OffloadedData
from node.schemes.bees.ue import UeRole
from node.schemes.vanilla.messages import GlobalModel
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeSpec

ES = ("mec0", "mec1", "mec2")
HOSTILE, ITS_ES = "dev0-0", "mec0"
SAMPLES = 8  # per garbage message

Samples = tuple[np.ndarray, np.ndarray]
Garbage = Callable[[np.ndarray, np.ndarray, int], Samples]


def _nan_in_x(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    x = x.copy()
    x.flat[3] = np.nan
    return x, y


def _x_one_column_short(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    return np.ascontiguousarray(x[..., :-1]), y


def _x_float64(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    return x.astype(np.float64), y


def _label_num_classes(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    y = y.copy()
    y[0] = classes
    return x, y


def _negative_label(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    y = y.copy()
    y[-1] = -1
    return x, y


def _y_int32(x: np.ndarray, y: np.ndarray, classes: int) -> Samples:
    return x, y.astype(np.int32)


GARBAGE: dict[str, Garbage] = {
    "x_nan": _nan_in_x,
    "x_one_column_short": _x_one_column_short,
    "x_float64": _x_float64,
    "y_label_num_classes": _label_num_classes,
    "y_negative_label": _negative_label,
    "y_int32": _y_int32,
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


class GarbageUe(UeRole):
    """In round 1 sends its ES one ``bees.offload`` per `garbage` case (its own samples,
    spoiled) and nothing honest; from round 2 on an honest UE."""

    def __init__(self, garbage: list[Garbage]) -> None:
        self.garbage = garbage

    def _on_global(self, ctx: NodeContext, msg: GlobalModel) -> None:
        if msg.round != 1:
            super()._on_global(ctx, msg)
            return
        self.greeted, self.round = True, msg.round
        x = np.ascontiguousarray(self.learner.train_x[:SAMPLES], dtype=np.float32)
        y = np.ascontiguousarray(self.learner.train_y[:SAMPLES], dtype=np.int64)
        for spoil in self.garbage:
            bad_x, bad_y = spoil(x, y, self.learner.num_classes)
            ctx.send(str(ctx.me.parent), OffloadedData(1, bad_x, bad_y, b"", ctx.wall_ms()))


def _run(tmp_path: Path, garbage: list[Garbage]) -> dict[str, Daemon]:
    net = VanillaNet.build(mecs=3, devices_per_mec=2, seed=7)

    def role(spec: NodeSpec) -> Role | None:
        return GarbageUe(garbage) if spec.id == HOSTILE else None

    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=2,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=6,  # mec0 waits for dev0-0 until 0.6 x this in round 1
    )
    params: dict[str, Any] = {"pol_timeout_s": 1.0, "accuracy_tolerance": 0.01}
    return net.run(
        tmp_path,
        learning,
        seed=7,
        reward_pool=0,
        role=role,
        scheme="bees",
        params=params,
        config={"startup_timeout_s": 120},
    )


def _chain(tmp_path: Path, node: str) -> tuple[bytes, Any, int]:
    """(head hash, final state, blocks above genesis) of `node`'s verified chain."""
    store = open_store(chain_dir(tmp_path / node, MAIN_CHAIN))
    try:
        report = verify_store(store)
        assert report.ok, (node, report.failures)
        return report.head_hash, Chain.open(store).state, len(list(store.blocks(1)))
    finally:
        store.close()


def _records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r.get("event") == event]


def _assert_dropped_and_run_completed(tmp_path: Path, nodes: dict[str, Daemon], n: int) -> None:
    # the ES counted every garbage message as bad_offload, in memory and in its counters
    assert nodes[ITS_ES].drops["bad_offload"] == n
    (counters,) = _records(tmp_path, ITS_ES, "counters")
    assert counters["dropped"].get("bad_offload") == n
    assert all(nodes[m].drops.get("bad_offload", 0) == 0 for m in ES if m != ITS_ES)
    # nothing was trained on it or acknowledged: round 1 closed at the deadline without it
    transfers = _records(tmp_path, ITS_ES, "transfer")
    assert not [t for t in transfers if t["ue"] == HOSTILE and t["round"] == 1]
    first = next(r for r in _records(tmp_path, ITS_ES, "round") if r["round"] == 1)
    assert first["missing"] == [HOSTILE] and first["offloaded"] == 0
    assert first["forwarded_on"] == "deadline"
    # both rounds are on every chain, the same chain, and dev0-0 is absent from round 1
    head, state, blocks = _chain(tmp_path, "pub")
    assert blocks == 2
    for es in ES:
        assert _chain(tmp_path, es)[0] == head, f"{es} holds another chain"
    round1 = {u.ue for u in contract.round_updates(state, 1)}
    assert HOSTILE not in round1 and "dev0-1" in round1
    # honest again in round 2: mec0 still takes its transfer
    assert [t["ue"] for t in transfers if t["round"] == 2].count(HOSTILE) == 1


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_an_es_drops_a_malformed_offload_and_the_run_goes_on(tmp_path: Path, case: str) -> None:
    nodes = _run(tmp_path, [GARBAGE[case]])
    _assert_dropped_and_run_completed(tmp_path, nodes, 1)
