"""PBFT consensus benchmark: commit latency of real replica processes, and the protocol's cost.

    .venv/bin/python bench/consensus.py [--quick] [--commits N] [--sizes 4,7,10]
        [--no-verify-cache] [--sync-append] [--writer-thread] [--no-baseline] [--pipeline K]

Workload: candidate blocks of 10 transactions (9 ``task.record_update`` by registered devices,
carrying 32-byte blob hashes, never weights, plus the publisher's ``task.record_global`` that
closes the round). Block 1 opens with ``task.publish``; it and the next warm-up blocks are
committed before timing starts. Blocks are built once by a single-writer chain of the same
genesis (the genesis state does not depend on the validators), then stripped of their
certificate: those bytes are the PBFT requests and their digests are the block hashes.

(1) Real processes: n replica processes (``bench/consensus.py --replica CONFIG``, no torch),
    each a ZmqTransport on its own 127.1.0.x address and free port, a PbftReplica with
    `ledger_config`, a timer heap on time.monotonic and a loop recv -> handle -> actions. On
    Commit a replica appends the certified block to its own Chain (SQLite in a temp dir) and
    then tells the driver "committed seq digest". The driver submits one block at a time to
    the primary r0 and waits for all n reports before the next. Latency = submit -> the
    2f+1-th replica's report (the primary's report is shown too), so it includes the
    driver's two loopback hops and one ledger append. Messages = PBFT frames sent by all
    replicas (each reports its count at the end) / commits, warm-up included.
    Variants, run alternately for each n (the timed commits split into REPS runs each, in
    turn, so a change of machine load hits them alike), each line with the 1-min load
    average measured over its runs:
      now        Ed25519 checks through node.sigcache (once per message per process) and
                 deferred ledger writes (Chain.append returns once the block is in the
                 store's overlay; the replica's loop writes pending blocks when no frame
                 is waiting, `write_pending`) -- the code as it is;
      before     the baseline: verify cache off, every append one synchronous SQLite
                 transaction inside the commit (the behaviour before issue 12 item 4);
      pipelined  as `now`, with the driver keeping K blocks in flight (the primary orders
                 n+1 while n prepares, inside the PBFT watermarks): latency per block and
                 commits per second.
    --no-verify-cache / --sync-append change `now` (to isolate one of the two changes);
    --writer-thread makes `now` write from the store's writer thread instead;
    --no-baseline skips `before`; --pipeline 0 skips `pipelined`.
(2) In memory: the same n cores in one process, messages delivered through a FIFO queue until
    idle, same blocks, no ledger append: CPU ms and messages per commit.
(3) Targets of the PBFT issue (median commit with real processes): <= 10 ms at n=4, <= 25 ms
    at n=7, <= 50 ms at n=10. PASS/MISS is a report, not an assertion.

Child processes run in their own session and are stopped by PID (SIGTERM, then SIGKILL),
also on Ctrl-C or errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node import sigcache
from node.consensus.actions import (
    Action,
    Broadcast,
    Commit,
    PbftConfig,
    Send,
    StartTimer,
    StopTimer,
)
from node.consensus.ledger import certified_block, ledger_config
from node.consensus.messages import open_envelope
from node.consensus.pbft import PbftReplica
from node.contracts.runtime import Genesis
from node.core.block import Block
from node.core.encoding import sha256
from node.core.finality import Committee, SingleWriter
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import open_store

TASK = "bench"
TXS_PER_BLOCK = 10
WARMUP = 5  # commits before timing (block 1 with task.publish among them)
# a COMMIT after the decision, a PREPARE/COMMIT below a new stable checkpoint
LATE_REASONS = frozenset({"stale", "out_of_window"})
TARGET_MS = {4: 10.0, 7: 25.0, 10: 50.0}
REPS = 2  # alternating runs per variant and n
MAX_FRAME = 4 * 1024 * 1024
COMMIT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0

# frame tags (plain frames; the PBFT messages inside are signed by the core)
MSG = b"M"  # replica -> replica: MSG + sender index byte + signed PBFT message
REQ = b"R"  # driver -> primary: REQ + candidate block bytes
STOP = b"S"  # driver -> replica: report and exit
NOOP = b"N"  # replica -> replica at start-up, to open the connections early
HELLO = b"H"  # replica -> driver: bound and ready
DONE = b"C"  # replica -> driver: committed (json)
STATS = b"T"  # replica -> driver: final counters (json)


def replica_key(index: int) -> NodeKey:
    """The deterministic key of replica `index`."""
    return NodeKey.from_seed(sha256(b"bench/consensus/replica/%d" % index))


def pct(values: list[float], q: float) -> float:
    """The nearest-rank `q`-quantile (0 < q <= 1)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


# ---- workload ------------------------------------------------------------------------------


class Workload:
    """Pre-built candidate blocks (certificate stripped) of one FL round each."""

    def __init__(self, n_blocks: int, n_devices: int = TXS_PER_BLOCK - 1) -> None:
        self.pub = NodeKey.from_seed(sha256(b"bench/consensus/publisher"))
        self.devices = [
            NodeKey.from_seed(sha256(b"bench/consensus/device/%d" % i)) for i in range(n_devices)
        ]
        members = {"pub": (self.pub.public_key, "publisher")}
        members.update({f"dev{i}": (k.public_key, "device") for i, k in enumerate(self.devices)})
        self.genesis = Genesis(members, {"pub": 10**9}, "bench-consensus")
        self._nonce: dict[bytes, int] = {}
        self.requests: list[bytes] = []
        self.digests: list[bytes] = []
        tmp = Path(tempfile.mkdtemp(prefix="bench-consensus-build-"))
        try:
            builder = Chain(
                open_store(tmp), ChainConfig(self.genesis, SingleWriter(self.pub.public_key))
            )
            for i in range(n_blocks):
                txs = [self._publish()] if i == 0 else []
                txs += self._round(i + 1)
                block = builder.build(txs, self.pub, 1000 * (i + 1))
                assert len(block.txs) == len(txs), "a workload transaction was left out"
                builder.append(block)
                bare = Block(block.header, block.txs, ())
                self.requests.append(bare.to_bytes())
                self.digests.append(bare.hash)
            builder.store.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def chain_config(self, keys: list[NodeKey]) -> ChainConfig:
        """The replicas' chain: validators are their keys, quorum 2f+1."""
        return ChainConfig(self.genesis, Committee.bft(tuple(k.public_key for k in keys)))

    def _tx(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Transaction:
        nonce = self._nonce.get(key.public_key, 0) + 1
        self._nonce[key.public_key] = nonce
        return Transaction.create(key, type_, nonce, payload)

    def _publish(self) -> Transaction:
        payload = {
            "task_id": TASK,
            "reward_pool": 1000,
            "rounds": 100_000,
            "model": "cnn",
            "dataset": "mnist",
        }
        return self._tx(self.pub, "task.publish", payload)

    def _round(self, r: int) -> list[Transaction]:
        txs = [
            self._tx(
                d,
                "task.record_update",
                {
                    "task_id": TASK,
                    "round": r,
                    "blob": sha256(b"update/%d/%d" % (r, i)),
                    "size": 6_600_000,
                    "samples": 100,
                },
            )
            for i, d in enumerate(self.devices)
        ]
        payload = {
            "task_id": TASK,
            "round": r,
            "blob": sha256(b"global/%d" % r),
            "size": 6_600_000,
            "accuracy": 0.9,
            "contributors": [f"dev{i}" for i in range(len(self.devices))],
        }
        txs.append(self._tx(self.pub, "task.record_global", payload))
        return txs


# ---- replica process ------------------------------------------------------------------------


class Timers:
    """Named one-shot timers on time.monotonic (a heap with lazy cancellation)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, int] = {}
        self._gen = 0

    def start(self, name: str, delay_s: float) -> None:
        self._gen += 1
        self._live[name] = self._gen
        heapq.heappush(self._heap, (time.monotonic() + delay_s, self._gen, name))

    def stop(self, name: str) -> None:
        self._live.pop(name, None)

    def due(self, now: float) -> list[str]:
        """Names of the live timers that expired by `now` (removed)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, gen, name = heapq.heappop(self._heap)
            if self._live.get(name) == gen:
                del self._live[name]
                out.append(name)
        return out

    def wait_s(self, now: float, cap: float) -> float:
        """Seconds until the next live timer, at most `cap`."""
        while self._heap and self._live.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)
        return min(cap, max(0.0, self._heap[0][0] - now)) if self._heap else cap


def replica_main(config_json: str) -> None:
    """One replica process: ZeroMQ + PbftReplica + timers + its own chain."""
    from node.transport.zmq import ZmqTransport

    cfg = json.loads(config_json)
    index: int = cfg["index"]
    ids: list[str] = cfg["ids"]
    me = ids[index]
    key = replica_key(index)
    replicas = [(rid, bytes.fromhex(pk)) for rid, pk in zip(ids, cfg["keys"], strict=True)]
    sigcache.CACHE.enabled = cfg["verify_cache"]
    core = PbftReplica(me, key, replicas, ledger_config(PbftConfig()))
    chain = Chain(open_store(Path(cfg["dir"])), ChainConfig.from_dict(cfg["chain"]))
    chain.store.set_deferred(cfg["writer"] != "sync", thread=cfg["writer"] == "thread")
    peers = dict(zip(ids, cfg["endpoints"], strict=True))
    peers["driver"] = cfg["driver"]
    transport = ZmqTransport(me, cfg["endpoints"][index], peers, MAX_FRAME)
    others = [rid for rid in ids if rid != me]
    prefix = MSG + bytes([index])
    timers = Timers()
    pbft_frames = 0
    pbft_bytes = 0
    append_ms: list[float] = []
    for rid in others:
        transport.send(rid, NOOP)
    transport.send("driver", HELLO + me.encode())
    cpu0 = time.process_time()

    def execute(actions: list[Action]) -> None:
        nonlocal pbft_frames, pbft_bytes
        for act in actions:
            if isinstance(act, Send):
                transport.send(act.dst, prefix + act.data)
                pbft_frames += 1
                pbft_bytes += len(prefix) + len(act.data)
            elif isinstance(act, Broadcast):
                frame = prefix + act.data
                for rid in others:
                    transport.send(rid, frame)
                pbft_frames += len(others)
                pbft_bytes += len(others) * len(frame)
            elif isinstance(act, Commit):
                t0 = time.perf_counter()
                chain.append(certified_block(act))
                append_ms.append(1000 * (time.perf_counter() - t0))
                note = {"id": me, "seq": act.seq, "digest": act.digest.hex()}
                transport.send("driver", DONE + json.dumps(note).encode())
            elif isinstance(act, StartTimer):
                timers.start(act.name, act.delay_s)
            elif isinstance(act, StopTimer):
                timers.stop(act.name)

    while True:
        now = time.monotonic()
        for name in timers.due(now):
            execute(core.on_timer(name, now))
        wait_s = timers.wait_s(time.monotonic(), 1.0)
        if chain.store.pending_blocks() and cfg["writer"] == "idle":
            frame = transport.recv(0)
            if frame is None:  # nothing to do: the durable write now
                chain.store.write_pending()
                continue
        else:
            frame = transport.recv(wait_s)
        if frame is None:
            continue
        tag = frame[:1]
        if tag == MSG and len(frame) > 2 and frame[1] < len(ids):
            execute(core.handle(ids[frame[1]], frame[2:], time.monotonic()))
        elif tag == REQ:
            execute(core.propose(frame[1:], time.monotonic()))
        elif tag == STOP:
            break
    stats = {
        "id": me,
        "pbft_frames": pbft_frames,
        "pbft_bytes": pbft_bytes,
        "dropped": dict(transport.stats.dropped),
        "commits": len(append_ms),
        "height": chain.height,
        "append_ms_median": statistics.median(append_ms) if append_ms else 0.0,
        "cpu_s": time.process_time() - cpu0,
        "core_stats": dict(core.stats),
        "view": core.view,
        "torch": "torch" in sys.modules,
    }
    chain.store.flush()
    stats["durable"] = chain.store.durable_height()
    stats["write_batches"] = chain.store.batches
    stats["verify_hits"] = sigcache.CACHE.hits
    transport.send("driver", STATS + json.dumps(stats).encode())
    chain.store.close()
    transport.close()  # LINGER lets the report go out


# ---- driver: real processes -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """What the replicas do differently in one series of runs."""

    name: str
    verify_cache: bool = True
    writer: str = "idle"  # sync (in the commit) | idle (when the loop has nothing to do) | thread
    depth: int = 1  # blocks the driver keeps in flight


@dataclass
class ProcResult:
    """What one real-process run measured (or several of one variant, merged)."""

    n: int
    quorum_ms: list[float]
    primary_ms: list[float]
    all_ms: list[float]
    stats: list[dict[str, Any]] = field(default_factory=list)
    total_commits: int = 0
    timed_s: float = 0.0  # wall time of the timed commits
    loads: list[float] = field(default_factory=list)  # 1-min load average after each run

    def merge(self, other: ProcResult) -> None:
        """Add another run of the same variant."""
        self.quorum_ms += other.quorum_ms
        self.primary_ms += other.primary_ms
        self.all_ms += other.all_ms
        self.stats += other.stats
        self.total_commits += other.total_commits
        self.timed_s += other.timed_s
        self.loads += other.loads


class Cluster:
    """n replica child processes and the driver's own ZeroMQ endpoint."""

    def __init__(self, n: int, work: Workload, tmp: Path, variant: Variant) -> None:
        from node.transport.zmq import ZmqTransport
        from topologies.backends.local import free_port, loopback_address

        self.n = n
        self.ids = [f"r{i}" for i in range(n)]
        keys = [replica_key(i) for i in range(n)]
        addrs = [loopback_address(i) for i in range(n + 1)]
        self.endpoints = [f"tcp://{a}:{free_port(a)}" for a in addrs[:n]]
        driver_ep = f"tcp://{addrs[n]}:{free_port(addrs[n])}"
        self.transport = ZmqTransport(
            "driver", driver_ep, dict(zip(self.ids, self.endpoints, strict=True)), MAX_FRAME
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        chain = work.chain_config(keys).to_dict()
        argv = [sys.executable, str(Path(__file__).resolve()), "--replica"]
        for i in range(n):
            cfg = {
                "index": i,
                "ids": self.ids,
                "keys": [k.public_key.hex() for k in keys],
                "endpoints": self.endpoints,
                "driver": driver_ep,
                "chain": chain,
                "dir": str(tmp / self.ids[i]),
                "verify_cache": variant.verify_cache,
                "writer": variant.writer,
            }
            log_path = tmp / f"{self.ids[i]}.log"
            self.logs.append(log_path)
            with log_path.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [*argv, json.dumps(cfg)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            code = p.poll()
            if code is not None:
                tail = self.logs[i].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"replica {self.ids[i]} exited with {code}:\n{tail}")

    def recv_until(self, tag: bytes, count: int, timeout_s: float) -> list[tuple[float, bytes]]:
        """`count` (arrival perf_counter, payload) of frames with `tag` (others are an error),
        or RuntimeError at the deadline."""
        got: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out waiting for {count} {tag!r} frames ({len(got)})")
            frame = self.transport.recv(min(left, 0.5))
            if frame is None:
                self.check_alive()
            elif frame[:1] == tag:
                got.append((time.perf_counter(), frame[1:]))
            else:
                raise RuntimeError(f"unexpected frame {frame[:40]!r}")
        return got

    def stop(self) -> None:
        """Terminate every child by PID, then kill those still running; close the socket."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.transport.close()


def run_processes(n: int, work: Workload, commits: int, variant: Variant) -> ProcResult:
    """Start n replicas, commit WARMUP + `commits` blocks (up to `variant.depth` in flight),
    collect counters."""
    f = (n - 1) // 3
    quorum = 2 * f + 1
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-consensus-n{n}-"))
    cluster: Cluster | None = None
    result = ProcResult(n, [], [], [])
    try:
        cluster = Cluster(n, work, tmp, variant)
        cluster.recv_until(HELLO, n, START_TIMEOUT_S)
        total = WARMUP + commits
        sent: dict[int, float] = {}  # seq -> submit time, while in flight
        arrivals: dict[int, dict[str, float]] = {}
        next_block = 0
        timed_from = 0.0
        done = 0
        while done < total:
            depth = 1 if next_block < WARMUP else variant.depth  # warm up one at a time
            while next_block < total and len(sent) < depth:
                if next_block == WARMUP:
                    if sent:
                        break  # the warm-up drains before timing starts
                    timed_from = time.perf_counter()
                sent[next_block + 1] = time.perf_counter()
                cluster.transport.send("r0", REQ + work.requests[next_block])
                next_block += 1
            for t, raw in cluster.recv_until(DONE, 1, COMMIT_TIMEOUT_S):
                note = json.loads(raw)
                seq = note["seq"]
                if seq not in sent or note["digest"] != work.digests[seq - 1].hex():
                    raise RuntimeError(f"unexpected report {note}")
                got = arrivals.setdefault(seq, {})
                if note["id"] in got:
                    raise RuntimeError(f"commit {seq}: duplicate report from {note['id']}")
                got[note["id"]] = t
                if len(got) < n:
                    continue
                t0 = sent.pop(seq)
                del arrivals[seq]
                done += 1
                if seq > WARMUP:
                    times = sorted(1000 * (x - t0) for x in got.values())
                    result.quorum_ms.append(times[quorum - 1])
                    result.primary_ms.append(1000 * (got["r0"] - t0))
                    result.all_ms.append(times[-1])
        result.timed_s = time.perf_counter() - timed_from
        result.total_commits = total
        for rid in cluster.ids:
            cluster.transport.send(rid, STOP)
        result.stats = [json.loads(raw) for _, raw in cluster.recv_until(STATS, n, 30.0)]
        result.loads.append(os.getloadavg()[0])
        return result
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- in memory ------------------------------------------------------------------------------


@dataclass
class MemResult:
    """What the in-memory run measured."""

    n: int
    cpu_ms: list[float]
    wall_ms: list[float]
    frames: int
    commits: int


def run_memory(n: int, work: Workload, commits: int, isolated: bool) -> MemResult:
    """The same cores in one process, delivering through a FIFO queue until idle.

    The cores memoise envelope parsing and Ed25519 verification process-wide, so in one
    process a broadcast is verified once for all recipients. `isolated` clears those caches
    before every delivery, so each replica pays for verifying what it receives, as it does
    in its own process (and a little more: it also re-parses what it had parsed before).
    """
    ids = [f"r{i}" for i in range(n)]
    keys = [replica_key(i) for i in range(n)]
    replicas = [(rid, k.public_key) for rid, k in zip(ids, keys, strict=True)]
    config = ledger_config(PbftConfig())
    cores = {rid: PbftReplica(rid, k, replicas, config) for rid, k in zip(ids, keys, strict=True)}
    queue: deque[tuple[str, str, bytes]] = deque()
    frames = 0
    committed = dict.fromkeys(ids, 0)
    result = MemResult(n, [], [], 0, 0)

    def enqueue(src: str, actions: list[Action]) -> None:
        nonlocal frames
        for act in actions:
            if isinstance(act, Send):
                queue.append((src, act.dst, act.data))
                frames += 1
            elif isinstance(act, Broadcast):
                for dst in ids:
                    if dst != src:
                        queue.append((src, dst, act.data))
                        frames += 1
            elif isinstance(act, Commit):
                committed[src] += 1
            # timers never expire here: every request commits before its timeout

    total = WARMUP + commits
    for i in range(total):
        c0, w0 = time.process_time(), time.perf_counter()
        enqueue("r0", cores["r0"].propose(work.requests[i], time.monotonic()))
        while queue:
            src, dst, data = queue.popleft()
            if isolated:
                open_envelope.cache_clear()
                sigcache.CACHE.clear()
            enqueue(dst, cores[dst].handle(src, data, time.monotonic()))
        c1, w1 = time.process_time(), time.perf_counter()
        if any(c != i + 1 for c in committed.values()):
            raise RuntimeError(f"in-memory commit {i + 1} incomplete: {committed}")
        if i >= WARMUP:
            result.cpu_ms.append(1000 * (c1 - c0))
            result.wall_ms.append(1000 * (w1 - w0))
    result.frames, result.commits = frames, total
    return result


# ---- report ---------------------------------------------------------------------------------


def machine() -> str:
    """nproc, load, platform and library versions."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    import zmq

    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"nproc={os.cpu_count()} (usable {affinity}), load avg {load} (1/5/15 min), "
        f"{platform.platform()}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}"
    )


def _print_proc(r: ProcResult, v: Variant) -> None:
    """One line of table [1] and its notes."""
    n = r.n
    frames = sum(s["pbft_frames"] for s in r.stats)
    cpu = statistics.mean(1000 * s["cpu_s"] / max(1, s["commits"]) for s in r.stats)
    append = statistics.median(s["append_ms_median"] for s in r.stats)
    batches = sum(s["write_batches"] for s in r.stats)
    per_write = f"{sum(s['commits'] for s in r.stats) / batches:.1f}" if batches else "-"
    med = statistics.median(r.quorum_ms)
    target = TARGET_MS.get(n) if v.depth == 1 else None  # targets: one block at a time
    verdict = "-" if target is None else f"<= {target:g} ms {'PASS' if med <= target else 'MISS'}"
    rate = len(r.quorum_ms) / r.timed_s if r.timed_s > 0 else 0.0
    print(
        f"{n:>4} {v.name:>9} {len(r.quorum_ms):>7} {med:>8.2f} "
        f"{pct(r.quorum_ms, 0.95):>8.2f} {statistics.median(r.primary_ms):>8.2f} "
        f"{statistics.median(r.all_ms):>8.2f} {rate:>9.1f} {frames / r.total_commits:>11.1f} "
        f"{cpu:>10.2f} {append:>7.2f} {per_write:>9} {statistics.mean(r.loads):>5.1f}  {verdict}"
    )
    late: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for s in r.stats:
        for reason, count in s["core_stats"].items():
            (late if reason in LATE_REASONS else other)[reason] += count
        other.update({f"transport_{k}": v for k, v in s["dropped"].items()})
    if other or any(s["view"] for s in r.stats):
        views = sorted({s["view"] for s in r.stats})
        print(f"     note n={n} {v.name}: other drop counters {dict(other)}, views {views}")
    if any(s["torch"] for s in r.stats):
        print(f"     note n={n}: torch was imported in a replica process")
    if any(s["durable"] != s["height"] for s in r.stats):
        print(f"     note n={n} {v.name}: a replica's durable height differs from its chain's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=4 only, 30 commits")
    parser.add_argument("--commits", type=int, default=None, help="timed commits per n")
    parser.add_argument("--sizes", default=None, help="replica counts, e.g. 4,7,10")
    parser.add_argument(
        "--no-verify-cache", action="store_true", help="`now` verifies every signature again"
    )
    parser.add_argument(
        "--sync-append", action="store_true", help="`now` appends synchronously in the commit"
    )
    parser.add_argument(
        "--writer-thread", action="store_true", help="`now` writes from a writer thread"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the `before` runs")
    parser.add_argument(
        "--pipeline", type=int, default=4, metavar="K", help="blocks in flight (0: skip)"
    )
    parser.add_argument("--replica", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        replica_main(args.replica)
        return
    # run the finally blocks that stop the children, also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sizes = [4] if args.quick else [4, 7, 10]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    commits = args.commits or (30 if args.quick else 200)

    t0 = time.perf_counter()
    work = Workload(WARMUP + commits)
    build_s = time.perf_counter() - t0
    sizes_b = sorted(len(r) for r in work.requests[1:])
    print("PBFT consensus benchmark (bench/consensus.py" + (" --quick)" if args.quick else ")"))
    print(f"machine: {machine()}")
    cfg = PbftConfig()
    print(
        f"workload: {commits} timed commits per n after {WARMUP} warm-up commits (block 1 opens "
        f"with task.publish); {TXS_PER_BLOCK} txs/block (9 task.record_update with blob hashes "
        f"+ 1 task.record_global), {sizes_b[len(sizes_b) // 2]} bytes/block; "
        f"built in {build_s:.1f} s"
    )
    print(
        f"PbftConfig: checkpoint_interval={cfg.checkpoint_interval}, "
        f"log_window={cfg.log_window}, digest=block hash; one block in flight at a time"
    )

    writer = "sync" if args.sync_append else "thread" if args.writer_thread else "idle"
    now = Variant("now", verify_cache=not args.no_verify_cache, writer=writer)
    variants = [now]
    if not args.no_baseline:
        variants.append(Variant("before", verify_cache=False, writer="sync"))
    if args.pipeline > 0:
        variants.append(dataclasses.replace(now, name="pipelined", depth=args.pipeline))
    reps = REPS if commits >= 2 * REPS else 1

    print()
    print("[1] real processes: n replica processes, ZeroMQ on loopback 127.1.0.x, no shaping")
    print("    block submitted to the primary r0; latency = submit -> 2f+1-th replica reports the")
    print("    block appended to its chain (r0's own report and the n-th report alongside);")
    print(f"    variants {', '.join(v.name for v in variants)} alternate, {reps} runs each per n")
    head = (
        f"{'n':>4} {'variant':>9} {'commits':>7} {'median':>8} {'p95':>8} {'r0 med':>8} "
        f"{'all med':>8} {'commits/s':>9} {'msgs/commit':>11} {'cpu/commit':>10} "
        f"{'append':>7} {'blk/write':>9} {'load1':>5}  target"
    )
    print(head)
    proc_results: dict[tuple[int, str], ProcResult] = {}
    for n in sizes:
        for rep in range(reps):
            share = commits // reps + (1 if rep < commits % reps else 0)
            for v in variants:
                r = run_processes(n, work, share, v)
                if (n, v.name) in proc_results:
                    proc_results[n, v.name].merge(r)
                else:
                    proc_results[n, v.name] = r
        for v in variants:
            _print_proc(proc_results[n, v.name], v)
        base = proc_results.get((n, "before"))
        if base is not None:
            mine = proc_results[n, "now"]
            ratio = statistics.median(mine.quorum_ms) / statistics.median(base.quorum_ms)
            ratio95 = pct(mine.quorum_ms, 0.95) / pct(base.quorum_ms, 0.95)
            print(f"     n={n}: now/before median {ratio:.2f}x, p95 {ratio95:.2f}x")
    print("    (ms; cpu/commit = CPU ms per commit of one replica process, mean over replicas;")
    print("     append = median Chain.append of the certified block per replica, included above;")
    print("     blk/write = blocks per SQLite transaction of the writer thread, '-': synchronous;")
    print("     load1 = mean 1-min load average after this variant's runs)")

    print()
    print("[2] in memory: the same n cores in one process, zero-latency FIFO queue, no ledger")
    print(
        f"{'n':>4} {'caches':>9} {'commits':>7} {'cpu med':>8} {'cpu p95':>8} {'cpu mean':>8} "
        f"{'per replica':>11} {'msgs/commit':>11} {'wall med':>8}"
    )
    for n in sizes:
        for isolated in (True, False):
            m = run_memory(n, work, commits, isolated)
            print(
                f"{n:>4} {'isolated' if isolated else 'shared':>9} {len(m.cpu_ms):>7} "
                f"{statistics.median(m.cpu_ms):>8.2f} {pct(m.cpu_ms, 0.95):>8.2f} "
                f"{statistics.mean(m.cpu_ms):>8.2f} {statistics.mean(m.cpu_ms) / n:>11.2f} "
                f"{m.frames / m.commits:>11.1f} {statistics.median(m.wall_ms):>8.2f}"
            )
    print("    (CPU ms of this process per commit, all n replicas together; per replica = mean/n;")
    print("     isolated = parse/verify caches cleared before each delivery, as in separate")
    print("     processes; shared = one cache for all n cores, each broadcast verified once)")

    print()
    print("[3] targets (median commit latency, real processes, 2f+1-th replica, variant now):")
    for n in sizes:
        r = proc_results[n, "now"]
        med, p95 = statistics.median(r.quorum_ms), pct(r.quorum_ms, 0.95)
        load = statistics.mean(r.loads)
        target = TARGET_MS.get(n)
        if target is None:
            print(f"    n={n:<3} median {med:7.2f} ms  p95 {p95:7.2f} ms  (no target)")
        else:
            mark = "PASS" if med <= target else "MISS"
            print(
                f"    n={n:<3} median {med:7.2f} ms  p95 {p95:7.2f} ms  target <= {target:g} ms  "
                f"{mark}  (load1 {load:.1f})"
            )
    print(f"    machine: {machine()}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (replica processes stopped)", file=sys.stderr)
        sys.exit(130)
