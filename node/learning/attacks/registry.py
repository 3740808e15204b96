"""DEVICE_ATTACKS: every device-side attack by name, and helpers to apply one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from node.learning.attacks.free_rider import FreeRiderParams, free_rider
from node.learning.attacks.gaussian import GaussianParams, gaussian
from node.learning.attacks.label_flip import LabelFlipParams, label_flip
from node.learning.attacks.lazy import LazyParams, lazy
from node.learning.attacks.scale import ScaleParams, scale
from node.learning.attacks.sign_flip import SignFlipParams, sign_flip
from node.learning.attacks.spec import AttackSpec, make_params
from node.learning.attacks.unreliable import UnreliableParams, unreliable
from node.learning.weights import Weights

DEVICE_ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("label_flip", "data", LabelFlipParams, label_flip),
        AttackSpec("lazy", "data", LazyParams, lazy),
        AttackSpec("unreliable", "partition", UnreliableParams, unreliable),
        AttackSpec("sign_flip", "update", SignFlipParams, sign_flip),
        AttackSpec("scale", "update", ScaleParams, scale),
        AttackSpec("gaussian", "update", GaussianParams, gaussian),
        AttackSpec("free_rider", "update", FreeRiderParams, free_rider),
    )
}


def _spec(name: str, kind: str, params: Mapping[str, Any]) -> tuple[AttackSpec, Any]:
    """The spec and validated params of attack `name`, which must be of `kind`."""
    validated = make_params(DEVICE_ATTACKS, name, params)
    spec = DEVICE_ATTACKS[name]
    if spec.kind != kind:
        raise ValueError(f"attack {name!r} is a {spec.kind} attack, not a {kind} attack")
    return spec, validated


def apply_data_attack(
    name: str,
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run data attack `name` on a device's (x, y) before training."""
    spec, validated = _spec(name, "data", params)
    out: tuple[np.ndarray, np.ndarray] = spec.fn(x, y, validated, rng, num_classes)
    return out


def apply_partition_attack(
    name: str,
    params: Mapping[str, Any],
    labels: np.ndarray,
    indices: np.ndarray,
    rng: np.random.Generator,
    num_classes: int,
) -> np.ndarray:
    """Run partition attack `name` on a device's sample indices into `labels`."""
    spec, validated = _spec(name, "partition", params)
    out: np.ndarray = spec.fn(labels, indices, validated, rng, num_classes)
    return out


def apply_update_attack(
    name: str,
    params: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    previous_update: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Run update attack `name` on a device's trained weights given the round's global model."""
    spec, validated = _spec(name, "update", params)
    out: Weights = spec.fn(weights, global_weights, validated, rng, previous_update)
    return out
