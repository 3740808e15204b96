"""Benchmark: gossip messages a D2D group sends to spread one round's updates.

Every node of a full mesh (a MEC's D2D group: every device a neighbour of every other)
publishes one item; the sans-IO gossip cores (`node.gossip.GossipNode`) run in the seeded
discrete-event network of `tests/sim/test_gossip.py` (per-link delay 2–50 ms, heartbeats
every 0.5 s, no loss) for `--seconds`. Printed per group size and `lazy_fanout`: the
messages sent by type (Item, IHave, IWant), the duplicate item copies honest nodes
received, and whether every node got every item. The two-layer scheme's settings: fanout
2, ttl 8; `lazy_fanout` None (every neighbour not known to hold an item, each heartbeat)
against the scheme's 6 (gossipsub's D_lazy), with the ratio. Each message costs its
receiver an Ed25519 check and its sender a signature, so the count is what decides a
group's CPU in a real run.

Run: ``python bench/gossip_messages.py [--sizes 10 50] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.gossip import GossipConfig, Send
from tests.sim.test_gossip import GossipNet


def full_mesh(n: int) -> dict[str, list[str]]:
    ids = [f"n{i}" for i in range(n)]
    return {a: [b for b in ids if b != a] for a in ids}


def spread(n: int, lazy: int | None, seconds: float, seed: int) -> dict[str, Any]:
    """One run: every node publishes one 200-byte item at the start."""
    net = GossipNet(full_mesh(n), GossipConfig(fanout=2, ttl=8, lazy_fanout=lazy), seed=seed)
    sent: Counter[str] = Counter()
    apply = net._apply

    def counting(src: str, actions: list[Any], serving: bool = False) -> None:
        sent.update(type(a.message).__name__ for a in actions if isinstance(a, Send))
        apply(src, actions, serving)

    net._apply = counting  # type: ignore[method-assign]
    ids = [net.publish(0.01 * i, f"n{i}", 0) for i in range(n)]
    net.run(seconds, max_events=10_000_000)
    complete = all(net.delivered[nid][i] or net.origin[i] == nid for nid in net.graph for i in ids)
    return {"sent": sent, "duplicates": net.dup_to_honest, "complete": complete}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(f"full mesh, one item per node, fanout 2, ttl 8, {args.seconds:g} s of gossip")
    print(f"{'nodes':>6}{'lazy':>6}{'Item':>9}{'IHave':>9}{'IWant':>8}{'dups':>8}  all got all")
    for n in args.sizes:
        totals = {}
        for lazy in (None, 6):
            r = spread(n, lazy, args.seconds, args.seed)
            s = r["sent"]
            totals[lazy] = sum(s.values())
            print(
                f"{n:>6}{lazy!s:>6}{s['Item']:>9}{s['IHave']:>9}{s['IWant']:>8}"
                f"{r['duplicates']:>8}  {r['complete']}"
            )
        print(f"{'':>6} messages, lazy 6 / all: {totals[6] / totals[None]:.2f}x")


if __name__ == "__main__":
    main()
