"""The MEC behaviour ``withhold_blobs``: its parameters' validation, the seeded choice of
devices, the rounds it covers, and `ChainSync.serve_filter` (a refused ``blob.get`` gets no
answer and is counted by its reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.config import NodeConfig
from node.core.encoding import sha256
from node.learning.attacks import make_params
from node.learning.attacks.withhold import (
    REFUSAL,
    WITHHOLD_BLOBS,
    WithholdBlobsParams,
    withheld_devices,
)
from node.ledger.blobs import MemoryBlobStore
from node.ledger.chain import Chain
from node.ledger.store import open_store
from node.ledger.sync import ChainSync, Outgoing
from node.roles.threats import BlobWithholding, edge_fault, edge_output
from orchestrator.faults import behaviour_schedules, resolve_faults
from orchestrator.scenario import ScenarioError, parse_scenario
from tests.sim.test_chain_sync import _config
from tests.unit.node_configs import learning_config, node_config
from topologies import HierarchyParams, build_hierarchy

REGISTRY = {WITHHOLD_BLOBS.name: WITHHOLD_BLOBS}
DEVICES = [f"dev1-{i}" for i in range(5)]
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


def params(**p: Any) -> WithholdBlobsParams:
    out: WithholdBlobsParams = make_params(REGISTRY, "withhold_blobs", p)
    return out


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"devices": []}, "devices must be a non-empty list of device ids"),
        ({"devices": "dev1-0"}, "devices must be a non-empty list of device ids"),
        ({"devices": ["dev1-0", 3]}, "devices must hold device ids"),
        ({"fraction": 0}, r"fraction must be in \(0, 1\]"),
        ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
        ({"fraction": "half"}, "fraction must be a number"),
        ({"fraction": True}, "fraction must be a number"),
        ({"devices": ["dev1-0"], "fraction": 0.5}, "devices or fraction, not both"),
        ({"target": "dev1-0"}, "has no parameter 'target'"),
    ],
)
def test_bad_params_are_refused_naming_the_field(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        params(**given)


def test_a_listed_device_must_be_the_mecs() -> None:
    with pytest.raises(ValueError, match=r"devices: 'dev0-0' is not a device of this MEC; allowed"):
        withheld_devices(DEVICES, params(devices=["dev0-0"]), np.random.default_rng(0))


def test_the_devices_listed_a_seeded_fraction_or_all() -> None:
    assert withheld_devices(DEVICES, params(devices=["dev1-2"]), np.random.default_rng(0)) == {
        "dev1-2"
    }
    assert withheld_devices(DEVICES, params(), np.random.default_rng(0)) == set(DEVICES)
    picks = [
        withheld_devices(DEVICES, params(fraction=0.4), np.random.default_rng(seed))
        for seed in range(8)
    ]
    assert all(len(p) == 2 and p <= set(DEVICES) for p in picks)
    assert len(set(picks)) > 1  # the seed decides which
    again = withheld_devices(DEVICES, params(fraction=0.4), np.random.default_rng(5))
    assert again == picks[5]
    tiny = withheld_devices(DEVICES, params(fraction=0.01), np.random.default_rng(0))
    assert len(tiny) == 1  # at least one


def mec_config(*behaviours: dict[str, Any]) -> NodeConfig:
    return node_config(LEARNING, node_id="mec1", behaviours=list(behaviours))


def withhold(p: dict[str, Any], from_round: int, until: int | None = None) -> dict[str, Any]:
    return {"name": "withhold_blobs", "params": p, "from_round": from_round, "until_round": until}


def test_no_withholding_without_the_behaviour() -> None:
    assert BlobWithholding.of(mec_config(), DEVICES) is None


def test_bad_params_fail_when_the_mec_starts() -> None:
    with pytest.raises(ValueError, match="devices: 'dev9-9' is not a device of this MEC"):
        BlobWithholding.of(mec_config(withhold({"devices": ["dev9-9"]}, 3)), DEVICES)


def test_only_the_chosen_devices_blobs_of_the_covered_rounds_are_withheld() -> None:
    w = BlobWithholding.of(mec_config(withhold({"devices": ["dev1-0"]}, 2, 4)), DEVICES)
    assert w is not None
    noted = {
        (device, r): w.note(sha256(f"{device} {r}".encode()), device, r)
        for device in ("dev1-0", "dev1-1")
        for r in range(1, 6)
    }
    assert sorted(k for k, v in noted.items() if v) == [("dev1-0", 2), ("dev1-0", 3)]
    assert w.refusal("mec0", sha256(b"dev1-0 2")) == REFUSAL
    assert w.refusal("mec2", sha256(b"dev1-0 3")) == REFUSAL
    assert w.refusal("mec0", sha256(b"dev1-0 4")) is None  # recovered by then
    assert w.refusal("mec0", sha256(b"dev1-1 2")) is None


def test_the_behaviour_alters_no_weights() -> None:
    cfg = mec_config(withhold({}, 1))
    weights = {"w": np.ones(3, np.float32)}
    assert edge_output(cfg, 1, weights) is weights
    assert edge_fault(cfg, 1, [], weights) == ([], "withhold_blobs")


DATA = b"update weights " * 100
KEY = sha256(DATA)
OTHER = b"another update " * 100


@pytest.fixture
def sync(tmp_path: Path) -> ChainSync:
    s = ChainSync(Chain(open_store(tmp_path), _config()), MemoryBlobStore())
    s.blobs.put_verified(KEY, DATA)
    s.blobs.put_verified(sha256(OTHER), OTHER)
    return s


def test_without_a_serve_filter_every_blob_get_is_answered(sync: ChainSync) -> None:
    assert sync.handle("mec0", "blob.get", {"hash": KEY}, 0.0) == [
        Outgoing("mec0", "blob.data", {"hash": KEY, "data": DATA})
    ]


def test_a_refused_blob_get_is_not_answered_and_counted_by_reason(sync: ChainSync) -> None:
    asked: list[tuple[str, bytes]] = []

    def refuse_key(asker: str, key: bytes) -> str | None:
        asked.append((asker, key))
        return REFUSAL if key == KEY else None

    sync.serve_filter = refuse_key

    assert sync.handle("mec0", "blob.get", {"hash": KEY}, 0.0) == []
    assert sync.handle("mec2", "blob.get", {"hash": KEY}, 0.1) == []
    other = sync.handle("mec0", "blob.get", {"hash": sha256(OTHER)}, 0.2)

    assert other == [Outgoing("mec0", "blob.data", {"hash": sha256(OTHER), "data": OTHER})]
    assert asked == [("mec0", KEY), ("mec2", KEY), ("mec0", sha256(OTHER))]
    assert dict(sync.failures) == {REFUSAL: 2}


def test_a_malformed_blob_get_is_refused_before_the_filter(sync: ChainSync) -> None:
    sync.serve_filter = lambda asker, key: pytest.fail("the filter saw a malformed request")
    assert sync.handle("mec0", "blob.get", {"hash": b"short"}, 0.0) == []
    assert dict(sync.failures) == {"bad_request": 1}


TOPOLOGY = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=5), 1)


def fault(params: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    entry = {"at_round": 2, "action": "malicious", "nodes": nodes}
    return entry | {"behaviour": "withhold_blobs", "params": params}


def scenario(*faults: dict[str, Any]) -> Any:
    return parse_scenario({"seed": 1, "training": {"rounds": 5}, "faults": list(faults)})


def test_a_scenario_schedules_withholding_on_a_mec() -> None:
    events = resolve_faults(scenario(fault({"fraction": 0.4}, ["mec1"])), TOPOLOGY)
    assert behaviour_schedules(events) == {
        "mec1": [
            {
                "from_round": 2,
                "until_round": None,
                "name": "withhold_blobs",
                "params": {"fraction": 0.4},
            }
        ]
    }


@pytest.mark.parametrize(
    ("entry", "names"),
    [
        (fault({"fraction": 2}, ["mec1"]), r"faults[0].params: fraction must be in (0, 1]"),
        (fault({"devices": []}, ["mec1"]), "faults[0].params: devices must be a non-empty list"),
        (fault({}, ["dev0-0"]), "faults[0].behaviour: 'withhold_blobs' is invalid; allowed: "),
    ],
)
def test_a_bad_withholding_entry_is_named(entry: dict[str, Any], names: str) -> None:
    with pytest.raises(ScenarioError) as info:
        resolve_faults(scenario(entry), TOPOLOGY)
    assert names in str(info.value)
