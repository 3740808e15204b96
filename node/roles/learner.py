"""A node's model and data, rebuilt identically on every node from the run's seed."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import numpy as np

from node.config import LearningConfig
from node.learning.datasets import Dataset, load_dataset
from node.learning.models import build_model
from node.learning.partition import partition
from node.learning.train import EvalResult, TrainResult, evaluate, train_local
from node.learning.weights import Weights, get_weights, set_weights

log = logging.getLogger(__name__)


class Learner:
    """Holds the data set (or one device's part of it) and the model it trains."""

    def __init__(self, cfg: LearningConfig, seed: int, part: tuple[int, int] | None = None) -> None:
        """`part` is (this device's index, number of devices); None keeps the whole set."""
        self.cfg = cfg
        self.seed = seed
        self.dataset: Dataset = load_dataset(cfg.dataset, cfg.dataset_root, seed=seed)
        self.model = build_model(
            cfg.model, self.dataset.input_shape, self.dataset.num_classes, seed=seed
        )
        self.part_index = -1
        if part is None:
            self.indices = np.arange(len(self.dataset.train_y))
        else:
            self.part_index, n_parts = part
            parts = partition(
                self.dataset.train_y,
                n_parts,
                cfg.partition,
                seed,
                alpha=cfg.alpha,
                shards_per_part=cfg.shards_per_device,
            )
            self.indices = parts[self.part_index]
        self.train_x = self.dataset.train_x[self.indices]
        self.train_y = self.dataset.train_y[self.indices]
        self._warm_up()
        log.info("learner: %s/%s, %d training samples", cfg.dataset, cfg.model, len(self.indices))

    def _warm_up(self) -> None:
        """One throwaway SGD step on a copy, so that torch's lazy imports (optimizer, autograd)
        happen at start-up and not inside the first round's timing."""
        scratch = copy.deepcopy(self.model)
        n = min(len(self.train_y), 2)
        train_local(scratch, self.train_x[:n], self.train_y[:n], 1, n, 1e-3, seed=0)
        evaluate(scratch, self.train_x[:n], self.train_y[:n])

    def weights(self) -> Weights:
        """A copy of the current model weights."""
        return get_weights(self.model)

    def load(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace the model weights; ValueError if keys, shapes or dtypes differ."""
        set_weights(self.model, weights)

    def train(
        self, round_no: int, x: np.ndarray | None = None, y: np.ndarray | None = None
    ) -> TrainResult:
        """Local SGD for the configured epochs (seeded per round) on this node's data, or on
        (x, y) when given (what an attack made of it)."""
        cfg = self.cfg
        return train_local(
            self.model,
            self.train_x if x is None else x,
            self.train_y if y is None else y,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.learning_rate,
            seed=(self.seed * 1_000_003 + (self.part_index + 1) * 7919 + round_no) % 2**63,
            momentum=cfg.momentum,
        )

    def evaluate(self) -> EvalResult:
        """Accuracy and loss on the held-out test set."""
        return evaluate(self.model, self.dataset.test_x, self.dataset.test_y)

    def evaluate_on(self, x: np.ndarray, y: np.ndarray) -> EvalResult:
        """Accuracy and loss of the current weights on (x, y)."""
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
