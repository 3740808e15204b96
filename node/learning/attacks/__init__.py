"""Threat models: device attacks (data, partition, update) and edge-server faults.

All are pure functions seeded by an explicit numpy Generator; inputs are never modified.
"""

from __future__ import annotations

from node.learning.attacks.edge import (
    EDGE_FAULTS,
    MalfunctionParams,
    TamperParams,
    malfunction,
    tamper,
)
from node.learning.attacks.free_rider import FreeRiderParams, free_rider
from node.learning.attacks.gaussian import GaussianParams, gaussian
from node.learning.attacks.label_flip import LabelFlipParams, flip_labels, label_flip
from node.learning.attacks.lazy import LazyParams, lazy, lazy_indices
from node.learning.attacks.registry import (
    DEVICE_ATTACKS,
    apply_data_attack,
    apply_partition_attack,
    apply_update_attack,
)
from node.learning.attacks.scale import ScaleParams, scale
from node.learning.attacks.sign_flip import SignFlipParams, sign_flip
from node.learning.attacks.spec import AttackSpec, make_params
from node.learning.attacks.unreliable import UnreliableParams, skew_to_emd, unreliable

__all__ = [
    "DEVICE_ATTACKS",
    "EDGE_FAULTS",
    "AttackSpec",
    "FreeRiderParams",
    "GaussianParams",
    "LabelFlipParams",
    "LazyParams",
    "MalfunctionParams",
    "ScaleParams",
    "SignFlipParams",
    "TamperParams",
    "UnreliableParams",
    "apply_data_attack",
    "apply_partition_attack",
    "apply_update_attack",
    "flip_labels",
    "free_rider",
    "gaussian",
    "label_flip",
    "lazy",
    "lazy_indices",
    "make_params",
    "malfunction",
    "scale",
    "sign_flip",
    "skew_to_emd",
    "tamper",
    "unreliable",
]
