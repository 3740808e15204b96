"""Scenario files: the YAML schema, its validation, and one-line errors naming the field.

Every section is a frozen pydantic model that forbids unknown fields, so a typo is an
error rather than a silently ignored setting. `load_scenario` raises `ScenarioError`
whose message is one line: ``FILE: FIELD: VALUE is invalid; allowed: ...``; a value echoed
in it is escaped (no raw newline or control character) and cut to 80 characters.

What the loader accepts (anything else is one such line, never a traceback):
- a UTF-8 file of at most 1 MiB holding one YAML mapping; an empty file (or only comments)
  is a scenario with every default;
- plain YAML only: no aliases (``*name``: refused, so an alias bomb costs nothing), no
  explicit tags (``!!int``, ``!!python/...``), mapping keys that are plain scalars, each
  once, and at most 32 levels of nesting;
- numbers in physically meaningful ranges: powers -60..80 dBm, noise PSD -200..-100 dBm/Hz,
  bandwidths 0.001..1e6 Mbit/s (radio 0.001..10,000 MHz), distances up to 100 km, path-loss
  exponent 1..8, delays and jitter 0..60,000 ms, loss 0 ≤ % < 100, t 0 < t_ms ≤ 60,000,
  learning rate 0 < lr ≤ 10, deadlines and time-outs up to a day, Dirichlet alpha
  0.001..1000, privacy epsilon 0.001..700 (e^epsilon must be finite), clip norm up to 1e6,
  at most 10,000 node processes and 500,000 directed links (see each field below).
What a scenario needs from the machine (data set files, a feasible partition, memory) is
checked by `orchestrator.preflight`, before anything starts. The YAML rules live in
`orchestrator.plainyaml`, the one-line error texts in `orchestrator.errors`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.learning.settings import (
    AggregatorSettings,
    DatasetSettings,
    ModelName,
    PartitionSettings,
    PrivacySettings,
    TrainingSettings,
)
from node.ledger.settings import LedgerSettings
from node.schemes import SCHEME_NAMES, scheme_class
from node.settings import Seconds, Settings
from orchestrator.errors import ScenarioError, escape, show
from orchestrator.plainyaml import read_plain_yaml
from topologies.backends.cluster.settings import ClusterSection
from topologies.backends.names import Backend, DelayMode, Shaping, Switch
from topologies.backends.settings import ContainersSection
from topologies.settings import MAX_NODES, TopologySection


class SchemeSection(BaseModel):
    """``scheme: NAME`` or ``scheme: {name: NAME, PARAM: VALUE, ...}``: the registered scheme
    (node/schemes) and its own parameters, validated by the scheme's `Params`."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: Literal[SCHEME_NAMES] = "vanilla"  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _params_valid(self) -> SchemeSection:
        scheme_class(self.name).parse_params(self.params)  # ValueError naming the field
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The scheme's parameters as written (everything but ``name``)."""
        return dict(self.model_extra or {})


class FaultSection(Settings):
    """One fault-schedule entry: at round `at_round`, `action` happens to the selected nodes."""

    at_round: Annotated[int, Field(ge=1, le=10_000)]
    action: Literal["malicious", "recover", "crash", "restart", "link_down", "link_up"]
    nodes: list[str] | None = None
    role: Literal["device", "mec"] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    count: Annotated[int, Field(ge=1, le=MAX_NODES)] | None = None
    behaviour: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    link: Annotated[list[str], Field(min_length=2, max_length=2)] | None = None
    exclude_chosen: bool = Field(
        default=False,
        description=(
            "With role and fraction or count: draw only among the role's nodes that no "
            "earlier malicious entry of the schedule chose (disjoint groups, e.g. the SFL "
            "paper's 20 % malicious, 20 % unreliable, 60 % honest). The fraction is still of "
            "the whole role population, not of the remainder (our choice: the paper's "
            "'20 % of the devices')."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> FaultSection:
        if self.action in ("link_down", "link_up"):
            if self.link is None:
                raise ValueError(f"{self.action} needs link: [NODE, NODE]")
        elif (self.nodes is None) == (self.role is None):
            raise ValueError("give exactly one of nodes: [...] or role: device|mec")
        if self.role is not None and self.fraction is not None and self.count is not None:
            raise ValueError("give at most one of fraction and count")
        if self.exclude_chosen and (
            self.role is None or (self.fraction is None and self.count is None)
        ):
            raise ValueError("exclude_chosen: only with role and fraction or count")
        if self.action == "malicious" and not self.behaviour:
            raise ValueError("malicious needs a behaviour")
        return self


CONTROL_PLANE_AUTO_MAX = 300  # node processes; see MetricsSection.control_plane


class MetricsSection(Settings):
    """``metrics:``: what the nodes record besides their round records and counters, and
    whether they serve the control plane."""

    message_log: bool | None = Field(
        default=None,
        description=(
            "Each node writes nodes/<id>/messages.csv, one row per message it sends and "
            "receives (node.msglog), for bcfl pcap latency to join with the packets. Unset: "
            "on exactly when the run captures packets (capture: non-empty; our choice), so "
            "a 1,000-node run without captures writes none."
        ),
    )

    control_plane: Literal["auto"] | bool = Field(
        default="auto",
        description=(
            "Each node serves the gRPC control plane (node.control: Status, WatchMetrics, "
            "SetBehaviour, Stop; bcfl top and bcfl control use it). auto: on for runs of at "
            f"most {CONTROL_PLANE_AUTO_MAX} node processes (our choice: gRPC's core costs "
            "each process 3-6 MB and about 6 threads, ~5 GB at 1,000 nodes)."
        ),
    )

    def message_log_on(self, capture: list[Any]) -> bool:
        """Whether the nodes write their message records, given the scenario's capture."""
        return bool(capture) if self.message_log is None else self.message_log

    def control_plane_on(self, daemons: int) -> bool:
        """Whether the nodes serve the control plane, given how many node processes run."""
        if self.control_plane == "auto":
            return daemons <= CONTROL_PLANE_AUTO_MAX
        return self.control_plane


class Scenario(Settings):
    """One run: data, model, training, topology, scheme and backend."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "scenario"
    description: Annotated[str, Field(max_length=10_000)] = ""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    scheme: SchemeSection = SchemeSection()
    backend: Backend = "local"
    shaping: Shaping = "userspace"
    delay_mode: DelayMode = "kernel"
    switch: Switch = "linux"
    capture: list[str | Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list
    )
    containers: ContainersSection = ContainersSection()
    cluster: ClusterSection = ClusterSection()
    dataset: DatasetSettings = DatasetSettings()
    model: ModelName = "mlp"
    partition: PartitionSettings = PartitionSettings()
    training: TrainingSettings = TrainingSettings()
    topology: TopologySection = TopologySection()
    ledger: LedgerSettings = LedgerSettings()
    aggregator: AggregatorSettings = AggregatorSettings()
    privacy: PrivacySettings | None = None
    faults: list[FaultSection] = Field(default_factory=list)
    metrics: MetricsSection = MetricsSection()
    max_message_mb: Annotated[float, Field(gt=0, le=1024)] = 64.0
    startup_timeout_s: Seconds = 120.0

    @model_validator(mode="after")
    def _cluster_given(self) -> Scenario:
        if self.backend == "mininet-cluster" and not self.cluster.servers:
            raise ValueError(
                "backend mininet-cluster needs cluster.servers (this machine and the others)"
            )
        return self


UNKNOWN_NAME_CHARS = 20  # at most this much of an unknown field's name in an error
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,64}$")


def _part(part: int | str, limit: int | None = None) -> str:
    if isinstance(part, int) or _PLAIN_NAME.match(part):
        return str(part)
    return show(part) if limit is None else show(part, limit)


def _where(loc: tuple[int | str, ...], last_limit: int | None = None) -> str:
    """A field's path for an error line; names that are not plain are shown quoted and cut
    short (the last one to `last_limit` characters where given)."""
    parts = [_part(p) for p in loc[:-1]] + [_part(p, last_limit) for p in loc[-1:]]
    return ".".join(parts) or "(top level)"


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
    where = _where(loc)
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the README"
        # the unknown name cut short (UNKNOWN_NAME_CHARS): the allowed names are what helps,
        # and the line stays one readable line (tests/unit/test_scenario_hostile.py)
        where = _where(loc, UNKNOWN_NAME_CHARS)
        return f"{where}: unknown field; allowed: {allowed}"
    if kind == "missing":
        return f"{where}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    msg = escape(msg)
    if kind == "value_error":
        return f"{where}: {msg}"
    return f"{where}: {show(value)} is invalid; allowed: {msg}"


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


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario YAML file (an empty one is every default)."""
    data = read_plain_yaml(path)
    return parse_scenario({} if data is None else data, str(path))
