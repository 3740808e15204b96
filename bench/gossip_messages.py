"""Benchmark: gossip messages and item copies a D2D group sends to spread one round's updates.

Every node of a full mesh (a MEC's D2D group: every device a neighbour of every other)
publishes one item (an update, `--item-kb`); the sans-IO gossip cores
(`node.gossip.GossipNode`) run in the seeded discrete-event network of
`tests/sim/test_gossip.py` (per-link delay 2–50 ms, no loss, heartbeats every
`--heartbeat` s; the defaults of the heartbeat and the pull timers are the two-layer
scheme's). Each node sends one message at a time at `--uplink-mbit` (its messages
queue behind each other), so a large item takes its size's time and an IHAVE can overtake
it — as on a real D2D link, and worse on a CPU-starved machine (try a low rate).

Printed per group size and setting: the messages sent by type (Item, IHave, IWant), the
item copies honest nodes received again (duplicates) and the item megabytes sent, whether
every node got every item and when the last one did. The settings, all with the two-layer
scheme's fanout 2 and ttl 8:
- ``lazy all``: IHAVE to every neighbour not known to hold an item, IWANT at once;
- ``lazy 6``: IHAVE to 6 neighbours a heartbeat (gossipsub's D_lazy), IWANT at once;
- ``lazy 6 + delay``: also hold an IWANT back `--want-delay` s for a pushed copy
  (Plumtree's lazy-push timer) and double the wait of each further ask (the two-layer
  scheme's settings).
Each message costs its receiver an Ed25519 check and its sender a signature, and each item
copy its size in bandwidth and memory, so these counts decide a group's cost in a real run.

Every neighbour told anything in a heartbeat gets one IHAVE with a ttl per id, TTL upgrades
included. Measured (2-core machine, defaults): at 50 nodes, 29,868 / 9,244 / 8,503 IHAVEs
and 7,146 / 6,395 / 5,255 item copies for the three settings, every node getting every
item in about 5–7 s; the held-back pull costs a 10-node group about 3 s more to fill in
what the push missed (its LMUC blocks are pulled at once, see the scheme).

Run: ``python bench/gossip_messages.py [--sizes 10 50] [--seconds 20] [--uplink-mbit 50]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.gossip import Deliver, GossipConfig, Item, Send
from node.gossip.messages import encode
from tests.sim.test_gossip import GossipNet


def full_mesh(n: int) -> dict[str, list[str]]:
    ids = [f"n{i}" for i in range(n)]
    return {a: [b for b in ids if b != a] for a in ids}


def spread(n: int, config: GossipConfig, args: argparse.Namespace) -> dict[str, Any]:
    """One run: every node publishes one item in the first `0.01 * n` seconds."""
    net = GossipNet(
        full_mesh(n),
        config,
        seed=args.seed,
        uplink_bytes_per_s=args.uplink_mbit * 1e6 / 8,
        heartbeat_s=args.heartbeat,
    )
    sent: Counter[str] = Counter()
    item_bytes = 0
    last_delivery = 0.0
    apply = net._apply

    def counting(src: str, actions: list[Any], serving: bool = False) -> None:
        nonlocal item_bytes, last_delivery
        for a in actions:
            if isinstance(a, Send):
                sent[type(a.message).__name__] += 1
                if isinstance(a.message, Item):
                    item_bytes += len(encode(a.message))
            elif isinstance(a, Deliver):
                last_delivery = net.now
        apply(src, actions, serving)

    net._apply = counting  # type: ignore[method-assign]
    ids = [net.publish(0.01 * i, f"n{i}", 0, size=args.item_kb * 1000) for i in range(n)]
    net.run(args.seconds, max_events=10_000_000)
    complete = all(net.delivered[nid][i] or net.origin[i] == nid for nid in net.graph for i in ids)
    return {
        "sent": sent,
        "duplicates": net.dup_to_honest,
        "item_mb": item_bytes / 1e6,
        "complete": complete,
        "last_s": last_delivery,
        "spared": net.stat("wants_spared"),
    }


def settings(args: argparse.Namespace) -> dict[str, GossipConfig]:
    base = {"fanout": 2, "ttl": 8, "want_timeout_s": args.want_timeout}
    return {
        "lazy all": GossipConfig(**base),  # type: ignore[arg-type]
        "lazy 6": GossipConfig(lazy_fanout=6, **base),  # type: ignore[arg-type]
        "lazy 6 + delay": GossipConfig(
            lazy_fanout=6,
            want_delay_s=args.want_delay,
            want_backoff=2.0,
            **base,  # type: ignore[arg-type]
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--item-kb", type=int, default=200, help="item size (an MLP update ~200)")
    p.add_argument("--uplink-mbit", type=float, default=50.0, help="each node's send rate")
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--want-timeout", type=float, default=3.0)
    p.add_argument("--want-delay", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(
        f"full mesh, one {args.item_kb} kB item per node, fanout 2, ttl 8, uplink "
        f"{args.uplink_mbit:g} Mbit/s, heartbeat {args.heartbeat:g} s, want timeout "
        f"{args.want_timeout:g} s, {args.seconds:g} s of gossip"
    )
    head = ("nodes", "setting", "Item", "IHave", "IWant", "spared", "dups", "item MB", "last s")
    print(f"{head[0]:>5}  {head[1]:<15}" + "".join(f"{h:>9}" for h in head[2:]) + "  all got all")
    for n in args.sizes:
        mb = {}
        for name, config in settings(args).items():
            r = spread(n, config, args)
            s = r["sent"]
            mb[name] = r["item_mb"]
            cells = (s["Item"], s["IHave"], s["IWant"], r["spared"], r["duplicates"])
            print(
                f"{n:>5}  {name:<15}"
                + "".join(f"{c:>9}" for c in cells)
                + f"{r['item_mb']:>9.1f}{r['last_s']:>9.2f}  {r['complete']}"
            )
        print(
            f"{'':>5}  item bytes sent, lazy 6 + delay / lazy all: "
            f"{mb['lazy 6 + delay'] / mb['lazy all']:.2f}x"
        )


if __name__ == "__main__":
    main()
