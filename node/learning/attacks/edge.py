"""Edge-server (MEC) faults: a malfunctioning aggregate, or tampering with forwarded updates.

Only floating-point tensors are altered; integer buffers (e.g. BatchNorm counters) pass through.
`malfunction` modes: `random` (i.i.d. N(0, scale^2) weights of the right shapes and dtypes),
`zeros`, `attacker` (a given attacker model replaces the aggregate).
`tamper` (on the device updates an edge server forwards, matched by sender): `scale` sets the
update to g + factor * (w - g); `replace` substitutes the given weights; `drop` removes it.
`withhold_blobs` (`node.learning.attacks.withhold`) alters no weights: the MEC does not serve
some of its devices' update blobs to the other MECs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from node.learning.aggregators.update import Update
from node.learning.attacks._common import (
    apply_update,
    cast_to,
    check_like,
    choice,
    copy_weights,
    is_float,
    number,
    update_of,
)
from node.learning.attacks.spec import AttackSpec
from node.learning.attacks.withhold import WITHHOLD_BLOBS
from node.learning.weights import Weights

MALFUNCTION_MODES: tuple[str, ...] = ("random", "zeros", "attacker")
TAMPER_ACTIONS: tuple[str, ...] = ("scale", "replace", "drop")


@dataclass(frozen=True, eq=False)
class MalfunctionParams:
    """Mode random|zeros|attacker; std `scale` for random; the `attacker` model for attacker."""

    mode: str
    scale: float = 1.0
    attacker: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        """Validate mode, scale and the presence of the attacker model."""
        choice("mode", self.mode, MALFUNCTION_MODES)
        if not number("scale", self.scale) >= 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")
        if (self.mode == "attacker") != (self.attacker is not None):
            raise ValueError("attacker weights are required for, and only for, mode='attacker'")


def malfunction(
    aggregate: Mapping[str, np.ndarray], params: MalfunctionParams, rng: np.random.Generator
) -> Weights:
    """The faulty edge server's output in place of `aggregate` (see module doc)."""
    if params.attacker is not None:
        check_like(aggregate, params.attacker, "attacker")
    out: Weights = {}
    for key, value in aggregate.items():
        arr = np.asarray(value)
        if not is_float(arr):
            out[key] = np.array(arr, order="C", copy=True)
        elif params.mode == "random":
            out[key] = cast_to(rng.normal(0.0, params.scale, size=arr.shape), arr.dtype)
        elif params.mode == "zeros":
            out[key] = np.zeros(arr.shape, dtype=arr.dtype)
        else:
            assert params.attacker is not None
            out[key] = cast_to(np.asarray(params.attacker[key], np.float64), arr.dtype)
    return out


@dataclass(frozen=True, eq=False)
class TamperParams:
    """Sender whose update is tampered with; action scale|replace|drop; factor or replacement."""

    target: str
    action: str
    factor: float | None = None
    replacement: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        """Validate target, action and the argument the action needs."""
        if not isinstance(self.target, str) or not self.target:
            raise ValueError(f"target must be a non-empty sender id, got {self.target!r}")
        choice("action", self.action, TAMPER_ACTIONS)
        if (self.action == "scale") != (self.factor is not None):
            raise ValueError("factor is required for, and only for, action='scale'")
        if self.factor is not None:
            number("factor", self.factor)
        if (self.action == "replace") != (self.replacement is not None):
            raise ValueError("replacement is required for, and only for, action='replace'")


def _tampered(
    update: Update, global_weights: Mapping[str, np.ndarray], params: TamperParams
) -> Update | None:
    """The tampered version of one targeted update (None when dropped)."""
    if params.action == "drop":
        return None
    if params.action == "replace":
        assert params.replacement is not None
        check_like(update.weights, params.replacement, "replacement")
        new = copy_weights(update.weights)
        for key, arr in update.weights.items():
            if is_float(arr):
                new[key] = cast_to(np.asarray(params.replacement[key], np.float64), arr.dtype)
        return replace(update, weights=new)
    assert params.factor is not None
    delta = update_of(update.weights, global_weights)
    scaled = {k: params.factor * d for k, d in delta.items()}
    return replace(update, weights=apply_update(update.weights, global_weights, scaled))


def tamper(
    updates: Sequence[Update],
    global_weights: Mapping[str, np.ndarray],
    params: TamperParams,
    rng: np.random.Generator,
) -> list[Update]:
    """The forwarded updates with the target sender's ones tampered; others are the same objects."""
    del rng
    if not any(u.sender == params.target for u in updates):
        raise ValueError(f"target {params.target!r} is not among the updates' senders")
    out: list[Update] = []
    for update in updates:
        if update.sender != params.target:
            out.append(update)
            continue
        changed = _tampered(update, global_weights, params)
        if changed is not None:
            out.append(changed)
    return out


EDGE_FAULTS: dict[str, AttackSpec] = {
    "malfunction": AttackSpec("malfunction", "aggregate", MalfunctionParams, malfunction),
    "tamper": AttackSpec("tamper", "updates", TamperParams, tamper),
    WITHHOLD_BLOBS.name: WITHHOLD_BLOBS,
}
