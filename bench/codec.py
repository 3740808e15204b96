"""Benchmark: the wire codec on a full model (McMahan's CNN, 1,663,370 parameters).

Measures, over N repetitions (median time, MB/s and messages/s):

* ``encode_body``      msgpack of the payload with raw-array extension (no hashing, no signing)
* ``Codec.encode``     body + SHA-256 + Ed25519 sign + envelope
* ``Codec.decode``     size checks + envelope unpack + verify + body unpack into array views
* ``sha256(body)``     one SHA-256 pass over the body
* ``sign(digest)``     Ed25519 over the 44-byte domain||digest
* ``verify(digest)``   Ed25519 verification of that signature

and, as speed references in the same run, ``pickle.dumps``/``pickle.loads`` of the same
dict (our own local objects only; the codec never unpickles received data) and a raw copy
of the array bytes (``b"".join(a.tobytes() ...)``). Also a small-message (100-byte
payload) encode+decode rate.

Run: ``python bench/codec.py`` (``--quick`` for a short run, ``--reps N`` to choose N).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from node.codec import DOMAIN, Codec, _digest, encode_body
from node.keys import NodeKey, Roster
from node.learning.models import build_model, count_parameters
from node.learning.weights import get_weights

MB = 1e6


def measure(fn: Callable[[], Any], reps: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of `reps` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def row(name: str, times: list[float], nbytes: int | None) -> str:
    """One table line: median and min ms, MB/s (if nbytes given), ops/s."""
    med = statistics.median(times)
    mbps = f"{nbytes / med / MB:10.1f}" if nbytes else f"{'-':>10}"
    return f"{name:<40} {med * 1e3:10.3f} {min(times) * 1e3:10.3f} {mbps} {1.0 / med:12.1f}"


def main() -> None:
    """Parse arguments, run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30, help="repetitions per measurement")
    parser.add_argument("--small-reps", type=int, default=20000, help="small-message round trips")
    parser.add_argument("--model", default="cnn", help="model name (default: cnn)")
    parser.add_argument("--quick", action="store_true", help="short run (reps 8, small 3000)")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.small_reps = 8, 3000

    model = build_model(args.model, (1, 28, 28), 10, seed=0)
    weights = get_weights(model)
    n_params = count_parameters(model)
    raw_bytes = sum(a.nbytes for a in weights.values())
    payload = {"round": 1, "weights": weights, "samples": 6000, "loss": 0.5, "accuracy": 0.9}

    sender, receiver = NodeKey.generate(), NodeKey.generate()
    roster = Roster({"dev-a": sender.public_key, "mec-b": receiver.public_key})
    enc = Codec("dev-a", sender, roster)
    dec = Codec("mec-b", receiver, roster)

    body = encode_body(payload)
    frame = enc.encode("update", payload)
    # decode rejects replays, so prepare one distinct frame (fresh seq) per decode call.
    n_frames = args.reps + 2
    frames = [enc.encode("update", payload) for _ in range(n_frames)]
    frame_iter = iter(frames)
    msg = dec.decode(next(frame_iter))
    assert all(np.array_equal(msg.payload["weights"][k], v) for k, v in weights.items())
    digest = _digest("update", "dev-a", 0, body)
    assert len(digest) == len(DOMAIN) + 32
    sig = sender.sign(digest)
    verify_key = sender.signing_key.verify_key
    pickled = pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL)

    reps = args.reps
    results: list[tuple[str, list[float], int | None]] = [
        (
            "raw copy (b''.join(tobytes), 2 copies)",
            measure(lambda: b"".join(a.tobytes() for a in weights.values()), reps),
            raw_bytes,
        ),
        (
            "pickle.dumps (reference)",
            measure(lambda: pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL), reps),
            raw_bytes,
        ),
        ("pickle.loads (reference)", measure(lambda: pickle.loads(pickled), reps), raw_bytes),
        ("encode_body (msgpack+arrays)", measure(lambda: encode_body(payload), reps), raw_bytes),
        ("sha256(body)", measure(lambda: hashlib.sha256(body).digest(), reps), len(body)),
        (f"sign({len(digest)}-byte digest)", measure(lambda: sender.sign(digest), reps), None),
        (
            f"verify({len(digest)}-byte digest)",
            measure(lambda: verify_key.verify(digest, sig), reps),
            None,
        ),
        ("Codec.encode (full)", measure(lambda: enc.encode("update", payload), reps), raw_bytes),
        (
            "Codec.decode (full)",
            measure(lambda: dec.decode(next(frame_iter)), reps, warmup=1),
            raw_bytes,
        ),
    ]

    # Small messages: a 100-byte payload, encode + decode round trip.
    small = {"round": 1, "blob": os.urandom(100)}
    small_frame = enc.encode("hello", small)
    t0 = time.perf_counter()
    for _ in range(args.small_reps):
        dec.decode(enc.encode("hello", small))
    small_rt = (time.perf_counter() - t0) / args.small_reps
    t0 = time.perf_counter()
    for _ in range(args.small_reps):
        enc.encode("hello", small)
    small_enc = (time.perf_counter() - t0) / args.small_reps

    print(
        f"machine: {platform.platform()}, nproc={os.cpu_count()}, "
        f"python {platform.python_version()}"
    )
    print(
        f"model {args.model}: {n_params:,} parameters, {len(weights)} tensors, "
        f"raw arrays {raw_bytes / MB:.3f} MB, body {len(body) / MB:.3f} MB, "
        f"frame {len(frame) / MB:.3f} MB (+{len(frame) - raw_bytes} bytes overhead), "
        f"pickle {len(pickled) / MB:.3f} MB"
    )
    print(
        f"repetitions: {reps} (MB/s over the {raw_bytes / MB:.3f} MB of array data, "
        "sha256 over the body)"
    )
    print()
    header = f"{'operation':<40} {'median ms':>10} {'min ms':>10} {'MB/s':>10} {'msgs/s':>12}"
    print(header)
    print("-" * len(header))
    for name, times, nbytes in results:
        print(row(name, times, nbytes))
    print("-" * len(header))
    copy_med = statistics.median(results[0][1])
    for name, times, _ in results[3:]:
        if name.startswith(("Codec", "encode_body")):
            print(f"{name:<40} = {statistics.median(times) / copy_med:6.2f} x raw copy")
    print()
    print(
        f"small message ({len(small['blob'])}-byte payload, frame {len(small_frame)} bytes): "
        f"encode {small_enc * 1e6:.1f} us ({1 / small_enc:,.0f} msgs/s); "
        f"encode+decode {small_rt * 1e6:.1f} us ({1 / small_rt:,.0f} msgs/s) "
        f"over {args.small_reps} messages"
    )


if __name__ == "__main__":
    main()
