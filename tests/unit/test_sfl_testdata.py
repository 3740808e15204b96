"""Unit tests for node.schemes.sfl.testdata: group blobs, commitment, disclosure order,
fallback data and the deterministic correct-count."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest

from node.codec import encode_body
from node.core.encoding import sha256
from node.schemes.sfl import testdata
from node.schemes.sfl.testdata import (
    TestCommitment,
    commit,
    count_correct,
    disclosure_order,
    fallback_data,
    group_for_round,
    group_from_bytes,
    group_to_bytes,
    hash_order,
    make_groups,
)


def _data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y


# --- blobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_dtype", [np.float32, np.uint8, np.int64])
@pytest.mark.parametrize("y_dtype", [np.uint8, np.int64])
def test_group_round_trip(x_dtype: type, y_dtype: type) -> None:
    x, y = _data()
    x, y = (x * 100).astype(x_dtype), y.astype(y_dtype)
    blob = group_to_bytes(x, y)
    x2, y2 = group_from_bytes(blob)
    assert x2.dtype == x.dtype and y2.dtype == y.dtype
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    assert group_to_bytes(x2, y2) == blob


def test_group_big_endian_and_strided_input_is_canonical() -> None:
    x, y = _data()
    blob = group_to_bytes(x, y)
    assert group_to_bytes(x.astype(">f4"), y.astype(">i8")) == blob
    wide = np.concatenate([x, x], axis=3)[:, :, :, :8]
    assert group_to_bytes(wide, y) == blob


@pytest.mark.parametrize(
    ("x", "y", "word"),
    [
        (np.zeros((4, 2), np.float64), np.zeros(4, np.int64), "dtype"),
        (np.zeros((4, 2), np.float32), np.zeros(4, np.float32), "dtype"),
        (np.zeros((4, 2), np.float32), np.zeros(3, np.int64), "labels"),
        (np.zeros((4, 2), np.float32), np.zeros((4, 1), np.int64), "1-D"),
        (np.zeros((4, 2), object), np.zeros(4, np.int64), "dtype"),
        ([[0.0]], np.zeros(1, np.int64), "numpy"),
    ],
)
def test_group_to_bytes_refuses(x: object, y: np.ndarray, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        group_to_bytes(x, y)  # type: ignore[arg-type]


def _blob(**fields: object) -> bytes:
    x, y = _data(4)
    body: dict[str, object] = {"format": testdata.FORMAT, "version": 1, "x": x, "y": y}
    body.update(fields)
    return encode_body({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"garbage that is not msgpack",
        pickle.dumps((np.zeros(3), np.zeros(3))),
        pickle.dumps({"format": testdata.FORMAT, "version": 1}),
        msgpack.packb([1, 2, 3]),
        _blob(version=2),
        _blob(version=True),
        _blob(format="bcfl.weights"),
        _blob(extra=1),
        _blob(y=None),
        _blob(x="not an array"),
        _blob(x=np.zeros((4, 2), np.float64)),
        _blob(y=np.zeros(4, np.float32)),
        _blob(y=np.zeros(3, np.int64)),
        _blob()[:-1],
        _blob() + b"\x00",
    ],
)
def test_group_from_bytes_refuses_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        group_from_bytes(data)


def test_group_from_bytes_refuses_oversized() -> None:
    x, y = _data(100)
    blob = group_to_bytes(x, y)
    assert group_from_bytes(blob, max_bytes=len(blob))[1].shape == (100,)
    with pytest.raises(ValueError, match="exceeds"):
        group_from_bytes(blob, max_bytes=len(blob) - 1)


# --- groups and commitment ---------------------------------------------------------------------


def test_make_groups_are_disjoint_hash_ordered_draws_in_split_order() -> None:
    x, y = _data(50)
    blobs = make_groups(x, y, groups=4, group_size=10)
    assert len(blobs) == 4
    order = hash_order(x, y)
    seen: set[int] = set()
    for g, blob in enumerate(blobs):
        gx, gy = group_from_bytes(blob)
        idx = np.sort(order[g * 10 : (g + 1) * 10])
        assert np.array_equal(gx, x[idx]) and np.array_equal(gy, y[idx])
        seen.update(int(i) for i in idx)
    assert len(seen) == 40  # disjoint
    assert make_groups(x, y, groups=4, group_size=10) == blobs  # deterministic


def test_hash_ordered_groups_mix_an_easy_and_a_hard_half() -> None:
    """A test split whose first half differs from its second (MNIST's cleaner first 5,000
    test samples): consecutive slices would give groups of one half only; hash-ordered
    groups draw from both, about equally."""
    n = 2000
    rng = np.random.default_rng(3)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = np.concatenate([np.zeros(n // 2), np.ones(n // 2)]).astype(np.int64)  # halves differ
    for blob in make_groups(x, y, groups=10, group_size=100):
        share = float(group_from_bytes(blob)[1].mean())  # from the second half
        assert 0.35 < share < 0.65, share


@pytest.mark.parametrize(("groups", "size"), [(5, 9), (1, 41), (0, 5), (3, 0)])
def test_make_groups_refuses_too_few_samples(groups: int, size: int) -> None:
    x, y = _data(40)
    if groups * size <= 40:
        with pytest.raises(ValueError, match=">= 1"):
            make_groups(x, y, groups, size)
    else:
        with pytest.raises(ValueError, match="need"):
            make_groups(x, y, groups, size)


def test_commitment_is_stable_and_binds_each_group() -> None:
    x, y = _data(40)
    blobs = make_groups(x, y, 4, 10)
    c = commit(blobs, run_seed=7)
    assert isinstance(c, TestCommitment)
    assert c == commit(make_groups(x, y, 4, 10), run_seed=7)
    assert c.groups == tuple(sha256(b) for b in blobs)
    assert len(set(c.groups)) == 4 and c.group_size == 10
    assert len(c.seed) == 32 and c.seed_commit == sha256(c.seed)
    assert commit(blobs, run_seed=8).seed != c.seed
    assert commit(blobs, run_seed=8).groups == c.groups
    # a swapped order of groups, or one altered label, changes the committed hashes
    assert commit(blobs[::-1], run_seed=7).groups != c.groups
    y2 = y.copy()
    y2[13] = (y2[13] + 1) % 10
    altered = commit(make_groups(x, y2, 4, 10), run_seed=7)
    changed = {g for g, (a, b) in enumerate(zip(altered.groups, c.groups, strict=True)) if a != b}

    def group_of_13(order: np.ndarray) -> set[int]:  # the group sample 13 is in, if any
        at = int(np.flatnonzero(order == 13)[0])
        return {at // 10} if at < 40 else set()

    holding = group_of_13(hash_order(x, y)) | group_of_13(hash_order(x, y2))
    # the groups from the first that holds sample 13 (before or after) on change: the
    # sample moved in the hash order and the groups after it shifted; those before did not
    assert changed and min(changed) == min(holding)


def test_commit_refuses_mixed_sizes_or_nothing() -> None:
    x, y = _data(40)
    with pytest.raises(ValueError, match="different sizes"):
        commit([group_to_bytes(x[:10], y[:10]), group_to_bytes(x[:5], y[:5])], 1)
    with pytest.raises(ValueError, match="no test groups"):
        commit([], 1)


# --- disclosure order --------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [0, 1, 2, 7, 256])
def test_disclosure_order_is_a_deterministic_permutation(groups: int) -> None:
    seed = sha256(b"seed")
    order = disclosure_order(seed, groups)
    assert sorted(order) == list(range(groups))
    assert order == disclosure_order(seed, groups)


def test_disclosure_order_definition_and_seed_dependence() -> None:
    seed = bytes(range(32))
    keys = {i: sha256(seed + i.to_bytes(4, "big")) for i in range(16)}
    assert disclosure_order(seed, 16) == sorted(range(16), key=keys.__getitem__)
    assert disclosure_order(seed, 16) != disclosure_order(sha256(seed), 16)


def test_group_for_round_cycles_through_the_order() -> None:
    x, y = _data(40)
    c = commit(make_groups(x, y, 4, 10), run_seed=3)
    order = disclosure_order(c.seed, 4)
    assert [group_for_round(c, r) for r in range(1, 10)] == (order * 3)[:9]
    with pytest.raises(ValueError, match="round"):
        group_for_round(c, 0)


# --- fallback data -----------------------------------------------------------------------------


def test_fallback_data_is_seeded_sorted_sample() -> None:
    x, y = _data(200)
    fx, fy = fallback_data(x, y, 30, run_seed=5)
    assert fx.shape == (30, 1, 8, 8) and fy.shape == (30,)
    again = fallback_data(x, y, 30, run_seed=5)
    assert np.array_equal(fx, again[0]) and np.array_equal(fy, again[1])
    idx = np.sort(np.random.default_rng([5, 0x5F1]).choice(200, size=30, replace=False))
    assert np.array_equal(fx, x[idx]) and np.array_equal(fy, y[idx])
    assert not np.array_equal(fallback_data(x, y, 30, run_seed=6)[1], fy)
    with pytest.raises(ValueError, match="group_size"):
        fallback_data(x, y, 201, run_seed=5)


# --- count_correct -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "epochs", "least"), [("mlp", 3, 0.85), ("alexnet", 1, 0.0)])
def test_count_correct_matches_evaluate_and_is_instance_independent(
    name: str, epochs: int, least: float
) -> None:
    import torch

    from node.learning.datasets import load_dataset
    from node.learning.models import build_model
    from node.learning.train import evaluate, train_local
    from node.learning.weights import get_weights, set_weights

    ds = load_dataset("digits", seed=0)
    trained = build_model(name, ds.input_shape, ds.num_classes, seed=1)
    torch.manual_seed(0)  # alexnet's dropout draws from torch's global generator
    train_local(trained, ds.train_x, ds.train_y, epochs, 16, 0.05, seed=2, momentum=0.5)
    weights = get_weights(trained)
    counts = []
    for seed in (10, 11):  # two separate instances loaded with the same weights
        model = build_model(name, ds.input_shape, ds.num_classes, seed=seed)
        set_weights(model, weights)
        model.train()  # count_correct switches to eval mode itself (no dropout)
        counts.append(count_correct(model, ds.test_x, ds.test_y))
    x_ro, y_ro = group_from_bytes(group_to_bytes(ds.test_x, ds.test_y))  # read-only arrays
    counts.append(count_correct(model, x_ro, y_ro, batch=7))
    assert counts[0] == counts[1] == counts[2]
    n = len(ds.test_y)
    reference = evaluate(trained, ds.test_x, ds.test_y, batch_size=500)
    assert counts[0] == round(reference.accuracy * n)
    assert counts[0] >= least * n


def test_count_correct_restores_threads_and_validates() -> None:
    import torch

    from node.learning.models import build_model

    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x, y = _data(12)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert 0 <= count_correct(model, x, y) <= 12
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert count_correct(model, x[:0], y[:0]) == 0
    with pytest.raises(ValueError, match="batch"):
        count_correct(model, x, y, batch=0)
    with pytest.raises(ValueError, match="samples"):
        count_correct(model, x, y[:5])
