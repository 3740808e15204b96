"""The file the orchestrator writes for each node daemon (`python -m node CONFIG`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class LearningConfig(BaseModel):
    """What every node needs to rebuild the same data split and model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    dataset_root: str | None = None
    model: str
    partition: str
    alpha: float = 0.5
    shards_per_device: int = 2
    rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float = 0.0
    round_deadline_s: float
    # This node's prepared data directory (node.learning.prepared), written by the orchestrator;
    # None: the node loads and partitions the data set itself (unit tests, in-memory sims).
    data_dir: str | None = None


class NodeConfig(BaseModel):
    """One node's configuration for one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    node_id: str
    scheme: str
    seed: int
    node_dir: str
    key_path: str
    bind: str
    endpoints: dict[str, str]
    roster: dict[str, str]
    topology: dict[str, Any]
    shaping: str
    learning: LearningConfig
    max_message_bytes: int
    startup_timeout_s: float
    chain: dict[str, Any]
    task_id: str
    ledger_synchronous: str = "NORMAL"
    consensus: str = "single"
    aggregator: dict[str, Any] = {"name": "fedavg", "params": {}}
    privacy: dict[str, Any] | None = None
    behaviours: list[dict[str, Any]] = []
    links_down_path: str | None = None

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        """Read a config written by `save`."""
        return cls.model_validate(json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(self.model_dump(), indent=1))
