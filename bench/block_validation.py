"""What one replica spends to take a vanilla round's block: parse, validate, append.

    .venv/bin/python bench/block_validation.py [--reps N] [--history R] [--baseline REV] [--profile]

The block is one FL round of the vanilla scheme at the size of `bench/vs_flower.py`'s run
(1 publisher, 1 BS, 2 MECs, 10 devices): ten `task.record_update` transactions (one per
device) and the publisher's `task.record_global`, built and certified by the publisher with
the real contracts, after `--history` earlier rounds (default 19: the last round of that
run, whose state holds every earlier round's records). Each repetition takes a fresh replica
at the block's parent (a copy of a SQLite store holding the genesis, the task's publish
block and the earlier rounds; the signature cache emptied; none of it timed) and times what
a replica does when the block arrives from a peer:

  parse    `Block.from_bytes(raw)` (decode, canonical check, transaction forms)
  validate `Chain.validate(block)` (Merkle root, signatures, certificate, contracts, state root)
  store    `ChainStore.append(block, writes)` (SQLite, synchronous NORMAL, as a vanilla node)

and prints the median µs per block of each and of the total.

With `--baseline REV` (a git revision of this repository, e.g. HEAD~3) the same measurement
runs, alternating, against the `node/` package of REV (exported with `git archive` into a
temporary folder, imported by a child process) and against the working tree; the ratios
are from the same run and the 1-minute load average is printed next to every figure.
`--profile` prints the top functions of a cProfile of the working tree's repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 10
MECS = 2
TASK = "digits"


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def measure(reps: int, history: int, profile: bool) -> dict[str, float]:
    """Median µs per block of parse / validate / store / total over `reps` fresh replicas
    that hold `history` earlier rounds."""
    from node import sigcache
    from node.contracts.runtime import Genesis
    from node.core.block import Block
    from node.core.finality import SingleWriter
    from node.core.tx import Transaction
    from node.keys import NodeKey
    from node.ledger.chain import Chain, ChainConfig
    from node.ledger.store import open_store

    rng = random.Random(12)
    pub = NodeKey.from_seed(rng.randbytes(32))
    devices = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(DEVICES)]
    others = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(MECS + 1)]
    members = {"pub": (pub.public_key, "publisher"), "bs": (others[0].public_key, "bs")}
    members.update({f"mec-{i}": (k.public_key, "mec") for i, k in enumerate(others[1:])})
    members.update({f"dev-{i}": (k.public_key, "device") for i, k in enumerate(devices)})
    config = ChainConfig(Genesis(members, {"pub": 10**6}, "bench"), SingleWriter(pub.public_key))

    tmp = Path(tempfile.mkdtemp(prefix="bench-blockval-"))
    try:
        writer = Chain(open_store(tmp / "writer"), config)
        publish = Transaction.create(
            pub,
            "task.publish",
            1,
            {"task_id": TASK, "reward_pool": 1000, "rounds": 1000, "model": "mlp", "dataset": "d"},
        )
        first = writer.build([publish], pub, 1_000)
        writer.append(first)

        def round_block(r: int) -> Block:
            txs = [
                Transaction.create(
                    k,
                    "task.record_update",
                    r,
                    {
                        "task_id": TASK,
                        "round": r,
                        "blob": rng.randbytes(32),
                        "size": 17_000 + i,
                        "samples": 134,
                    },
                )
                for i, k in enumerate(devices)
            ]
            txs.append(
                Transaction.create(
                    pub,
                    "task.record_global",
                    r + 1,
                    {
                        "task_id": TASK,
                        "round": r,
                        "blob": rng.randbytes(32),
                        "size": 17_000,
                        "accuracy": 0.9123,
                        "contributors": [f"dev-{i}" for i in range(DEVICES)],
                    },
                )
            )
            block = writer.build(txs, pub, 1_000 * (r + 1))
            assert len(block.txs) == DEVICES + 1
            writer.append(block)
            return block

        for r in range(1, history + 1):  # earlier rounds: the state a replica has by then
            round_block(r)
        writer.store.flush()
        shutil.copytree(tmp / "writer", tmp / "base")  # the replica at the timed block's parent
        block = round_block(history + 1)
        raw = block.to_bytes()
        writer.store.close()

        times: dict[str, list[float]] = {"parse": [], "validate": [], "store": [], "total": []}
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        for i in range(reps):
            shutil.copytree(tmp / "base", tmp / f"r{i}")
            replica = Chain(open_store(tmp / f"r{i}"), config)
            sigcache.CACHE.clear()
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            parsed = Block.from_bytes(raw)
            t1 = time.perf_counter()
            new_state, _ = replica.validate(parsed)
            t2 = time.perf_counter()
            replica.store.append(parsed, new_state.diff(replica.state))
            t3 = time.perf_counter()
            if profiler is not None:
                profiler.disable()
            assert replica.store.head() is not None
            assert new_state.root() == block.header.state_root
            replica.store.close()
            shutil.rmtree(tmp / f"r{i}", ignore_errors=True)
            for name, dt in (("parse", t1 - t0), ("validate", t2 - t1), ("store", t3 - t2)):
                times[name].append(dt * 1e6)
            times["total"].append((t3 - t0) * 1e6)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return {name: statistics.median(v) for name, v in times.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(rev: str, dest: Path) -> None:
    """The `node/` and `topologies/` packages of `rev` under `dest`."""
    archive = dest / "tree.tar"
    with archive.open("wb") as fh:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "node", "topologies"], stdout=fh, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()


def _child(tree: Path, reps: int, history: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(tree),
            "--reps",
            str(reps),
            "--history",
            str(history),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="fresh replicas per measurement")
    ap.add_argument(
        "--history", type=int, default=19, help="rounds before the timed one (default 19)"
    )
    ap.add_argument("--baseline", help="git revision to compare the working tree against")
    ap.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    ap.add_argument("--profile", action="store_true", help="cProfile the repetitions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, args.child)
        print(json.dumps(measure(args.reps, args.history, False)))
        return
    sys.path.insert(0, str(ROOT))
    phases = ("parse", "validate", "store", "total")
    if not args.baseline:
        result = measure(args.reps, args.history, args.profile)
        print(f"µs per block (median of {args.reps}), load {_load()}")
        print("  ".join(f"{p} {result[p]:.0f}" for p in phases))
        return
    base_dir = Path(tempfile.mkdtemp(prefix="bench-blockval-base-"))
    try:
        _export(args.baseline, base_dir)
        rows: list[tuple[str, dict[str, float], dict[str, float], str]] = []
        for _ in range(args.rounds):
            before = _child(base_dir, args.reps, args.history)
            after = _child(ROOT, args.reps, args.history)
            rows.append((args.baseline, before, after, _load()))
        print(f"µs per block (median of {args.reps} fresh replicas), before = {args.baseline}")
        header = "  ".join(f"{p:>20}" for p in phases)
        print(f"{'':6}{header}  load")
        for i, (_, before, after, load) in enumerate(rows):
            cells = "  ".join(
                f"{before[p]:>6.0f}→{after[p]:>6.0f} {after[p] / before[p]:>5.2f}×" for p in phases
            )
            print(f"run {i + 1} {cells}  {load}")
        med = {p: statistics.median(a[p] / b[p] for _, b, a, _ in rows) for p in phases}
        print("median ratio after/before: " + "  ".join(f"{p} {med[p]:.2f}×" for p in phases))
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
