"""Label flipping (data poisoning): a fraction lambda of a device's labels is changed.

`random`: round(lambda * n) of the device's n samples, chosen uniformly without replacement,
each get a label drawn uniformly from the *other* num_classes - 1 classes.
`reverse`: round(lambda * n) samples, chosen the same way, get label num_classes - 1 - y
(the consistent "l -> L - l - 1" flip of Fang et al., USENIX Security 2020; every attacker
pushes the same wrong mapping, so it hurts plain averaging more than random flips do; a
class that maps to itself, the middle one for odd num_classes, is not counted as chosen).
`targeted`: round(lambda * n_a) of the device's n_a samples labelled `source` are relabelled
`target`. Rounding is half-up. The features are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import choice, integer, number, round_half_up

FLIP_MODES: tuple[str, ...] = ("random", "reverse", "targeted")


@dataclass(frozen=True)
class LabelFlipParams:
    """Strength lambda in [0, 1]; mode random|reverse|targeted; source/target for targeted."""

    strength: float
    mode: str = "random"
    source: int | None = None
    target: int | None = None

    def __post_init__(self) -> None:
        """Validate every field, naming the offending parameter."""
        strength = number("strength", self.strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        choice("mode", self.mode, FLIP_MODES)
        if self.mode == "targeted":
            if self.source is None or self.target is None:
                raise ValueError("targeted label_flip needs both source and target")
            source, target = integer("source", self.source), integer("target", self.target)
            if source < 0 or target < 0:
                raise ValueError(f"source and target must be >= 0, got {source} and {target}")
            if source == target:
                raise ValueError(f"source and target must differ, both are {source}")
        elif self.source is not None or self.target is not None:
            raise ValueError("source/target are only meaningful with mode='targeted'")


def flip_labels(
    labels: np.ndarray, params: LabelFlipParams, rng: np.random.Generator, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (new labels, sorted indices that were changed); the input array is not modified."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 to flip labels, got {num_classes}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes})")
    out = y.copy()
    if params.mode == "random":
        k = round_half_up(params.strength * y.size)
        chosen = np.sort(rng.choice(y.size, size=k, replace=False)).astype(np.int64)
        shift = rng.integers(1, num_classes, size=k)
        out[chosen] = (y[chosen] + shift) % num_classes
        return out, chosen
    if params.mode == "reverse":
        k = round_half_up(params.strength * y.size)
        chosen = np.sort(rng.choice(y.size, size=k, replace=False)).astype(np.int64)
        out[chosen] = num_classes - 1 - y[chosen]
        return out, chosen[out[chosen] != y[chosen]]
    assert params.source is not None and params.target is not None
    if params.source >= num_classes or params.target >= num_classes:
        raise ValueError(f"source and target must be < num_classes={num_classes}")
    candidates = np.flatnonzero(y == params.source)
    k = round_half_up(params.strength * candidates.size)
    chosen = np.sort(rng.choice(candidates, size=k, replace=False)).astype(np.int64)
    out[chosen] = params.target
    return out, chosen


def label_flip(
    x: np.ndarray,
    y: np.ndarray,
    params: LabelFlipParams,
    rng: np.random.Generator,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Data attack: (x unchanged, the same object; y with a fraction lambda of labels flipped)."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    new_y, _ = flip_labels(y, params, rng, num_classes)
    return x, new_y
