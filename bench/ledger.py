"""Ledger benchmark: block append/commit rate, store verification speed, blob store MB/s.

    .venv/bin/python bench/ledger.py [--quick]

(a) blocks/s with TXS transactions each (task.record_update from registered devices plus the
    publisher's record_global): build+append (Chain.build then Chain.append) and append only
    (validate + store), with SQLite synchronous NORMAL and FULL;
(a2) before/after issue 12 item 4, alternating in one run (REPS runs each, the ratio and the
    1-min load average printed): every transaction verified on arrival (as the publisher
    and the validators do on submission), then build+append of its block, then every block
    durable. before = verify cache off, each append one synchronous SQLite transaction;
    after = node.sigcache on (the append's re-check of a transaction verified on arrival is
    a cache hit) and deferred writes (`write_pending` every WRITE_EVERY blocks, as a host
    does when idle, and a final flush, all timed);
(b) verify_store over a chain of VERIFY_BLOCKS blocks: blocks/s and txs/s;
(c) FileBlobStore put/get MB/s for model-sized (6.6 MB) and 100 KB blobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node import sigcache
from node.contracts.runtime import Genesis
from node.core.block import Block
from node.core.finality import SingleWriter
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.blobs import FileBlobStore
from node.ledger.chain import Chain, ChainConfig, verify_store
from node.ledger.store import open_store

TASK = "bench"
REPS = 3
WRITE_EVERY = 4


class Workload:
    """Pre-signed blocks' worth of transactions: each block is one FL round."""

    def __init__(self, n_devices: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.pub = NodeKey.from_seed(rng.randbytes(32))
        self.devices = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(n_devices)]
        members = {"pub": (self.pub.public_key, "publisher")}
        members.update({f"dev{i}": (k.public_key, "device") for i, k in enumerate(self.devices)})
        genesis = Genesis(members, {"pub": 10**9}, "bench")
        self.config = ChainConfig(genesis, SingleWriter(self.pub.public_key))
        self.rng = rng
        self.nonce: dict[bytes, int] = {}
        self.round = 0

    def _tx(self, key: NodeKey, type_: str, payload: dict[str, object]) -> Transaction:
        n = self.nonce.get(key.public_key, 0) + 1
        self.nonce[key.public_key] = n
        return Transaction.create(key, type_, n, payload)

    def publish(self) -> list[Transaction]:
        payload = {
            "task_id": TASK,
            "reward_pool": 1000,
            "rounds": 100_000,
            "model": "cnn",
            "dataset": "mnist",
        }
        return [self._tx(self.pub, "task.publish", payload)]

    def round_txs(self, n_txs: int) -> list[Transaction]:
        """n_txs - 1 updates (one per device) and the round's record_global."""
        self.round += 1
        r = self.round
        devs = self.devices[: max(1, n_txs - 1)]
        txs = [
            self._tx(
                d,
                "task.record_update",
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": self.rng.randbytes(32),
                    "size": 6_600_000,
                    "samples": 100,
                },
            )
            for d in devs
        ]
        txs.append(
            self._tx(
                self.pub,
                "task.record_global",
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": self.rng.randbytes(32),
                    "size": 6_600_000,
                    "accuracy": 0.9,
                    "contributors": [f"dev{i}" for i in range(len(devs))],
                },
            )
        )
        return txs


def bench_append(n_blocks: int, n_txs: int, sync_mode: str) -> tuple[float, float]:
    """(build+append blocks/s, append-only blocks/s) for n_blocks of n_txs transactions."""
    work = Workload(n_txs - 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        writer = Chain(open_store(tmp / "w", sync_mode), work.config)
        first = writer.build(work.publish(), work.pub, 1)
        writer.append(first)
        batches = [work.round_txs(n_txs) for _ in range(n_blocks)]  # signing not timed
        blocks: list[Block] = []
        t0 = time.perf_counter()
        for i, txs in enumerate(batches):
            block = writer.build(txs, work.pub, 1000 * (i + 2))
            assert len(block.txs) == n_txs
            writer.append(block)
            blocks.append(block)
        build_append = n_blocks / (time.perf_counter() - t0)
        writer.store.close()

        replica = Chain(open_store(tmp / "r", sync_mode), work.config)
        replica.append(first)
        t0 = time.perf_counter()
        for block in blocks:
            replica.append(block)
        append_only = n_blocks / (time.perf_counter() - t0)
        replica.store.close()
        return build_append, append_only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_commit_path(n_blocks: int, n_txs: int, after: bool) -> float:
    """Blocks/s of arrival verification + build + append + durable write (see (a2))."""
    work = Workload(n_txs - 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    sigcache.CACHE.clear()
    sigcache.CACHE.enabled = after
    try:
        chain = Chain(open_store(tmp / "c"), work.config)
        chain.append(chain.build(work.publish(), work.pub, 1))
        chain.store.set_deferred(after, thread=False)
        batches = [work.round_txs(n_txs) for _ in range(n_blocks)]  # signing not timed
        t0 = time.perf_counter()
        for i, txs in enumerate(batches):
            for tx in txs:
                tx.verify()  # on arrival
            block = chain.build(txs, work.pub, 1000 * (i + 2))
            assert len(block.txs) == n_txs
            chain.append(block)
            if after and (i + 1) % WRITE_EVERY == 0:
                chain.store.write_pending()
        chain.store.flush()
        rate = n_blocks / (time.perf_counter() - t0)
        assert chain.store.durable_height() == n_blocks + 1
        chain.store.close()
        return rate
    finally:
        sigcache.CACHE.enabled = True
        shutil.rmtree(tmp, ignore_errors=True)


def bench_verify(n_blocks: int, n_txs: int) -> tuple[float, float, float, int]:
    """(seconds, blocks/s, txs/s, tx count) of verify_store over n_blocks of n_txs."""
    work = Workload(n_txs - 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        chain = Chain(open_store(tmp / "v"), work.config)
        chain.append(chain.build(work.publish(), work.pub, 1))
        for i in range(n_blocks - 1):
            chain.append(chain.build(work.round_txs(n_txs), work.pub, 1000 * (i + 2)))
        t0 = time.perf_counter()
        report = verify_store(chain.store)
        dt = time.perf_counter() - t0
        assert report.ok, report.failures
        chain.store.close()
        return dt, (report.height + 1) / dt, report.tx_count / dt, report.tx_count
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_blobs(size: int, count: int) -> tuple[float, float]:
    """(put MB/s, get MB/s) on a FileBlobStore for `count` blobs of `size` bytes."""
    rng = random.Random(size)
    datas = [rng.randbytes(size) for _ in range(count)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    try:
        store = FileBlobStore(tmp)
        t0 = time.perf_counter()
        keys = [store.put(d) for d in datas]
        put = size * count / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        for k in keys:
            assert store.get(k) is not None
        get = size * count / (time.perf_counter() - t0) / 1e6
        return put, get
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--txs", type=int, default=100, help="transactions per block in (a)")
    parser.add_argument("--verify-blocks", type=int, default=None)
    parser.add_argument(
        "--verify-txs",
        type=int,
        default=None,
        help="transactions per block in (b); default: 100, fewer if it would "
        "take more than --verify-budget seconds",
    )
    parser.add_argument("--verify-budget", type=float, default=120.0)
    args = parser.parse_args()

    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, "
        f"nproc {os.cpu_count()}, {platform.processor() or platform.machine()}"
    )
    append_blocks = 20 if args.quick else 200
    print(
        f"(a) append {append_blocks} blocks x {args.txs} txs "
        f"({args.txs - 1} task.record_update + 1 task.record_global)"
    )
    for mode in ("NORMAL", "FULL"):
        ba, ao = bench_append(append_blocks, args.txs, mode)
        print(
            f"    synchronous={mode:6s}: build+append {ba:8.1f} blocks/s "
            f"({ba * args.txs:9.0f} txs/s); append only (validate+store) {ao:8.1f} blocks/s "
            f"({ao * args.txs:9.0f} txs/s); load1 {os.getloadavg()[0]:.1f}"
        )

    path_blocks = 10 if args.quick else 60
    print(
        f"(a2) arrival verify + build + append + durable, {path_blocks} blocks x {args.txs} txs, "
        f"before/after alternating, {REPS} runs each"
    )
    rates: dict[bool, list[float]] = {False: [], True: []}
    loads: list[float] = []
    for _ in range(REPS):
        for after in (False, True):
            rates[after].append(bench_commit_path(path_blocks, args.txs, after))
            loads.append(os.getloadavg()[0])
    before, after_ = statistics.median(rates[False]), statistics.median(rates[True])
    print(
        f"    before {before:6.1f} blocks/s, after {after_:6.1f} blocks/s (medians of "
        f"{REPS}): {after_ / before:.2f}x; load1 {statistics.mean(loads):.1f}"
    )

    n_blocks = args.verify_blocks or (100 if args.quick else 1000)
    n_txs = args.verify_txs or (20 if args.quick else 100)
    if args.verify_txs is None and not args.quick:
        # Estimate from a small chain (state grows with the chain, so this is optimistic).
        probe_blocks = 100
        dt, *_ = bench_verify(probe_blocks, n_txs)
        est = dt * (n_blocks / probe_blocks) ** 2  # the state root is over the whole state
        while est > args.verify_budget and n_txs > 5:
            n_txs //= 2
            est /= 4
        print(
            f"    (probe: verifying {probe_blocks} blocks x 100 txs took {dt:.2f} s; "
            f"estimated budget fit: {n_txs} txs/block)"
        )
    dt, bps, tps, count = bench_verify(n_blocks, n_txs)
    print(
        f"(b) verify_store over {n_blocks} blocks x {n_txs} txs ({count} txs): {dt:.2f} s, "
        f"{bps:.1f} blocks/s, {tps:.0f} txs/s"
    )

    for label, size, count in (
        ("6.6 MB", 6_600_000, 3 if args.quick else 20),
        ("100 KB", 100_000, 20 if args.quick else 300),
    ):
        put, get = bench_blobs(size, count)
        print(f"(c) FileBlobStore {label} x {count}: put {put:8.1f} MB/s, get {get:8.1f} MB/s")


if __name__ == "__main__":
    main()
