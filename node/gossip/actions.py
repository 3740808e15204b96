"""What a gossip core asks its host to do, what it asks the scheme, its configuration and
counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.gossip.messages import DEFAULT_MAX_ITEM_BYTES, MAX_IDS, MAX_TTL, GossipMessage


@dataclass(frozen=True)
class Verdict:
    """A validation hook's answer: accept (empty reason), reject, or ignore for now."""

    reason: str = ""
    remember: bool = True

    @property
    def ok(self) -> bool:
        """Whether the item is valid."""
        return not self.reason


ACCEPT = Verdict()


def reject(reason: str) -> Verdict:
    """Invalid for good: dropped, counted against the sender, its id remembered."""
    return Verdict(reason or "invalid", True)


def ignore(reason: str) -> Verdict:
    """Not valid now (e.g. unknown parent): dropped and counted, not remembered."""
    return Verdict(reason or "ignored", False)


Validator = Callable[[bytes], Verdict]


@dataclass(frozen=True)
class Topic:
    """A topic this node takes part in: its neighbours, its validation hook, delivery."""

    name: str
    peers: tuple[str, ...]
    validate: Validator
    deliver: bool = True
    """False: relay-only (the paper's devices that only transfer LMUC data)."""
    want_delay_s: float | None = None
    """This topic's `GossipConfig.want_delay_s` (None: the config's), e.g. 0 for small
    items on a round's critical path beside a topic of large ones."""


@dataclass(frozen=True)
class GossipConfig:
    """Parameters shared by the nodes of a topic (times in seconds of the caller's clock)."""

    ttl: int = 16
    """Hops an item may travel from its source (choose >= the topic's diameter)."""
    fanout: int = 4
    """Neighbours each new item is pushed to (all when >= the degree)."""
    announce_ticks: int = 3
    """Consecutive heartbeats a new item is announced (IHAVE); 0 turns pull off."""
    announce_backoff: bool = True
    """Then announce at heartbeats 2^k while the item is stored."""
    lazy_fanout: int | None = None
    """Neighbours announced to per topic and heartbeat, chosen anew (seeded) each heartbeat,
    each told every announced item it is not known to hold (gossipsub's D_lazy); None: every
    neighbour not known to hold an item."""
    want_timeout_s: float = 2.0
    """How long an IWANT waits before asking the next announcer (mind large items)."""
    want_delay_s: float = 0.0
    """How long a node that hears of an item it lacks (IHAVE) waits for a pushed copy
    before it asks for the item (Plumtree's lazy-push timer); 0: it asks at once."""
    want_backoff: float = 1.0
    """Each further ask of an item waits this many times as long as the one before (above 1
    where large items may take longer than `want_timeout_s` to arrive)."""
    max_want_tries: int = 3
    max_pending_wants: int = 4096
    max_pending_per_peer: int = 512
    max_serves_per_peer: int = 2
    seen_ttl_s: float = 600.0
    """How long an item id stays in the seen-set (copies within it are duplicates)."""
    max_seen: int = 100_000
    history_s: float = 120.0
    """How long an item's bytes are kept for serving pulls."""
    max_store_items: int = 4096
    max_store_bytes: int = 256 * 1024 * 1024
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_ids: int = 1024
    """Ids per IHAVE/IWANT message (longer lists are split when sent, refused when read)."""
    seed: bytes = b""
    """Salts the fan-out choice (the run's seed)."""

    def __post_init__(self) -> None:
        if not 1 <= self.ttl <= MAX_TTL:
            raise ValueError(f"gossip.ttl must be in 1..{MAX_TTL}")
        if self.fanout < 1 or (self.lazy_fanout is not None and self.lazy_fanout < 0):
            raise ValueError("gossip.fanout must be >= 1 and gossip.lazy_fanout >= 0")
        if self.announce_ticks < 0 or self.max_want_tries < 1 or self.max_serves_per_peer < 1:
            raise ValueError("gossip announce_ticks >= 0, max_want_tries and serves >= 1")
        if min(self.want_timeout_s, self.seen_ttl_s, self.history_s) <= 0:
            raise ValueError("gossip timeouts and lifetimes must be > 0")
        if self.want_delay_s < 0 or self.want_backoff < 1:
            raise ValueError("gossip.want_delay_s must be >= 0 and gossip.want_backoff >= 1")
        if min(self.max_pending_wants, self.max_pending_per_peer, self.max_seen) < 1:
            raise ValueError("gossip bounds must be >= 1")
        if min(self.max_store_items, self.max_store_bytes, self.max_item_bytes) < 1:
            raise ValueError("gossip store and item bounds must be >= 1")
        if not 1 <= self.max_ids <= MAX_IDS:
            raise ValueError(f"gossip.max_ids must be in 1..{MAX_IDS}")


@dataclass(frozen=True)
class Send:
    """Send `message` to peer `dst` (encode it with `messages.to_payload` or `encode`)."""

    dst: str
    message: GossipMessage


@dataclass(frozen=True)
class Deliver:
    """A new valid item for the application, first received from `sender`."""

    topic: str
    item_id: bytes
    data: bytes
    sender: str


GossipAction = Send | Deliver


@dataclass
class GossipStats:
    """Per-node counters (items unless named `_msgs`)."""

    published: int = 0
    received: int = 0
    delivered: int = 0
    relayed: int = 0
    duplicates: int = 0
    ttl_upgrades: int = 0
    pulled: int = 0
    served: int = 0
    ihave_msgs: int = 0
    iwant_msgs: int = 0
    want_failed: int = 0
    wants_spared: int = 0
    """Items heard of (IHAVE) that a push delivered while the IWANT was held back
    (`want_delay_s`): the pulls the delay saved."""
    received_bytes: int = 0
    """Payload bytes of the new valid items received (each counted once)."""
    relayed_bytes: int = 0
    """Payload bytes of items received from a peer that this node pushed on (once per
    neighbour each copy went to); its own published items are not counted."""
    served_bytes: int = 0
    """Payload bytes of items this node sent in answer to IWANT, its own items excepted."""
    invalid: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    invalid_from: Counter[str] = field(default_factory=Counter)
    relayed_from: Counter[str] = field(default_factory=Counter)
    """Peer -> payload bytes of the valid relayed copies (ttl below `GossipConfig.ttl`: not
    from their source) it sent this node, each item counted once per peer: a lower bound,
    seen by this node, of what that peer forwarded."""

    @property
    def forwarded_bytes(self) -> int:
        """Payload bytes this node forwarded for others: pushes and pull answers."""
        return self.relayed_bytes + self.served_bytes

    def as_record(self, prefix: str = "gossip_") -> dict[str, Any]:
        """Flat counters for a metrics record (with ``forwarded_bytes``); the Counters as
        plain dicts."""
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            out[prefix + name] = dict(value) if isinstance(value, Counter) else value
        out[prefix + "forwarded_bytes"] = self.forwarded_bytes
        return out
