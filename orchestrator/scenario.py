"""Scenario files: the YAML schema, its validation, and one-line errors naming the field.

Every section is a frozen pydantic model that forbids unknown fields, so a typo is an
error rather than a silently ignored setting. `load_scenario` raises `ScenarioError`
whose message is one line: ``FILE: FIELD: VALUE is invalid; allowed: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.learning.datasets import DATASETS
from node.learning.models import MODELS
from node.learning.partition import PARTITIONS
from topologies.builders import (
    CellularParams,
    DelayDist,
    FixedLink,
    HierarchyParams,
)

SCHEMES = ("vanilla",)
BACKENDS = ("local", "mininet", "containernet")
SHAPING = ("userspace", "none")

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
LossPct = Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)]


class ScenarioError(ValueError):
    """A scenario file or override is invalid; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasetSection(_Section):
    """Which data set, and where its files are (None: the default places)."""

    name: Literal["digits", "fashion-mnist", "mnist", "mnist-5k"] = "digits"
    root: str | None = None


class PartitionSection(_Section):
    """How training data is split among devices."""

    scheme: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: PositiveFloat = 0.5
    shards_per_device: Annotated[int, Field(ge=1)] = 2


class TrainingSection(_Section):
    """FL rounds and each device's local SGD."""

    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    learning_rate: PositiveFloat = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    round_deadline_s: PositiveFloat = 60.0


class DelayDistSection(_Section):
    """A link class whose delay is drawn per link from Normal(mean_t·t, sd_t·t), truncated at 0."""

    mean_t: NonNegFloat
    sd_t: NonNegFloat
    bandwidth_mbit: PositiveFloat
    jitter_ms: NonNegFloat = 0.0
    loss_pct: LossPct = 0.0


class FixedLinkSection(_Section):
    """A link class with fixed parameters."""

    bandwidth_mbit: PositiveFloat = 1000.0
    delay_ms: NonNegFloat = 0.1
    jitter_ms: NonNegFloat = 0.0
    loss_pct: LossPct = 0.0


class CellularSection(_Section):
    """Device↔BS radio links, rates from the Shannon formula (see topologies.builders)."""

    bandwidth_mhz: PositiveFloat = 20.0
    device_power_dbm: float = 23.0
    bs_power_dbm: float = 43.0
    noise_psd_dbm_hz: float = -174.0
    distance_min_m: PositiveFloat = 100.0
    distance_max_m: PositiveFloat = 250.0
    path_loss_exponent: PositiveFloat = 3.76
    rayleigh_fading: bool = True
    max_rate_mbit: PositiveFloat = 1000.0
    min_rate_mbit: PositiveFloat = 0.01
    delay_ms: NonNegFloat = 5.0
    jitter_ms: NonNegFloat = 0.0
    loss_pct: LossPct = 0.0

    @model_validator(mode="after")
    def _distances_ordered(self) -> CellularSection:
        if self.distance_max_m < self.distance_min_m:
            raise ValueError("distance_max_m must be >= distance_min_m")
        return self


class LedgerSection(_Section):
    """Every node's ledger: the task's reward pool and SQLite durability."""

    reward_pool: Annotated[int, Field(ge=0, le=2**62)] = 10_000
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    consensus: Literal["single", "pbft"] = "single"


class AggregatorSection(_Section):
    """How the publisher combines updates (see node/learning/aggregators)."""

    name: Literal[
        "fedavg",
        "median",
        "trimmed_mean",
        "krum",
        "multi_krum",
        "top_k_accuracy",
        "accuracy_threshold",
    ] = "fedavg"
    params: dict[str, Any] = {}


class PrivacySection(_Section):
    """Local differential privacy on every device's update (clip to L2 norm, Gaussian noise)."""

    epsilon: PositiveFloat
    delta: Annotated[float, Field(gt=0, lt=1)]
    clip_norm: PositiveFloat = 1.0
    mechanism: Literal["classic", "analytic"] = "classic"


class ContainerLimits(_Section):
    """CPU and memory limits of one container (None: no limit)."""

    cpus: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False)] | None = None
    memory_mb: Annotated[int, Field(ge=64, le=1 << 22)] | None = None


class ContainersSection(ContainerLimits):
    """The containernet backend: the node image and per-container limits; `cpus` and
    `memory_mb` here apply to every container unless its role's entry sets them."""

    image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")] | None = None
    mec: ContainerLimits = ContainerLimits()
    device: ContainerLimits = ContainerLimits()
    publisher: ContainerLimits = ContainerLimits()

    def limits(self, role: str) -> ContainerLimits:
        """The limits of a container of this role (mec, device or publisher)."""
        own: ContainerLimits = getattr(self, role)
        return ContainerLimits(
            cpus=own.cpus if own.cpus is not None else self.cpus,
            memory_mb=own.memory_mb if own.memory_mb is not None else self.memory_mb,
        )


class FaultSection(_Section):
    """One fault-schedule entry: at round `at_round`, `action` happens to the selected nodes."""

    at_round: Annotated[int, Field(ge=1)]
    action: Literal["malicious", "recover", "crash", "restart", "link_down", "link_up"]
    nodes: list[str] | None = None
    role: Literal["device", "mec"] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    behaviour: str | None = None
    params: dict[str, Any] = {}
    link: Annotated[list[str], Field(min_length=2, max_length=2)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FaultSection:
        if self.action in ("link_down", "link_up"):
            if self.link is None:
                raise ValueError(f"{self.action} needs link: [NODE, NODE]")
        elif (self.nodes is None) == (self.role is None):
            raise ValueError("give exactly one of nodes: [...] or role: device|mec")
        if self.role is not None and self.fraction is not None and self.count is not None:
            raise ValueError("give at most one of fraction and count")
        if self.action == "malicious" and not self.behaviour:
            raise ValueError("malicious needs a behaviour")
        return self


_DEFAULT_HIERARCHY = HierarchyParams()


class TopologySection(_Section):
    """The BS → MEC → device hierarchy and its link classes (t_ms is the papers' unit t)."""

    base_stations: Annotated[int, Field(ge=1, le=1000)] = 1
    mecs_per_bs: Annotated[int, Field(ge=1, le=1000)] = 2
    devices_per_mec: Annotated[int, Field(ge=1, le=1000)] = 5
    t_ms: PositiveFloat = 10.0
    backhaul: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.backhaul))
    d2d: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.d2d))
    cellular: CellularSection = CellularSection()
    fronthaul: FixedLinkSection = FixedLinkSection()
    lan: FixedLinkSection = FixedLinkSection()

    def to_params(self) -> HierarchyParams:
        """The builder's parameters for this section."""
        return HierarchyParams(
            bs_count=self.base_stations,
            mecs_per_bs=self.mecs_per_bs,
            devices_per_mec=self.devices_per_mec,
            t_ms=self.t_ms,
            backhaul=DelayDist(**self.backhaul.model_dump()),
            d2d=DelayDist(**self.d2d.model_dump()),
            cellular=CellularParams(**self.cellular.model_dump()),
            fronthaul=FixedLink(**self.fronthaul.model_dump()),
            lan=FixedLink(**self.lan.model_dump()),
        )


class Scenario(_Section):
    """One run: data, model, training, topology, scheme and backend."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "scenario"
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    scheme: Literal["vanilla"] = "vanilla"
    backend: Literal["local", "mininet", "containernet"] = "local"
    shaping: Literal["userspace", "none"] = "userspace"
    delay_mode: Literal["kernel", "userspace"] = "kernel"
    switch: Literal["linux", "ovs-user"] = "linux"
    capture: list[str | Annotated[list[str], Field(min_length=2, max_length=2)]] = []
    containers: ContainersSection = ContainersSection()
    dataset: DatasetSection = DatasetSection()
    model: Literal["mlp", "cnn", "small-cnn"] = "mlp"
    partition: PartitionSection = PartitionSection()
    training: TrainingSection = TrainingSection()
    topology: TopologySection = TopologySection()
    ledger: LedgerSection = LedgerSection()
    aggregator: AggregatorSection = AggregatorSection()
    privacy: PrivacySection | None = None
    faults: list[FaultSection] = []
    max_message_mb: Annotated[float, Field(gt=0, le=1024)] = 64.0
    startup_timeout_s: PositiveFloat = 120.0


assert set(DATASETS) == set(DatasetSection.model_fields["name"].annotation.__args__)  # type: ignore[union-attr]
assert set(MODELS) == set(Scenario.model_fields["model"].annotation.__args__)  # type: ignore[union-attr]
assert set(PARTITIONS) == set(PartitionSection.model_fields["scheme"].annotation.__args__)  # type: ignore[union-attr]


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Scenario
    for part in loc:
        f = model.model_fields.get(str(part))
        if f is None or not (
            isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
        ):
            return None
        model = f.annotation
    return model


def _one_line(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the README"
        return f"{where}: unknown field; allowed fields: {allowed}"
    if kind == "missing":
        return f"{where}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    if kind == "value_error":
        return f"{where}: {msg}"
    return f"{where}: {value!r} is invalid; allowed: {msg}"


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    """Validate a parsed YAML document; raises ScenarioError with one line per the first error."""
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{source}: the file must hold a mapping of fields, got {type(data).__name__}"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ScenarioError(f"{source}: {_one_line(dict(errors[0]))}{more}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ScenarioError(f"{path}:{where} not valid YAML ({problem})") from None
    return parse_scenario(data, str(path))
