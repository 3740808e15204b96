"""The file the orchestrator writes for each node daemon (`python -m node CONFIG`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from node.learning.settings import (
    AggregatorSettings,
    DatasetSettings,
    ModelName,
    PartitionSettings,
    PrivacySettings,
    TrainingSettings,
)
from node.ledger.chain import ChainConfig
from topologies import TopologySpec


class LearningConfig(BaseModel):
    """What every node needs to rebuild the same data split and model: the scenario's own
    learning sections (`node.learning.settings`, defined once) and this node's data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetSettings
    model: ModelName
    partition: PartitionSettings
    training: TrainingSettings
    # This node's prepared data directory (node.learning.prepared), written by the orchestrator;
    # None: the node loads and partitions the data set itself (unit tests, in-memory sims).
    data_dir: str | None = None


class Behaviour(BaseModel):
    """One interval of a (malicious) behaviour a node applies itself, from the fault schedule:
    rounds ``from_round <= r < until_round`` (None: to the end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    from_round: int
    until_round: int | None = None


class NodePlan(BaseModel):
    """What one node does in a run, as its scheme planned it (`node.schemes.base`): its role,
    the chains it keeps, the peers it talks to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str
    role: str
    chains: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    light_chains: tuple[str, ...] = ()  # those of `chains` kept as light replicas


def _topology(value: object) -> TopologySpec:
    if isinstance(value, TopologySpec):
        return value
    if not isinstance(value, dict):
        raise ValueError("a topology is a mapping (TopologySpec.to_dict())")
    return TopologySpec.from_dict(value)


def _chain(value: object) -> ChainConfig:
    if isinstance(value, ChainConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("a chain config is a mapping (ChainConfig.to_dict())")
    return ChainConfig.from_dict(value)


Topology = Annotated[
    TopologySpec,
    PlainValidator(_topology),
    PlainSerializer(lambda t: t.to_dict(), return_type=dict[str, Any]),
]
"""A `TopologySpec`, written as `TopologySpec.to_dict()`."""

Chain = Annotated[
    ChainConfig,
    PlainValidator(_chain),
    PlainSerializer(lambda c: c.to_dict(), return_type=dict[str, Any]),
]
"""A `ChainConfig`, written as `ChainConfig.to_dict()`."""

SHARED_FIELDS = ("endpoints", "roster", "topology", "chains")
"""NodeConfig's fields that are the same for every node of a run and grow with its size (the
topology of 1,000 devices and 200 MECs is ~7 MB of JSON): written once, to the run's shared
file, instead of into every node's config."""


class NodeConfig(BaseModel):
    """One node's configuration for one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    node_id: str
    scheme: str
    scheme_params: dict[str, Any] = {}  # validated by the scheme's Params (node.schemes)
    plan: NodePlan
    seed: int
    node_dir: str
    key_path: str
    bind: str
    endpoints: dict[str, str]
    roster: dict[str, str]
    topology: Topology
    shaping: str
    learning: LearningConfig
    max_message_bytes: int
    startup_timeout_s: float
    chains: dict[str, Chain]  # every chain of the run, by chain id
    task_id: str
    ledger_synchronous: str = "NORMAL"
    # the block storage time t every ledger append emulates (ms; 0: none), from the
    # scenario's ledger.storage_time and topology.t_ms (`LedgerSettings.storage_time_ms`)
    ledger_storage_time_ms: Annotated[float, Field(ge=0, le=60_000, allow_inf_nan=False)] = 0.0
    aggregator: AggregatorSettings = AggregatorSettings()
    privacy: PrivacySettings | None = None
    behaviours: list[Behaviour] = Field(default_factory=list)
    links_down_path: str | None = None
    shared: str | None = None  # the run's shared file holding the SHARED_FIELDS (node.runfiles)
    # write nodes/<id>/messages.csv, a row per message sent and received (node.msglog); the
    # scenario's metrics.message_log, or, unset there, whether the run captures packets
    message_log: bool = False
    # the run's control-plane token (node.control.server; the orchestrator's key for the
    # mutating calls); None: the node serves no control plane (our choice)
    control_token: str | None = None
    # wait for the control plane's ``Start`` before starting the role (the orchestrator first
    # delivers the node's fault schedule through ``SetBehaviour``); exits non-zero without
    # one within startup_timeout_s
    await_start: bool = False

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        """Read a config written by `save`, with the fields it left to its run's shared file
        (parsed once per process: a forked daemon finds its server's parse)."""
        data = json.loads(path.read_text())
        shared = data.get("shared") if isinstance(data, dict) else None
        if not isinstance(shared, str):
            return cls.model_validate(data)
        from node import runfiles

        # The shared fields were checked against these types once, when the file was parsed
        # (in a fork server: before forking); taken as they are, not copied per node by a
        # validation (1,000 devices: a roster and endpoints of 1,101 entries each, the topology).
        common = runfiles.load(shared).data
        taken = {k: common[k] for k in SHARED_FIELDS if k in common and k not in data}
        rest = {k: v for k, v in common.items() if k not in data and k not in taken}
        # stand-ins that validate at no cost: the parsed topology and chains as they are (an
        # instance check), the two plain maps empty
        stand_ins = {k: {} if k in ("endpoints", "roster") else v for k, v in taken.items()}
        config = cls.model_validate(rest | data | stand_ins)
        return config.model_copy(update=taken)

    def save(self, path: Path) -> None:
        """Write as JSON: without the SHARED_FIELDS when `shared` names the file holding them."""
        exclude = set(SHARED_FIELDS) if self.shared is not None else None
        text = json.dumps(self.model_dump(exclude=exclude), indent=1)
        # 0600: it holds the run's control token (the orchestrator's key for mutating calls)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def shared_fields(self) -> dict[str, Any]:
        """What every node of a run has in common, for the run's shared file (JSON-able)."""
        return self.model_dump(include=set(SHARED_FIELDS))
