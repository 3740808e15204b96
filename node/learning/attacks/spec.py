"""Registry entries for attacks and faults, and validated construction of their parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# What an attack's function transforms:
#   data:      (x, y, params, rng, num_classes) -> (x, y)              before local training
#   partition: (labels, indices, params, rng, num_classes) -> indices  when data is assigned
#   update:    (weights, global_weights, params, rng, previous_update) -> weights  after training
#   aggregate: (aggregate, params, rng) -> weights                     an edge server's output
#   updates:   (updates, global_weights, params, rng) -> updates      what an edge server forwards
#   blobs:     (devices, params, rng) -> devices        whose update blobs an edge server withholds
KINDS: tuple[str, ...] = ("data", "partition", "update", "aggregate", "updates", "blobs")


@dataclass(frozen=True)
class AttackSpec:
    """A named attack or fault: what it transforms, its params dataclass and its function."""

    name: str
    kind: str
    params_cls: type[Any]
    fn: Callable[..., Any]


def make_params(registry: Mapping[str, AttackSpec], name: str, params: Mapping[str, Any]) -> Any:
    """Validated params dataclass for `name`; ValueError naming an unknown name or parameter."""
    spec = registry.get(name)
    if spec is None:
        raise ValueError(f"unknown attack {name!r}; choose one of {tuple(registry)}")
    unknown = sorted(set(params) - set(spec.params_cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"attack {name!r} has no parameter {unknown[0]!r}")
    try:
        return spec.params_cls(**params)
    except TypeError as exc:
        raise ValueError(f"attack {name!r}: {exc}") from exc
