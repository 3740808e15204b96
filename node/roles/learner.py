"""A node's model and data, rebuilt identically on every node from the run's seed.

With `LearningConfig.data_dir` set (a run's nodes), the data comes from the files the
orchestrator prepared (node.learning.prepared): a device holds only its part, the publisher
only the test set. Without it (unit tests, in-memory sims) the node loads the whole data set
and partitions it itself, with the same function and seed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from node.config import LearningConfig
from node.learning.datasets import load_dataset
from node.learning.partition import partition
from node.learning.prepared import DataSpec, read_prepared
from node.learning.weights import Weights

if TYPE_CHECKING:  # torch is imported by the Learner, not by whoever imports this module
    from node.learning.train import EvalResult, TrainResult

log = logging.getLogger(__name__)


class Learner:
    """Holds the data set (or one device's part of it) and the model it trains."""

    def __init__(self, cfg: LearningConfig, seed: int, part: tuple[int, int] | None = None) -> None:
        """`part` is (this device's index, number of devices); None keeps the whole set
        (or, from prepared data, only the test set)."""
        from node.learning.models import build_model
        from node.learning.train import configure_torch_threads

        configure_torch_threads(1)
        self.cfg = cfg
        self.seed = seed
        p = cfg.partition
        self.part_index = -1 if part is None else part[0]
        if cfg.data_dir is not None:
            spec = DataSpec(cfg.dataset.name, seed, p.scheme, p.alpha, p.shards_per_device, part)
            data = read_prepared(cfg.data_dir, spec)
            self.name, self.num_classes = data.name, data.num_classes
            self.input_shape = data.input_shape
            self.indices, self.train_x, self.train_y = data.indices, data.train_x, data.train_y
            self.population_labels = data.population_labels
            self.test_x, self.test_y = data.test_x, data.test_y
        else:
            ds = load_dataset(cfg.dataset.name, cfg.dataset.root, seed=seed)
            self.name, self.num_classes, self.input_shape = ds.name, ds.num_classes, ds.input_shape
            if part is None:
                self.indices = np.arange(len(ds.train_y))
            else:
                parts = partition(
                    ds.train_y,
                    part[1],
                    p.scheme,
                    seed,
                    alpha=p.alpha,
                    shards_per_part=p.shards_per_device,
                )
                self.indices = parts[part[0]]
            self.train_x = ds.train_x[self.indices]
            self.train_y = ds.train_y[self.indices]
            self.population_labels = ds.train_y
            self.test_x, self.test_y = ds.test_x, ds.test_y
        self.model = build_model(cfg.model, self.input_shape, self.num_classes, seed=seed)
        self._warm_up()
        log.info(
            "learner: %s/%s, %d training samples", cfg.dataset.name, cfg.model, len(self.indices)
        )

    def samples(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of training samples by their indices into the whole training set; each must
        be one of this node's (`self.indices`, sorted). IndexError otherwise."""
        idx = np.asarray(indices, dtype=np.int64)
        local = np.searchsorted(self.indices, idx)
        if local.size and (
            local.max() >= len(self.indices) or not np.array_equal(self.indices[local], idx)
        ):
            raise IndexError("samples: an index is not one of this node's training samples")
        return self.train_x[local], self.train_y[local]

    def _warm_up(self) -> None:
        """One throwaway SGD step on a copy, so that torch's lazy imports (optimizer, autograd)
        happen at start-up and not inside the first round's timing."""
        from node.learning.train import evaluate, train_local

        scratch = copy.deepcopy(self.model)
        x, y = (self.train_x, self.train_y) if len(self.train_y) else (self.test_x, self.test_y)
        n = min(len(y), 2)
        train_local(scratch, x[:n], y[:n], 1, n, 1e-3, seed=0)
        evaluate(scratch, x[:n], y[:n])

    def weights(self) -> Weights:
        """A copy of the current model weights."""
        from node.learning.weights import get_weights

        return get_weights(self.model)

    def load(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace the model weights; ValueError if keys, shapes or dtypes differ."""
        from node.learning.weights import set_weights

        set_weights(self.model, weights)

    def train(
        self, round_no: int, x: np.ndarray | None = None, y: np.ndarray | None = None
    ) -> TrainResult:
        """Local SGD for the configured epochs (seeded per round) on this node's data, or on
        (x, y) when given (what an attack made of it)."""
        from node.learning.train import train_local

        cfg = self.cfg
        return train_local(
            self.model,
            self.train_x if x is None else x,
            self.train_y if y is None else y,
            epochs=cfg.training.local_epochs,
            batch_size=cfg.training.batch_size,
            lr=cfg.training.learning_rate,
            seed=(self.seed * 1_000_003 + (self.part_index + 1) * 7919 + round_no) % 2**63,
            momentum=cfg.training.momentum,
        )

    def evaluate(self) -> EvalResult:
        """Accuracy and loss on the held-out test set."""
        from node.learning.train import evaluate

        return evaluate(self.model, self.test_x, self.test_y)

    def evaluate_on(self, x: np.ndarray, y: np.ndarray) -> EvalResult:
        """Accuracy and loss of the current weights on (x, y)."""
        from node.learning.train import evaluate

        return evaluate(self.model, x, y)


def check_update(reference: Mapping[str, np.ndarray], received: object) -> Weights:
    """`received` as weights if it has exactly the reference's keys, shapes and dtypes."""
    if not isinstance(received, dict) or set(received) != set(reference):
        raise ValueError("update does not have the model's parameter names")
    out: Weights = {}
    for name, ref in reference.items():
        arr = received[name]
        if not isinstance(arr, np.ndarray) or arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise ValueError(f"update tensor {name!r} has the wrong type, shape or dtype")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"update tensor {name!r} is not finite")
        out[name] = arr
    return out
