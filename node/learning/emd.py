"""Earth Mover's Distance between label distributions (SFL's data-quality metric).

Definition used (SFL, Kang et al. 2020 [SFL ref. 7], after Zhao et al. 2018, "Federated Learning
with Non-IID Data"): for class distributions p (a device's) and q (the population's),
``EMD(p, q) = sum_i |p_i - q_i|``, i.e. the L1 distance, in [0, 2]. This is the Wasserstein-1
distance under the 0/1 ground metric (= total variation) multiplied by 2; the factor 2 is what
makes SFL's values such as EMD = 1.5 possible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_EMD = 2.0


def label_distribution(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class frequencies of integer labels in [0, num_classes) as a float64 vector summing to 1."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels is empty; its label distribution is undefined")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if int(arr.min()) < 0 or int(arr.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), got [{arr.min()}, {arr.max()}]"
        )
    counts = np.bincount(arr, minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def emd(p: np.ndarray, q: np.ndarray) -> float:
    """SFL's EMD: the L1 distance sum_i |p_i - q_i| between two class distributions (in [0, 2])."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"p and q must be 1-D of equal length, got {a.shape} and {b.shape}")
    return float(np.abs(a - b).sum())


def device_emds(
    partitions: Sequence[np.ndarray], labels: np.ndarray, num_classes: int
) -> list[float]:
    """EMD of each device's labels (labels[indices]) from the distribution of all `labels`."""
    population = label_distribution(labels, num_classes)
    arr = np.asarray(labels)
    return [
        emd(label_distribution(arr[np.asarray(part, dtype=np.int64)], num_classes), population)
        for part in partitions
    ]
