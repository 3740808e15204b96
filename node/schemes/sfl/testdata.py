"""SFL's committed test data (paper 004, §III-A): data groups, their commitment, the
disclosure order, the fallback data and a deterministic correct-count.

How it works
------------
The publisher "hashes the testing dataset into data groups" (§III-A Step 1): it orders its
test split by each sample's SHA-256 (of its pixels' bytes and its label; `hash_order`) and
cuts the first ``groups * group_size`` of that order into ``groups`` data groups, each kept
in the test split's order (how to hash into groups is our reading: the paper does not say).
Every group is thus a pseudo-random draw of the test split. Consecutive slices, which we
used before, are not: MNIST's first 5,000 test samples are cleaner and easier than its last
5,000 (LeCun's note on the data set), and a run's per-round contract accuracy swung by 3-6
points with the half its group came from (0 of 100 updates qualified in one round, 94 in
another). Each group is encoded as ONE blob (`group_to_bytes`): the codec's array map
(msgpack, arrays as raw little-endian bytes with dtype and shape, as `node.learning.weights`
stores weights; never pickle) holding a format tag, a version, ``x`` and ``y``. The SHA-256 of each
blob is the committed group hash. A 32-byte seed derived from the run seed (our choice: the
paper draws it at random; here every run is reproducible) fixes the order in which the
groups are disclosed (`disclosure_order`, imported from the contract `node.contracts.sfl`,
which checks it) and its SHA-256 is the seed commitment (`commit`). Round r uses group
``disclosure_order(seed, G)[(r - 1) % G]`` (`group_for_round`).

If the aggregator never discloses, evaluators use the fallback data (`fallback_data`): a
seeded sample of ``group_size`` training samples every evaluator rebuilds from the run seed
(our choice: the paper says the aggregator uses "its training dataset").

`count_correct` counts a model's correct predictions with one torch thread, in eval mode,
without gradients and in fixed batches, so every evaluator obtains the same integer.
torch is imported inside the functions that need it: importing this module does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from node.contracts.sfl import disclosure_order  # the permutation the contract checks
from node.core.encoding import canonical, sha256

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "TestCommitment",
    "commit",
    "count_correct",
    "disclosure_order",
    "fallback_data",
    "group_for_round",
    "group_from_bytes",
    "group_to_bytes",
    "hash_order",
    "make_groups",
]

FORMAT = "bcfl.sfl.test-group"
VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SEED_DOMAIN = "sfl-test-seed"
FALLBACK_DOMAIN = 0x5F1
_X_DTYPES = (np.dtype("<f4"), np.dtype("|u1"), np.dtype("<i8"))
_Y_DTYPES = (np.dtype("|u1"), np.dtype("<i8"))  # labels are integers
_KEYS = frozenset({"format", "version", "x", "y"})


def _canonical_array(name: str, array: np.ndarray, allowed: tuple[np.dtype, ...]) -> np.ndarray:
    """`array` as a C-contiguous little-endian array of an allowed dtype; ValueError if not."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} is {type(array).__name__}, not a numpy array")
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if little not in allowed:
        raise ValueError(f"{name} has dtype {array.dtype}; allowed: {[str(d) for d in allowed]}")
    return np.ascontiguousarray(array, dtype=little)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    """Shapes a group must have: y one label per sample, x one row (or more dims) each."""
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x has shape {x.shape} but y has {y.shape[0]} labels")


def group_to_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """One data group as one blob (deterministic bytes; x float32/uint8/int64, y uint8/int64).

    ValueError on another dtype or mismatched shapes."""
    from node.codec import encode_body

    xa = _canonical_array("x", x, _X_DTYPES)
    ya = _canonical_array("y", y, _Y_DTYPES)
    _check_pair(xa, ya)
    return encode_body({"format": FORMAT, "version": VERSION, "x": xa, "y": ya})


def group_from_bytes(
    data: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `group_to_bytes` (read-only arrays); ValueError on anything malformed or
    longer than `max_bytes`. Nothing is unpickled: arrays are raw bytes of allowed dtypes."""
    from node.codec import decode_body

    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"group blob is {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise ValueError(f"group blob of {len(data)} bytes exceeds {max_bytes}")
    try:
        decoded = decode_body(bytes(data), max_bytes)
    except Exception as exc:  # msgpack raises its own types too; all mean "malformed"
        raise ValueError(f"group blob does not decode: {type(exc).__name__}") from None
    if set(decoded) != _KEYS:
        raise ValueError(f"group blob has keys {sorted(decoded)}, expected {sorted(_KEYS)}")
    if decoded["format"] != FORMAT:
        raise ValueError(f"group blob format is {decoded['format']!r}, not {FORMAT!r}")
    version = decoded["version"]
    if type(version) is not int or version != VERSION:
        raise ValueError(f"group blob version {version!r} is not {VERSION}")
    x, y = decoded["x"], decoded["y"]
    if not isinstance(x, np.ndarray) or x.dtype not in _X_DTYPES:
        raise ValueError("group blob's x is not an array of an allowed dtype")
    if not isinstance(y, np.ndarray) or y.dtype not in _Y_DTYPES:
        raise ValueError("group blob's y is not an integer array of an allowed dtype")
    _check_pair(x, y)
    return x, y


@dataclass(frozen=True)
class TestCommitment:
    """What the publisher commits at init: the group hashes, the group size, the seed that
    fixes the disclosure order (kept secret until disclosed) and its hash."""

    __test__ = False  # not a pytest test class

    groups: tuple[bytes, ...]
    group_size: int
    seed: bytes
    seed_commit: bytes


def hash_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The sample indices ordered by SHA-256(sample's x bytes || its label as 8 bytes,
    little-endian), ties (identical samples) by index."""
    xs = np.ascontiguousarray(x)
    digests = [
        sha256(xs[i].tobytes() + int(y[i]).to_bytes(8, "little", signed=True))
        for i in range(len(y))
    ]
    return np.array(sorted(range(len(y)), key=lambda i: (digests[i], i)), dtype=np.int64)


def make_groups(
    test_x: np.ndarray, test_y: np.ndarray, groups: int, group_size: int
) -> list[bytes]:
    """The blobs of `groups` groups of `group_size` test samples: the first ``groups *
    group_size`` samples in `hash_order` cut into consecutive runs, each run's samples in
    the test split's order; ValueError if there are fewer samples or a count is < 1."""
    if groups < 1 or group_size < 1:
        raise ValueError(f"groups ({groups}) and group_size ({group_size}) must be >= 1")
    if len(test_x) != len(test_y):
        raise ValueError(f"test_x has {len(test_x)} samples but test_y has {len(test_y)}")
    need = groups * group_size
    if len(test_y) < need:
        raise ValueError(
            f"{groups} groups of {group_size} need {need} test samples, have {len(test_y)}"
        )
    order = hash_order(test_x, test_y)
    parts = [np.sort(order[g * group_size : (g + 1) * group_size]) for g in range(groups)]
    return [group_to_bytes(test_x[part], test_y[part]) for part in parts]


def commit(blobs: list[bytes], run_seed: int) -> TestCommitment:
    """The commitment to `blobs` (each blob's SHA-256) with the seed drawn from `run_seed`:
    seed = SHA-256(canonical(["sfl-test-seed", run_seed])) (our choice), seed_commit =
    SHA-256(seed). The group size is read from the first blob."""
    if not blobs:
        raise ValueError("no test groups to commit")
    sizes = {len(group_from_bytes(blob)[1]) for blob in blobs}
    if len(sizes) != 1:
        raise ValueError(f"test groups have different sizes: {sorted(sizes)}")
    seed = sha256(canonical([SEED_DOMAIN, int(run_seed)]))
    return TestCommitment(
        groups=tuple(sha256(blob) for blob in blobs),
        group_size=sizes.pop(),
        seed=seed,
        seed_commit=sha256(seed),
    )


def group_for_round(commitment: TestCommitment, round: int) -> int:
    """The index of the group disclosed in `round` (1-based; the order repeats every G rounds)."""
    if round < 1:
        raise ValueError(f"round must be >= 1, got {round}")
    count = len(commitment.groups)
    return disclosure_order(commitment.seed, count)[(round - 1) % count]


def fallback_data(
    train_x: np.ndarray, train_y: np.ndarray, group_size: int, run_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fallback ("train") data: `group_size` training samples drawn without replacement
    by ``numpy.random.default_rng([run_seed, 0x5F1])``, in increasing index order (copies)."""
    if len(train_x) != len(train_y):
        raise ValueError(f"train_x has {len(train_x)} samples but train_y has {len(train_y)}")
    if group_size < 1 or group_size > len(train_y):
        raise ValueError(f"group_size {group_size} not in 1..{len(train_y)} (training samples)")
    rng = np.random.default_rng([int(run_seed), FALLBACK_DOMAIN])
    idx = np.sort(rng.choice(len(train_y), size=group_size, replace=False))
    return np.array(train_x[idx]), np.array(train_y[idx])


def count_correct(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 500) -> int:
    """How many samples `model` classifies correctly (argmax of its output == y).

    Deterministic: torch's intra-op threads pinned to 1 for the call (restored after; the
    setting is process-wide), eval mode, no gradients, batches of `batch` in index order."""
    import torch

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.eval()
        correct = 0
        with torch.no_grad():
            for begin in range(0, len(y), batch):
                xb = torch.from_numpy(np.array(x[begin : begin + batch], dtype=np.float32))
                yb = torch.from_numpy(np.array(y[begin : begin + batch], dtype=np.int64))
                correct += int((model(xb).argmax(dim=1) == yb).sum())
        return correct
    finally:
        torch.set_num_threads(threads)
