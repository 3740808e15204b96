"""Benchmark: the per-message cost of typed messages (node.messages) on the vanilla messages.

For each message (a ``global`` carrying a model blob, a device's ``update``, a MEC's
``partial`` with its average, a ``partial`` forwarding 10 individual updates) it times:

* ``from_payload``  the typed check of the decoded map (what the daemon adds per message)
* ``to_payload``    the instance to its map (what sending adds)
* ``Codec.decode``  verifying and unpacking the same signed frame (the baseline: what every
                    message already costs), timed alternately with ``from_payload`` in
                    batches, so that load changes hit both alike

and prints µs per message, the ratio from_payload / Codec.decode, and the load average
next to each figure (the machine is shared: compare ratios, not absolute times).

Run: ``python bench/messages.py`` (``--batches N`` and ``--per-batch N`` to choose sizes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from node.codec import Codec
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.keys import NodeKey, Roster
from node.messages import from_payload, message_type, to_payload
from node.schemes.vanilla.messages import DeviceUpdate, GlobalModel, IndividualUpdate, Partial


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The digits MLP's tensors (64-64-10, the quickstart's model size)."""
    shapes = {"fc1.weight": (64, 64), "fc1.bias": (64,), "fc2.weight": (10, 64), "fc2.bias": (10,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _messages() -> dict[str, object]:
    rng = np.random.default_rng(0)
    key = NodeKey.from_seed(b"\x07" * 32)
    blob = rng.bytes(20_000)
    tx = Transaction.create(
        key,
        "task.record_update",
        1,
        {"task_id": "t", "round": 1, "blob": sha256(blob), "size": len(blob), "samples": 120},
    ).to_bytes()
    devices = [f"dev0-{i}" for i in range(10)]
    return {
        "global": GlobalModel(3, blob, 24.0),
        "update": DeviceUpdate(3, blob, tx, 0.31, 0.91),
        "partial": Partial(3, 1200, tuple(devices), (), (tx,) * 10, weights=_weights(rng)),
        "partial x10": Partial(
            3,
            1200,
            tuple(devices),
            (),
            (tx,) * 10,
            updates=tuple(IndividualUpdate(d, _weights(rng), 120) for d in devices),
        ),
    }


def _next_decode(codec: Codec, frames: Iterator[bytes]) -> object:
    return codec.decode(next(frames))


def _batch_s(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=21)
    parser.add_argument("--per-batch", type=int, default=500)
    args = parser.parse_args()
    keys = {n: NodeKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(("a", "b"))}
    roster = Roster({n: k.public_key for n, k in keys.items()})
    sender = Codec("a", keys["a"], roster)
    print(
        f"{'message':<12} {'from_payload µs':>16} {'to_payload µs':>14} "
        f"{'Codec.decode µs':>16} {'ratio':>7}  load"
    )
    for name, instance in _messages().items():
        tag, payload = message_type(instance), to_payload(instance)
        decoded = Codec("b", keys["b"], roster).decode(sender.encode(tag, payload)).payload
        receiver = Codec("b", keys["b"], roster)
        typed, untyped, sending = [], [], []
        for _ in range(args.batches):  # alternating, so that load changes hit both alike
            # the codec refuses replays: a fresh frame for every decode (made untimed)
            it = iter([sender.encode(tag, payload) for _ in range(args.per_batch)])
            untyped.append(_batch_s(partial(_next_decode, receiver, it), args.per_batch))
            typed.append(_batch_s(partial(from_payload, tag, decoded), args.per_batch))
            sending.append(_batch_s(partial(to_payload, instance), args.per_batch))
        t, u, s = (statistics.median(x) * 1e6 for x in (typed, untyped, sending))
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{name:<12} {t:16.2f} {s:14.2f} {u:16.2f} {t / u:7.3f}  {load}")


if __name__ == "__main__":
    main()
