"""A minimal `NodeConfig` for unit tests of one node's parts (no run, no network)."""

from __future__ import annotations

from typing import Any

from node.config import LearningConfig, NodeConfig, NodePlan
from node.learning.settings import DatasetSettings, PartitionSettings, TrainingSettings
from topologies import HierarchyParams, build_hierarchy


def learning_config(
    dataset: str = "digits",
    *,
    dataset_root: str | None = None,
    model: str = "mlp",
    partition: str = "iid",
    alpha: float = 0.5,
    shards_per_device: int = 2,
    data_dir: str | None = None,
    **training: Any,
) -> LearningConfig:
    """A `LearningConfig` from flat keywords (`training`: TrainingSettings' fields)."""
    return LearningConfig(
        dataset=DatasetSettings(name=dataset, root=dataset_root),
        model=model,
        partition=PartitionSettings(
            scheme=partition, alpha=alpha, shards_per_device=shards_per_device
        ),
        training=TrainingSettings.model_validate(training, strict=False),
        data_dir=data_dir,
    )


def node_config(learning: LearningConfig, **extra: Any) -> NodeConfig:
    """A device's config with empty network fields; `extra` overrides any field."""
    base: dict[str, Any] = dict(
        run_id="t",
        node_id="dev0-0",
        scheme="vanilla",
        plan=NodePlan(node_id="dev0-0", role="device", chains=("main",)),
        seed=3,
        node_dir="-",
        key_path="-",
        bind="-",
        endpoints={},
        roster={},
        topology=build_hierarchy(HierarchyParams(1, 1, 1), 0),  # holds dev0-0
        shaping="none",
        learning=learning,
        max_message_bytes=1 << 20,
        startup_timeout_s=1,
        chains={},
        task_id="t",
    )
    return NodeConfig(**(base | extra))
