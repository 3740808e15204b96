"""A node's scheduled behaviour and privacy as the vanilla roles apply them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from node.config import NodeConfig
from node.learning.aggregators import Update
from node.roles.learner import Learner
from node.roles.threats import DeviceThreats, active_behaviour, edge_fault, edge_output
from tests.unit.node_configs import learning_config, node_config
from topologies import HierarchyParams, build_hierarchy

LEARNING = learning_config(
    dataset="digits",
    model="mlp",
    partition="iid",
    rounds=5,
    local_epochs=1,
    batch_size=16,
    learning_rate=0.1,
    round_deadline_s=10,
)


def config(**extra: Any) -> NodeConfig:
    return node_config(LEARNING, **extra)


@pytest.fixture(scope="module")
def learner() -> Learner:
    return Learner(LEARNING, 3, (0, 10))


def flip(from_round: int, until: int | None) -> dict[str, Any]:
    return {
        "from_round": from_round,
        "until_round": until,
        "name": "label_flip",
        "params": {"strength": 1.0, "mode": "reverse"},
    }


def test_behaviour_is_active_only_in_its_interval() -> None:
    cfg = config(behaviours=[flip(2, 4)])
    assert [active_behaviour(cfg, r) is not None for r in range(1, 6)] == [
        False,
        True,
        True,
        False,
        False,
    ]


def test_label_flip_changes_the_training_labels_only_while_active(learner: Learner) -> None:
    threats = DeviceThreats(config(behaviours=[flip(2, None)]), learner)

    _, y1, name1 = threats.training_data(1)
    x2, y2, name2 = threats.training_data(2)

    assert name1 == "" and np.array_equal(y1, learner.train_y)
    assert name2 == "label_flip" and x2 is learner.train_x
    assert np.array_equal(y2, 9 - learner.train_y)
    assert threats.label_emd(y2) > threats.label_emd(y1)


def test_privacy_clips_and_adds_the_configured_noise(learner: Learner) -> None:
    privacy = {"epsilon": 8.0, "delta": float(np.exp(-3)), "clip_norm": 0.5, "mechanism": "classic"}
    threats = DeviceThreats(config(privacy=privacy), learner)
    g = learner.weights()
    trained = {k: v + 1.0 for k, v in g.items()}

    sent = threats.outgoing(1, trained, g)

    record = threats.privacy_record
    assert record["clipped"] is True and record["clip_norm"] == 0.5
    assert record["sigma"] == pytest.approx(0.5 * np.sqrt(2 * np.log(1.25 / np.exp(-3))) / 8)
    noise = np.concatenate([(sent[k] - g[k]).ravel() for k in g])
    assert noise.std() == pytest.approx(record["sigma"], rel=0.1)
    assert all(sent[k].dtype == g[k].dtype for k in g)


def test_privacy_divided_by_the_runs_devices(learner: Learner) -> None:
    # divide_by_devices: each device's sigma is sigma / D, D = the run's 2 x 5 devices
    privacy = {"epsilon": 8.0, "delta": float(np.exp(-3)), "clip_norm": 0.5}
    g = learner.weights()
    trained = {k: v + 1.0 for k, v in g.items()}
    records = []
    for divide in (False, True):
        topology = build_hierarchy(HierarchyParams(1, 2, 5, d2d=None), 0)
        cfg = config(privacy=privacy | {"divide_by_devices": divide}, topology=topology)
        threats = DeviceThreats(cfg, learner)
        threats.outgoing(1, trained, g)
        records.append(threats.privacy_record)

    assert records[0]["noise_divisor"] == 1.0 and records[1]["noise_divisor"] == 10.0
    assert records[1]["sigma"] == pytest.approx(records[0]["sigma"] / 10)


def test_update_attack_applies_after_privacy(learner: Learner) -> None:
    cfg = config(
        behaviours=[
            {
                "from_round": 1,
                "until_round": None,
                "name": "free_rider",
                "params": {"mode": "global"},
            }
        ]
    )
    g = learner.weights()
    sent = DeviceThreats(cfg, learner).outgoing(1, {k: v + 1 for k, v in g.items()}, g)
    assert all(np.array_equal(sent[k], g[k]) for k in g)


def test_mec_tamper_and_malfunction(learner: Learner) -> None:
    g = learner.weights()
    cfg = config(
        node_id="mec0",
        behaviours=[
            {
                "from_round": 1,
                "until_round": 3,
                "name": "tamper",
                "params": {"target": "dev0-1", "action": "drop"},
            },
            {
                "from_round": 3,
                "until_round": None,
                "name": "malfunction",
                "params": {"mode": "zeros"},
            },
        ],
    )
    ups = [Update(g, 10, None, "dev0-0"), Update(g, 10, None, "dev0-1")]

    kept, name = edge_fault(cfg, 1, ups, g)
    assert name == "tamper" and [u.sender for u in kept] == ["dev0-0"]
    assert edge_output(cfg, 1, g) is g
    zeros = edge_output(cfg, 3, g)
    assert all(not zeros[k].any() for k in g if zeros[k].dtype.kind == "f")
