"""Free riding: a device submits without contributing training.

`global`: it returns the global model unchanged (a zero update; non-floating tensors too).
`stale`: it replays its previous update on the new global model, w' = g + delta_prev, where
delta_prev (float tensors only) is what it submitted last round minus that round's global model;
with no previous update (first round) it falls back to `global`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import apply_update, check_like, choice, is_float
from node.learning.weights import Weights

FREE_RIDER_MODES: tuple[str, ...] = ("global", "stale")


@dataclass(frozen=True)
class FreeRiderParams:
    """Mode global|stale."""

    mode: str = "global"

    def __post_init__(self) -> None:
        """Validate the mode."""
        choice("mode", self.mode, FREE_RIDER_MODES)


def free_rider(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    params: FreeRiderParams,
    rng: np.random.Generator,
    previous_update: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Update attack: a copy of g, or g + previous_update on floating tensors (see module doc)."""
    del rng
    check_like(weights, global_weights, "global_weights")
    out = {
        k: np.array(global_weights[k], dtype=np.asarray(w).dtype, order="C", copy=True)
        for k, w in weights.items()
    }
    if params.mode == "global" or previous_update is None:
        return out
    floats = {k: w for k, w in weights.items() if is_float(w)}
    check_like(floats, previous_update, "previous_update")
    stale = {k: np.asarray(v, np.float64) for k, v in previous_update.items()}
    replayed = apply_update(floats, global_weights, stale)
    out.update(replayed)
    return out
