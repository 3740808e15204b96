"""A run's data, prepared once before any node starts (see node.learning.prepared).

The orchestrator loads the data set once (`load_dataset`, the only place scikit-learn is
imported for digits), partitions the training labels across the topology's devices with the
same function and seed a node would use, and writes each device's part into
``nodes/<id>/data/``, the publisher's pointer to the test set into its own, and the shared
files (every training label, the test set) into the run's ``data/``. Devices are numbered in
topology order, as the vanilla device role numbers itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.config import LearningConfig
from node.learning.datasets import load_dataset
from node.learning.partition import partition
from node.learning.prepared import NODE_DATA_DIR, SHARED_DIR, DataSpec, write_node, write_shared
from topologies import NodeKind, TopologySpec

log = logging.getLogger(__name__)


@dataclass
class DataPrep:
    """What `prepare_data` wrote: each learning node's data directory, and how long it took."""

    dirs: dict[str, Path] = field(default_factory=dict)
    load_s: float = 0.0
    write_s: float = 0.0
    part_bytes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int]:
        """For the run's meta.json."""
        sizes = list(self.part_bytes.values()) or [0]
        return {
            "load_s": round(self.load_s, 3),
            "write_s": round(self.write_s, 3),
            "devices": len(self.part_bytes),
            "max_part_bytes": max(sizes),
        }


def spec_of(cfg: LearningConfig, seed: int, part: tuple[int, int] | None) -> DataSpec:
    """The DataSpec a node with this learning config (and part) expects."""
    return DataSpec(
        dataset=cfg.dataset.name,
        seed=seed,
        partition=cfg.partition.scheme,
        alpha=cfg.partition.alpha,
        shards_per_device=cfg.partition.shards_per_device,
        part=part,
    )


def prepare_data(
    cfg: LearningConfig,
    seed: int,
    shared_dir: Path,
    devices: list[str],
    evaluators: list[str],
    data_dir_of: Callable[[str], Path],
) -> DataPrep:
    """Load, partition and write the data for `devices` (parts, in this order) and
    `evaluators` (the test set); DatasetError/ValueError as `load_dataset`/`partition`."""
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset.name, cfg.dataset.root, seed=seed)
    parts = (
        partition(
            ds.train_y,
            len(devices),
            cfg.partition.scheme,
            seed,
            alpha=cfg.partition.alpha,
            shards_per_part=cfg.partition.shards_per_device,
        )
        if devices
        else []
    )
    t1 = time.perf_counter()
    shared = write_shared(
        shared_dir, spec_of(cfg, seed, None), ds.train_y, ds.test_x, ds.test_y, ds.num_classes
    )
    prep = DataPrep(load_s=t1 - t0)
    for i, (node_id, idx) in enumerate(zip(devices, parts, strict=True)):
        directory = data_dir_of(node_id)
        x, y = ds.train_x[idx], ds.train_y[idx]
        write_node(
            directory,
            shared_dir,
            {"train_y": shared["train_y"]},
            spec_of(cfg, seed, (i, len(devices))),
            ds.input_shape,
            ds.num_classes,
            (x, y, idx),
        )
        prep.dirs[node_id] = directory
        prep.part_bytes[node_id] = x.nbytes + y.nbytes + idx.nbytes
    for node_id in evaluators:
        directory = data_dir_of(node_id)
        tests = {k: shared[k] for k in ("test_x", "test_y")}
        write_node(
            directory, shared_dir, tests, spec_of(cfg, seed, None), ds.input_shape, ds.num_classes
        )
        prep.dirs[node_id] = directory
    prep.write_s = time.perf_counter() - t1
    log.info(
        "data: %s loaded and partitioned in %.2f s, %d parts written in %.2f s",
        cfg.dataset.name,
        prep.load_s,
        len(devices),
        prep.write_s,
    )
    return prep


def prepare_run_data(
    cfg: LearningConfig, seed: int, run_dir: Path, topology: TopologySpec
) -> DataPrep:
    """`prepare_data` for a run: parts for the topology's devices, the test set for its
    publisher, the shared files in ``<run_dir>/data`` and each node's in ``nodes/<id>/data``."""
    return prepare_data(
        cfg,
        seed,
        run_dir / SHARED_DIR,
        [n.id for n in topology.of_kind(NodeKind.DEVICE)],
        [n.id for n in topology.of_kind(NodeKind.PUBLISHER)],
        lambda node_id: run_dir / "nodes" / node_id / NODE_DATA_DIR,
    )
