"""Unit tests for node.schemes.sfl.evaluation (what an SFL evaluator computes: the FedAvg of
the qualified, every update's correct count, the aggregate's hash), the sfl plan's refusal
of D2D links and its replicas, and the ``sfl.evaluate`` message's phase check."""

from __future__ import annotations

import itertools
from typing import Any, cast

import numpy as np
import pytest
import torch

from node.core.encoding import sha256
from node.learning.aggregate import fedavg
from node.learning.models import build_model
from node.learning.train import configure_torch_threads
from node.learning.weights import Weights, get_weights, set_weights, weights_to_bytes
from node.messages import MessageError, from_payload, to_payload
from node.schemes import PlanInputs, make_scheme
from node.schemes.sfl.evaluation import (
    LOCAL,
    MODEL,
    EvalData,
    RoundInputs,
    aggregate_blob,
    compute,
)
from node.schemes.sfl.messages import EvaluateRequest
from node.schemes.sfl.testdata import count_correct, group_to_bytes
from topologies import HierarchyParams, LinkKind, build_hierarchy

SHAPE, CLASSES = (1, 8, 8), 10


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


def _weights(seed: int) -> Weights:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
    }


def _model(seed: int) -> torch.nn.Module:
    return build_model("mlp", SHAPE, CLASSES, seed=seed)


# --- aggregate_blob ----------------------------------------------------------------------------


def test_aggregate_blob_is_the_sample_weighted_fedavg_in_device_order() -> None:
    reference = _weights(0)
    updates = [("dev2", _weights(3), 7), ("dev0", _weights(1), 30), ("dev1", _weights(2), 1)]
    chosen = [(d, weights_to_bytes(w), n) for d, w, n in updates]
    expected = weights_to_bytes(fedavg([(w, float(n)) for _, w, n in sorted(updates)]))
    for order in itertools.permutations(chosen):
        assert aggregate_blob(reference, list(order), b"current") == expected
    # sample-weighted (float64, cast back): not the plain mean
    avg = sum(w["w"].astype(np.float64) * n for _, w, n in updates) / 38
    assert np.allclose(fedavg([(w, float(n)) for _, w, n in updates])["w"], avg, atol=1e-6)
    assert not np.allclose(avg, sum(w["w"] for _, w, _ in updates) / 3, atol=1e-3)


def test_aggregate_blob_leaves_out_blobs_that_do_not_decode() -> None:
    reference = _weights(0)
    good = [("dev0", weights_to_bytes(_weights(1)), 5), ("dev3", weights_to_bytes(_weights(2)), 9)]
    wrong_shape = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(4, np.float32)}
    wrong_dtype = {k: v.astype(np.float64) for k, v in _weights(4).items()}
    not_finite = {"w": np.full((3, 4), np.nan, np.float32), "b": np.zeros(4, np.float32)}
    bad: list[tuple[str, bytes | None, int]] = [
        ("dev1", b"garbage", 100),
        ("dev2", None, 100),  # a blob nobody could fetch
        ("dev4", weights_to_bytes(wrong_shape), 100),
        ("dev5", weights_to_bytes(wrong_dtype), 100),
        ("dev6", weights_to_bytes(not_finite), 100),
    ]
    chosen: list[tuple[str, bytes | None, int]] = [*good, *bad]
    assert aggregate_blob(reference, chosen, b"current") == aggregate_blob(
        reference, list(good), b"current"
    )


def test_aggregate_blob_returns_current_when_nothing_qualifies() -> None:
    reference = _weights(0)
    current = weights_to_bytes(_weights(9))
    assert aggregate_blob(reference, [], current) == current
    assert aggregate_blob(reference, [("dev0", b"garbage", 3), ("dev1", None, 1)], current) == (
        current
    )


# --- compute -----------------------------------------------------------------------------------


def _round(updates: dict[str, bytes], qualified: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """RoundInputs over one disclosed group the model of seed 1 classifies perfectly, and the
    blobs: the group, `updates` (device -> blob) and the current global (seed 5's model)."""
    rng = np.random.default_rng(7)
    x = rng.random((60, *SHAPE), dtype=np.float32)
    teacher = _model(1)
    teacher.eval()
    with torch.no_grad():
        y = teacher(torch.from_numpy(x)).argmax(dim=1).numpy().astype(np.int64)
    group = group_to_bytes(x, y)
    current = weights_to_bytes(get_weights(_model(5)))
    blobs = {sha256(group): group, sha256(current): current}
    entries: list[tuple[str, bytes, int]] = []
    for device in sorted(updates):
        blobs[sha256(updates[device])] = updates[device]
        entries.append((device, sha256(updates[device]), 10 + len(entries)))
    inputs = RoundInputs(
        round=2,
        data="test",
        group_blob=sha256(group),
        updates=tuple(entries),
        qualified=qualified,
        global_blob=sha256(current),
    )
    return inputs, blobs, (x, y)


def _data() -> EvalData:
    # the learner is read only for the fallback (no disclosure): not here
    return EvalData(cast(Any, None), group_size=60, seed=3)


def test_compute_local_is_deterministic_and_counts_garbage_as_zero() -> None:
    teacher = weights_to_bytes(get_weights(_model(1)))
    other = weights_to_bytes(get_weights(_model(2)))
    inputs, blobs, (x, y) = _round({"dev0": teacher, "dev1": other, "dev2": b"garbage"})
    reference = get_weights(_model(0))

    first = compute(LOCAL, inputs, blobs, _data(), _model(11), reference)
    second = compute(LOCAL, inputs, blobs, _data(), _model(12), reference)

    assert first == second
    assert first == {
        "round": 2,
        "data": "test",
        "total": 60,
        "results": [["dev0", 60], ["dev1", first["results"][1][1]], ["dev2", 0]],
    }
    probe = _model(2)
    assert first["results"][1][1] == count_correct(probe, x, y) < 60


def test_compute_local_counts_an_update_whose_blob_is_missing_as_zero() -> None:
    teacher = weights_to_bytes(get_weights(_model(1)))
    inputs, blobs, _ = _round({"dev0": teacher, "dev1": b"lost"})
    del blobs[sha256(b"lost")]
    out = compute(LOCAL, inputs, blobs, _data(), _model(11), get_weights(_model(0)))
    assert out["results"] == [["dev0", 60], ["dev1", 0]]


def test_compute_model_hash_is_the_sha256_of_aggregate_blob() -> None:
    updates = {
        "dev0": weights_to_bytes(get_weights(_model(1))),
        "dev1": weights_to_bytes(get_weights(_model(2))),
        "dev2": weights_to_bytes(get_weights(_model(3))),
    }
    inputs, blobs, (x, y) = _round(updates, qualified=("dev0", "dev2"))
    reference = get_weights(_model(0))

    out = compute(MODEL, inputs, blobs, _data(), _model(11), reference)

    selected = [(d, blobs[b], n) for d, b, n in inputs.updates if d in ("dev0", "dev2")]
    expected = aggregate_blob(reference, selected, blobs[inputs.global_blob])
    assert out["global_blob"] == sha256(expected) and out["_encoded"] == expected
    assert out["round"] == 2 and out["total"] == 60
    probe = _model(4)
    set_weights(probe, fedavg([(get_weights(_model(1)), 10.0), (get_weights(_model(3)), 12.0)]))
    assert out["correct"] == count_correct(probe, x, y)


def test_compute_model_with_nothing_qualified_is_the_current_global() -> None:
    inputs, blobs, _ = _round({"dev0": weights_to_bytes(get_weights(_model(1)))})
    out = compute(MODEL, inputs, blobs, _data(), _model(11), get_weights(_model(0)))
    assert out["global_blob"] == inputs.global_blob


def test_compute_model_without_the_global_blob_fails() -> None:
    inputs, blobs, _ = _round({"dev0": weights_to_bytes(get_weights(_model(1)))})
    del blobs[inputs.global_blob]
    with pytest.raises(ValueError, match="global model's blob is unavailable"):
        compute(MODEL, inputs, blobs, _data(), _model(11), get_weights(_model(0)))


# --- RoundInputs.blobs -------------------------------------------------------------------------


def _key(n: int) -> bytes:
    return bytes([n]) * 32


def test_round_inputs_blobs_lists_what_each_phase_reads() -> None:
    group, current = _key(1), _key(9)
    updates = (("dev0", _key(2), 5), ("dev1", _key(3), 5), ("dev2", _key(2), 5))
    inputs = RoundInputs(3, "test", group, updates, ("dev1", "dev2"), current)
    # every update once (dev0 and dev2 sent the same blob), after the group
    assert inputs.blobs(LOCAL) == [group, _key(2), _key(3)]
    # the qualified updates and the current global
    assert inputs.blobs(MODEL) == [group, _key(3), _key(2), current]
    fallback = RoundInputs(3, "train", None, updates, (), current)
    assert fallback.blobs(LOCAL) == [_key(2), _key(3)]
    assert fallback.blobs(MODEL) == [current]


# --- the plan and the message ------------------------------------------------------------------


def _keys(topology: Any) -> dict[str, bytes]:
    return {n.id: bytes([i + 1]) * 32 for i, n in enumerate(topology.daemons())}


def test_the_sfl_plan_refuses_d2d_links() -> None:
    topology = build_hierarchy(HierarchyParams(mecs_per_bs=2, devices_per_mec=2), 1)
    assert any(link.kind == LinkKind.D2D for link in topology.links)
    scheme = make_scheme("sfl", {})
    with pytest.raises(ValueError, match=r"^topology\.d2d: "):
        scheme.plan(topology, _keys(topology), PlanInputs("r", "t", 1, 0, "pbft"))


def test_the_sfl_plan_keeps_pbft_mecs_full_replicas() -> None:
    topology = build_hierarchy(HierarchyParams(mecs_per_bs=4, devices_per_mec=1, d2d=None), 1)
    scheme = make_scheme("sfl", {})
    light = PlanInputs("r", "t", 1, 0, "pbft", device_replica="light")
    plan = scheme.plan(topology, _keys(topology), light)
    for node in ("mec0", "mec1", "mec2", "mec3"):
        assert plan.nodes[node].chains and plan.nodes[node].light_chains == ()
    assert plan.nodes["dev0-0"].light_chains == plan.nodes["dev0-0"].chains
    single = scheme.plan(topology, _keys(topology), PlanInputs("r", "t", 1, 0, "single", "light"))
    assert single.nodes["mec0"].light_chains == single.nodes["mec0"].chains


def test_evaluate_request_refuses_an_unknown_phase() -> None:
    payload = to_payload(EvaluateRequest(round=1, phase=LOCAL, height=4))
    assert from_payload("sfl.evaluate", payload) == EvaluateRequest(1, LOCAL, 4)
    assert from_payload("sfl.evaluate", {**payload, "phase": MODEL}).phase == MODEL
    with pytest.raises(MessageError) as caught:
        from_payload("sfl.evaluate", {**payload, "phase": "aggregate"})
    assert caught.value.reason == "bad_payload"
    assert "phase" in str(caught.value)
