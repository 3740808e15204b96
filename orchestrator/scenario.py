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
checked by `orchestrator.preflight`, before anything starts.
"""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.learning.names import DATASETS, MECHANISMS, MODELS, PARTITIONS
from node.learning.privacy import MAX_ANALYTIC_EPSILON
from topologies.backends.names import Backend, DelayMode, Shaping, Switch
from topologies.builders import (
    CellularParams,
    DelayDist,
    FixedLink,
    HierarchyParams,
)

SCHEMES = ("vanilla",)

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 10_000
MAX_LINKS = 500_000
SHOW_CHARS = 80

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
LossPct = Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)]
Mbit = Annotated[float, Field(ge=0.001, le=1e6, allow_inf_nan=False)]
Millis = Annotated[float, Field(ge=0, le=60_000, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
Dbm = Annotated[float, Field(ge=-60, le=80, allow_inf_nan=False)]
Metres = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]
TimesT = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


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
    alpha: Annotated[float, Field(ge=0.001, le=1000, allow_inf_nan=False)] = 0.5
    shards_per_device: Annotated[int, Field(ge=1, le=10_000_000)] = 2


class TrainingSection(_Section):
    """FL rounds and each device's local SGD."""

    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    learning_rate: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    round_deadline_s: Seconds = 60.0


class DelayDistSection(_Section):
    """A link class whose delay is drawn per link from Normal(mean_t·t, sd_t·t), truncated at 0."""

    mean_t: TimesT
    sd_t: TimesT
    bandwidth_mbit: Mbit
    jitter_ms: Millis = 0.0
    loss_pct: LossPct = 0.0


class FixedLinkSection(_Section):
    """A link class with fixed parameters."""

    bandwidth_mbit: Mbit = 1000.0
    delay_ms: Millis = 0.1
    jitter_ms: Millis = 0.0
    loss_pct: LossPct = 0.0


class CellularSection(_Section):
    """Device↔BS radio links, rates from the Shannon formula (see topologies.builders)."""

    bandwidth_mhz: Annotated[float, Field(ge=0.001, le=10_000, allow_inf_nan=False)] = 20.0
    device_power_dbm: Dbm = 23.0
    bs_power_dbm: Dbm = 43.0
    noise_psd_dbm_hz: Annotated[float, Field(ge=-200, le=-100, allow_inf_nan=False)] = -174.0
    distance_min_m: Metres = 100.0
    distance_max_m: Metres = 250.0
    path_loss_exponent: Annotated[float, Field(ge=1, le=8, allow_inf_nan=False)] = 3.76
    rayleigh_fading: bool = True
    max_rate_mbit: Mbit = 1000.0
    min_rate_mbit: Mbit = 0.01
    delay_ms: Millis = 5.0
    jitter_ms: Millis = 0.0
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

    epsilon: Annotated[float, Field(ge=0.001, le=MAX_ANALYTIC_EPSILON, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    clip_norm: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0
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

    at_round: Annotated[int, Field(ge=1, le=10_000)]
    action: Literal["malicious", "recover", "crash", "restart", "link_down", "link_up"]
    nodes: list[str] | None = None
    role: Literal["device", "mec"] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    count: Annotated[int, Field(ge=1, le=MAX_NODES)] | None = None
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
    t_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = 10.0
    backhaul: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.backhaul))
    d2d: DelayDistSection = DelayDistSection(**vars(_DEFAULT_HIERARCHY.d2d))
    cellular: CellularSection = CellularSection()
    fronthaul: FixedLinkSection = FixedLinkSection()
    lan: FixedLinkSection = FixedLinkSection()

    @model_validator(mode="after")
    def _not_too_large(self) -> TopologySection:
        mecs = self.base_stations * self.mecs_per_bs
        devices = mecs * self.devices_per_mec
        nodes = mecs + devices + 1
        links = 2 * mecs + 2 * devices + mecs * (mecs - 1) + devices * (self.devices_per_mec - 1)
        if nodes > MAX_NODES or links > MAX_LINKS:
            raise ValueError(
                f"{nodes} node processes and {links} directed links is too large; allowed: "
                f"at most {MAX_NODES} node processes and {MAX_LINKS} directed links"
            )
        return self

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
    description: Annotated[str, Field(max_length=10_000)] = ""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    scheme: Literal["vanilla"] = "vanilla"
    backend: Backend = "local"
    shaping: Shaping = "userspace"
    delay_mode: DelayMode = "kernel"
    switch: Switch = "linux"
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
    startup_timeout_s: Seconds = 120.0


assert set(DATASETS) == set(DatasetSection.model_fields["name"].annotation.__args__)  # type: ignore[union-attr]
assert set(MODELS) == set(Scenario.model_fields["model"].annotation.__args__)  # type: ignore[union-attr]
assert set(PARTITIONS) == set(PartitionSection.model_fields["scheme"].annotation.__args__)  # type: ignore[union-attr]
assert set(MECHANISMS) == set(PrivacySection.model_fields["mechanism"].annotation.__args__)  # type: ignore[union-attr]

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = SHOW_CHARS
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 3, 4, 4, 4
_SHORT.maxset = _SHORT.maxfrozenset = 4
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,64}$")


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """`value` for an error line: escaped like repr (no raw newline or control character),
    at most `limit` characters, and never an int-to-str conversion of a huge integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * math.log10(2)) + 1
        text = f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
    else:
        try:
            text = _SHORT.repr(value)
        except Exception:  # a value whose repr fails: say what it is instead
            text = f"a {type(value).__name__}"
    text = escape(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def escape(text: str) -> str:
    """`text` with newlines and other unprintable characters backslash-escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) if isinstance(p, int) or _PLAIN_NAME.match(p) else show(p) for p in loc]
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
        return f"{where}: unknown field; allowed fields: {allowed}"
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


_YAML_TAG = "tag:yaml.org,2002:"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader for plain YAML: no aliases, no explicit tags, scalar keys given once, and
    at most MAX_DEPTH levels of nesting; a value that cannot be constructed (an implicit
    ``2001-13-45``) is a ConstructorError, not a ValueError from deep inside PyYAML."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{show(event.anchor)[1:-1]} is invalid; allowed: no YAML aliases "
                "(write the value out)",
                event.start_mark,
            )
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            raise yaml.composer.ComposerError(
                None,
                None,
                f"tag {show(str(tag).replace(_YAML_TAG, '!!'))} is invalid; allowed: no YAML "
                "tags (write plain values, "
                "quote strings)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels is invalid; allowed: at most "
                    f"{MAX_DEPTH}",
                    event.start_mark,
                )
            node: yaml.Node | None = super().compose_node(parent, index)  # type: ignore[arg-type]
            return node
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, ArithmeticError, AttributeError):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{show(node.value)} is invalid; allowed: a valid "
                f"{str(node.tag).replace(_YAML_TAG, '')}, or quote it to make it a string",
                node.start_mark,
            ) from None


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key that is a list or mapping is invalid; allowed: plain names as keys",
                key_node.start_mark,
            )
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {show(key)} is invalid; allowed: each key once per mapping (given twice)",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _read(path: Path) -> str:
    """The file's text; ScenarioError when it is missing, too large or not UTF-8."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{path}: a file over {MAX_FILE_BYTES} bytes is invalid; allowed: a scenario file "
            f"of at most {MAX_FILE_BYTES} bytes (1 MiB)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{path}: byte {exc.start} ({raw[exc.start : exc.start + 1]!r}) is invalid; "
            "allowed: UTF-8 text (not UTF-8)"
        ) from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario YAML file (an empty one is every default)."""
    text = _read(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ScenarioError(
            f"{path}: line {line}: character {show(char)} is invalid; "
            "allowed: printable text (not valid YAML: no control characters)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = escape(str(getattr(exc, "problem", None) or type(exc).__name__))
        if " is invalid; allowed: " in problem:  # ours, already in the one-line form
            raise ScenarioError(f"{path}:{where} {problem}") from None
        raise ScenarioError(f"{path}:{where} not valid YAML ({problem[:200]})") from None
    except RecursionError:  # kept out by MAX_DEPTH; a backstop for a deep parser path
        raise ScenarioError(
            f"{path}: nesting is invalid; allowed: at most {MAX_DEPTH} levels"
        ) from None
    return parse_scenario({} if data is None else data, str(path))
