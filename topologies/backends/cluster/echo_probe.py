"""A round-trip probe through the nodes' own transport, for the cluster fidelity benchmark
(`bench/fidelity.py --cluster`): run inside two Mininet hosts, on one server or two.

How it works
------------
Both ends build what a daemon sends with: a `ZmqTransport` bound to the host's address on the
probed link, wrapped in `ShapedTransport` + `LinkShaper` (bandwidth left to the kernel's HTB,
as on the mininet backends) over the topology file given, so each frame waits its link's
delay and jitter at its sender. ``--role echo`` sends every frame it gets straight back;
``--role ping`` first sends until one comes back (ZeroMQ connects lazily), then sends
`--count` frames `--gap` s apart, one at a time, each timed with its own monotonic clock
(no clock is shared between servers), and prints ``RESULT`` and the round-trip times (ms) as
JSON; a last frame tells the echo to exit. Run: ``python -m
topologies.backends.cluster.echo_probe --role ping|echo --topology FILE --me A --peer B
--bind tcp://IP:PORT --peer-at tcp://IP:PORT``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np

from node.transport.shaping import LinkShaper, ShapedTransport
from node.transport.zmq import ZmqTransport
from topologies.spec import TopologySpec

FRAME = struct.Struct("!dI")
STOP = 0xFFFFFFFF
WARM_SEQ = 0
ECHO_IDLE_S = 120.0


def main(argv: list[str] | None = None) -> int:
    """Entry point (one end of the probe)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--role", choices=("ping", "echo"), required=True)
    ap.add_argument("--topology", type=Path, required=True, help="TopologySpec.to_dict() JSON")
    ap.add_argument("--me", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--bind", required=True, help="tcp://IP:PORT of this end")
    ap.add_argument("--peer-at", required=True, help="tcp://IP:PORT of the other end")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between pings")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    topology = TopologySpec.from_dict(json.loads(args.topology.read_text()))
    peers = {args.me: args.bind, args.peer: args.peer_at}
    inner = ZmqTransport(args.me, args.bind, peers, 1 << 20)
    shaper = LinkShaper(topology, args.me, np.random.default_rng(args.seed), bandwidth=False)
    transport = ShapedTransport(inner, shaper)
    try:
        if args.role == "echo":
            echo(transport, args.peer)
            return 0
        rtts = ping(transport, args.peer, args.count, args.gap)
        print("RESULT " + json.dumps([round(r, 4) for r in rtts]), flush=True)
        return 0
    finally:
        transport.flush(5.0)
        transport.close()


def echo(transport: ShapedTransport, peer: str) -> None:
    """Send every frame back until the stop frame (or `ECHO_IDLE_S` without one)."""
    while True:
        frame = transport.recv(ECHO_IDLE_S)
        if frame is None:
            return
        transport.send(peer, frame)
        if FRAME.unpack_from(frame)[1] == STOP:
            return


def ping(transport: ShapedTransport, peer: str, count: int, gap_s: float) -> list[float]:
    """Round-trip times (ms) of `count` frames, sent one at a time after a warm-up echo."""
    deadline = time.monotonic() + 60.0
    while True:  # warm-up: until ZeroMQ has connected both ways
        transport.send(peer, FRAME.pack(time.monotonic(), WARM_SEQ))
        got = transport.recv(1.0)
        if got is not None:
            break
        if time.monotonic() > deadline:
            raise SystemExit("echo_probe: no echo within 60 s")
    while transport.recv(0.5) is not None:  # late warm-up echoes
        pass
    rtts: list[float] = []
    for seq in range(1, count + 1):
        transport.send(peer, FRAME.pack(time.monotonic(), seq) + b"\0" * 64)
        while True:
            got = transport.recv(10.0)
            if got is None:
                break  # lost (a link with loss): no sample
            sent_at, got_seq = FRAME.unpack_from(got)
            if got_seq == seq:
                rtts.append((time.monotonic() - sent_at) * 1000)
                break
        time.sleep(gap_s)
    transport.send(peer, FRAME.pack(time.monotonic(), STOP))
    return rtts


if __name__ == "__main__":
    sys.exit(main())
