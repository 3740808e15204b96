"""Benchmark: a run's data prepared once (orchestrator.dataprep) against every node loading it.

Printed, with the load average next to each figure:

* data preparation for 10 / 100 / 1000 devices (``--sizes``): load + partition time, write
  time, and the bytes one device then holds in memory (its part: x, y, indices; the median and
  the largest), against the whole float32 data set each device held before;
* one device daemon with ``--devices`` devices (100): a child forked from a parent that
  imported torch and the node modules and warmed up like the fork server (``gc.freeze``), which
  builds its ``Learner`` either the old way (``load_dataset`` + ``partition`` in the node) or
  from the prepared files; alternating ``--reps`` times. Per child: peak RSS growth over its
  RSS at fork (VmHWM, reset at fork through /proc/self/clear_refs), PSS and private bytes
  after the Learner is built and trained one round, and the build time; then the ratios
  (prepared / old) of the medians.

Default data: full MNIST from ``--mnist`` (default ../shared/datasets/mnist beside the
repository, or $BCFL_MNIST); ``--dataset digits`` for a quick run.

Run: ``python bench/dataprep.py`` (``--sizes 10 100 --reps 2`` to be quicker).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.config import LearningConfig  # noqa: E402
from node.learning.settings import (  # noqa: E402
    DatasetSettings,
    PartitionSettings,
    TrainingSettings,
)
from orchestrator.dataprep import prepare_data  # noqa: E402

MB = float(1 << 20)


def load() -> str:
    """The 1-minute load average, for printing next to a figure."""
    return f"load {os.getloadavg()[0]:.1f}"


def learning(dataset: str, root: str | None, data_dir: str | None = None) -> LearningConfig:
    return LearningConfig(
        dataset=DatasetSettings(name=dataset, root=root),
        model="mlp",
        partition=PartitionSettings(scheme="iid"),
        training=TrainingSettings(
            rounds=1, local_epochs=1, batch_size=32, learning_rate=0.05, round_deadline_s=30.0
        ),
        data_dir=data_dir,
    )


def prepare(cfg: LearningConfig, seed: int, devices: int, out: Path) -> tuple[Any, Path]:
    ids = [f"dev{i}" for i in range(devices)]
    prep = prepare_data(cfg, seed, out / "data", ids, ["pub"], lambda n: out / "nodes" / n)
    return prep, out


def bench_prep(cfg: LearningConfig, seed: int, sizes: list[int], full_bytes: int) -> None:
    print(f"data preparation ({cfg.dataset.name}, iid), whole float32 set {full_bytes / MB:.1f} MB")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bcfl-dataprep-") as tmp:
            t0 = time.perf_counter()
            prep, _ = prepare(cfg, seed, n, Path(tmp))
            wall = time.perf_counter() - t0
            sizes_b = sorted(prep.part_bytes.values())
            med, top = statistics.median(sizes_b), sizes_b[-1]
            print(
                f"  {n:5d} devices: {wall:6.2f} s (load+partition {prep.load_s:.2f} s, "
                f"write {prep.write_s:.2f} s); per device {med / 1024:.0f} KiB median, "
                f"{top / 1024:.0f} KiB max = {full_bytes / top:.0f}x less than the whole set "
                f"[{load()}]"
            )


def _proc(field_file: str, key: str) -> int:
    """A kB field of /proc/self/status or smaps_rollup, in bytes."""
    for line in Path(f"/proc/self/{field_file}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _child(cfg: LearningConfig, seed: int, part: tuple[int, int], write_fd: int) -> None:
    """Build a Learner, train one round, report memory to the parent, exit."""
    from node.roles.learner import Learner

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    rss0 = _proc("status", "VmRSS")
    t0 = time.perf_counter()
    learner = Learner(cfg, seed, part)
    build_s = time.perf_counter() - t0
    learner.train(1)
    rec = {
        "peak_rss_growth": _proc("status", "VmHWM") - rss0,
        "pss": _proc("smaps_rollup", "Pss"),
        "private": _proc("smaps_rollup", "Private_Clean") + _proc("smaps_rollup", "Private_Dirty"),
        "build_s": build_s,
        "samples": len(learner.train_y),
    }
    os.write(write_fd, json.dumps(rec).encode())
    os._exit(0)


def fork_measure(cfg: LearningConfig, seed: int, part: tuple[int, int]) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(cfg, seed, part, w)
        finally:
            os._exit(1)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"measuring child failed (status {status})")
    out: dict[str, Any] = json.loads(data)
    return out


def warm_up() -> None:
    """What the fork server does before forking nodes: import, one training step, freeze."""
    from node.learning.train import configure_torch_threads

    configure_torch_threads(1)
    import torch

    import node.roles.learner
    import node.schemes  # noqa: F401
    from node.learning.models import build_model

    model = build_model("mlp", (1, 28, 28), 10, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(
        model(torch.randn(4, 1, 28, 28)), torch.zeros(4).long()
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    gc.collect()
    gc.freeze()


def bench_daemon(cfg: LearningConfig, seed: int, devices: int, reps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bcfl-dataprep-") as tmp:
        prep, _ = prepare(cfg, seed, devices, Path(tmp))
        part = (devices // 2, devices)
        new_cfg = cfg.model_copy(update={"data_dir": str(prep.dirs[f"dev{part[0]}"])})
        warm_up()
        print(
            f"one device daemon, {cfg.dataset.name}, device {part[0]} of {devices} (forked, warm)"
        )
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "prepared": []}
        for rep in range(reps):
            for label, c in (("old", cfg), ("prepared", new_cfg)):
                rec = fork_measure(c, seed, part)
                runs[label].append(rec)
                print(
                    f"  rep {rep + 1} {label:8s}: peak RSS +{rec['peak_rss_growth'] / MB:7.1f} MB, "
                    f"PSS {rec['pss'] / MB:6.1f} MB, private {rec['private'] / MB:6.1f} MB, "
                    f"build {rec['build_s']:.2f} s, {rec['samples']} samples [{load()}]"
                )
        print("  median prepared / old:")
        for key, unit in (("peak_rss_growth", MB), ("pss", MB), ("private", MB), ("build_s", 1)):
            old = statistics.median(r[key] for r in runs["old"])
            new = statistics.median(r[key] for r in runs["prepared"])
            print(
                f"    {key:16s} {old / unit:8.2f} -> {new / unit:8.2f}  "
                f"ratio {new / old if old else float('nan'):.3f} [{load()}]"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    default_mnist = os.environ.get("BCFL_MNIST") or str(ROOT.parent / "shared/datasets/mnist")
    parser.add_argument("--mnist", default=default_mnist, help="directory of MNIST's IDX files")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = args.mnist if args.dataset == "mnist" else None
    cfg = learning(args.dataset, root)
    pixels = 784 if args.dataset == "mnist" else 64
    train = 60_000 if args.dataset == "mnist" else 1437
    full_bytes = train * pixels * 4
    print(f"bcfl bench/dataprep.py, {os.cpu_count()} CPUs [{load()}]")
    bench_prep(cfg, args.seed, args.sizes, full_bytes)
    bench_daemon(cfg, args.seed, args.devices, args.reps)


if __name__ == "__main__":
    main()
