"""How a replica's memory grows with the rounds of a large vanilla run.

    .venv/bin/python bench/replica_memory.py [--devices 1000] [--rounds 12] [--tracemalloc]

`bench/scale.py` saw the tree of a 1,000-device run grow by ~3.7 MB per daemon a round after
round 1, until its memory guard stopped it. Each node takes each round's block: at 1,000
devices one `task.record_update` per device and the publisher's `task.record_global`
(~1,000 transactions). This benchmark takes that part alone: the publisher builds `--rounds`
such blocks with the real contracts and keys (as in `bench/block_validation.py`), then a
fresh child process per replica kind takes them one by one as a node does
(`ChainHandle.append`: parse, check or validate, append; deferred writes, as the daemon)
and prints after each block its RSS, PSS and anonymous memory (``/proc/self/smaps_rollup``)
and, with ``--tracemalloc``, what Python itself holds (slower). The kinds: ``light`` (a
device's replica by default), ``full`` (a MEC's or a full device replica).

Prints per kind the memory after the first block, after the last, and the growth per block
over the second half (what is left once caches have filled), with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.keys import NodeKey
    from node.ledger.chain import ChainConfig

ROOT = Path(__file__).resolve().parents[1]
TASK = "digits"


def memory_kib() -> dict[str, int]:
    """This process's Rss, Pss and Anonymous (kB) from /proc/self/smaps_rollup."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            out[key] = int(rest.split()[0])
    return out


def chain_config(devices: int, seed: int) -> tuple[ChainConfig, NodeKey, list[NodeKey]]:
    """(config, publisher key, device keys) of a chain whose members are the publisher, one
    MEC per 10 devices and the devices; keys from `seed`, so parent and child agree."""
    from node.contracts.runtime import Genesis
    from node.core.finality import SingleWriter
    from node.keys import NodeKey
    from node.ledger.chain import ChainConfig

    rng = random.Random(seed)
    pub = NodeKey.from_seed(rng.randbytes(32))
    keys = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(devices)]
    mecs = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(max(1, devices // 10))]
    members = {"pub": (pub.public_key, "publisher")}
    members.update({f"mec-{i}": (k.public_key, "mec") for i, k in enumerate(mecs)})
    members.update({f"dev-{i}": (k.public_key, "device") for i, k in enumerate(keys)})
    config = ChainConfig(Genesis(members, {"pub": 10**9}, "bench"), SingleWriter(pub.public_key))
    return config, pub, keys


def build_blocks(devices: int, rounds: int, seed: int, out: Path) -> None:
    """The publisher's chain: the task's publish block, then `rounds` round blocks, each
    written to out/<height>.block as it travels."""
    from node.core.tx import Transaction
    from node.ledger.chain import Chain
    from node.ledger.store import open_store

    config, pub, keys = chain_config(devices, seed)
    rng = random.Random(seed + 1)
    writer = Chain(open_store(out / "writer"), config)
    nonce = 1
    publish = Transaction.create(
        pub,
        "task.publish",
        nonce,
        {"task_id": TASK, "reward_pool": 10**6, "rounds": 1000, "model": "mlp", "dataset": "d"},
    )
    blocks = [writer.build([publish], pub, 1_000)]
    writer.append(blocks[-1])
    for r in range(1, rounds + 1):
        txs = [
            Transaction.create(
                k,
                "task.record_update",
                r,
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": rng.randbytes(32),
                    "size": 17_000,
                    "samples": 54,
                },
            )
            for k in keys
        ]
        nonce += 1
        txs.append(
            Transaction.create(
                pub,
                "task.record_global",
                nonce,
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": rng.randbytes(32),
                    "size": 17_000,
                    "accuracy": 0.9,
                    "contributors": [f"dev-{i}" for i in range(devices)],
                },
            )
        )
        blocks.append(writer.build(txs, pub, 1_000 * (r + 1)))
        writer.append(blocks[-1])
        print(f"  built block {r + 1}: {len(txs)} transactions", file=sys.stderr, flush=True)
    writer.store.close()
    for block in blocks:
        (out / f"{block.header.height:06d}.block").write_bytes(block.to_bytes())


def take_blocks(kind: str, devices: int, seed: int, blocks_dir: Path, trace: bool) -> None:
    """Child: a fresh replica of `kind` takes every block in `blocks_dir`; one JSON line of
    memory figures per block on stdout."""
    import tracemalloc

    from node.keys import NodeKey
    from node.ledger.chains import open_chains

    config, _, _ = chain_config(devices, seed)
    if trace:
        tracemalloc.start()
    own = NodeKey.from_seed(random.Random(seed + 2).randbytes(32))
    with tempfile.TemporaryDirectory(prefix=f"bench-replica-{kind}-") as tmp:
        chains = open_chains(
            Path(tmp),
            {"main": config},
            own,
            light={"main"} if kind == "light" else (),
        )
        handle = chains["main"]
        for path in sorted(blocks_dir.glob("*.block")):
            t0 = time.perf_counter()
            handle.append(path.read_bytes())
            chains.write_pending()
            row: dict[str, float] = {
                "height": handle.height,
                "ms": 1e3 * (time.perf_counter() - t0),
            }
            row.update(memory_kib())
            if trace:
                row["python_kib"] = tracemalloc.get_traced_memory()[0] / 1024
            print(json.dumps(row), flush=True)
        chains.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000, help="transactions per round block")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--kinds", nargs="+", choices=["light", "full"], default=["light", "full"])
    ap.add_argument("--tracemalloc", action="store_true", help="also what Python holds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child", choices=["light", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--blocks", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.devices < 1 or args.rounds < 2:
        ap.error("--devices must be >= 1 and --rounds >= 2")
    if args.child:
        take_blocks(args.child, args.devices, args.seed, args.blocks, args.tracemalloc)
        return
    with tempfile.TemporaryDirectory(prefix="bench-replica-memory-") as tmp:
        work = Path(tmp)
        (work / "blocks").mkdir()
        print(
            f"building {args.rounds} round blocks of {args.devices + 1} transactions ...",
            file=sys.stderr,
            flush=True,
        )
        build_blocks(args.devices, args.rounds, args.seed, work / "blocks")
        print(f"{args.devices} devices, {args.rounds} round blocks; memory in MiB")
        for kind in args.kinds:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                kind,
                "--blocks",
                str(work / "blocks"),
                "--devices",
                str(args.devices),
                "--seed",
                str(args.seed),
            ]
            if args.tracemalloc:
                cmd.append("--tracemalloc")
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"the {kind} replica failed:\n{out.stderr}")
            rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            half = rows[len(rows) // 2 :]
            per = len(half) - 1
            for key in ("Rss", "Pss", "Anonymous", "python_kib"):
                if key not in rows[0]:
                    continue
                growth = (half[-1][key] - half[0][key]) / max(1, per) / 1024
                print(
                    f"{kind:6} {key:10} first {rows[0][key] / 1024:7.1f}  last "
                    f"{rows[-1][key] / 1024:7.1f}  growth over the last {per} blocks "
                    f"{growth:6.2f} per block"
                )
            curve = " ".join(f"{r['Pss'] / 1024:.1f}" for r in rows)
            print(f"{kind:6} Pss after each block: {curve}")
            ms = sorted(r["ms"] for r in rows[1:])
            print(f"{kind:6} take a block: median {ms[len(ms) // 2]:.1f} ms")
    print(f"load average (1 min): {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
