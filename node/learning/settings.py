"""The learning sections of a scenario (data set, partition, training, privacy, aggregator):
defined once here and embedded in the orchestrator's `Scenario` and in each node's config.
Allowed names come from the registries (`node.learning.names`, the aggregator registry), so a
new data set or aggregator cannot leave the schema behind."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from node.learning.aggregators import AGGREGATOR_NAMES
from node.learning.names import DATASETS, MECHANISMS, MODELS, PARTITIONS
from node.learning.privacy import MAX_ANALYTIC_EPSILON
from node.settings import Seconds, Settings

ModelName = Literal[MODELS]  # type: ignore[valid-type]


class DatasetSettings(Settings):
    """Which data set, and where its files are (None: the default places)."""

    name: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    root: str | None = None


class PartitionSettings(Settings):
    """How training data is split among devices."""

    scheme: Literal[PARTITIONS] = "iid"  # type: ignore[valid-type]
    alpha: Annotated[float, Field(ge=0.001, le=1000, allow_inf_nan=False)] = 0.5
    shards_per_device: Annotated[int, Field(ge=1, le=10_000_000)] = 2


class TrainingSettings(Settings):
    """FL rounds and each device's local SGD."""

    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    learning_rate: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    round_deadline_s: Seconds = 60.0


class PrivacySettings(Settings):
    """Local differential privacy on every device's update (clip to L2 norm, Gaussian noise)."""

    epsilon: Annotated[float, Field(ge=0.001, le=MAX_ANALYTIC_EPSILON, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    clip_norm: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0
    mechanism: Literal[MECHANISMS] = "classic"  # type: ignore[valid-type]
    # SFL section III-B: "dividing the GNM's output by D yields an approximation to the real
    # average": each device's noise std is sigma / D (D: the run's devices), so the average
    # of D updates carries sigma / sqrt(D); the (epsilon, delta) then describes the average,
    # not each update (the paper's reading; off: plain local DP, sigma on every update)
    divide_by_devices: bool = False


class AggregatorSettings(Settings):
    """How updates are combined (node/learning/aggregators; `params` are checked by the
    aggregator's own parameter class)."""

    name: Literal[AGGREGATOR_NAMES] = "fedavg"  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
