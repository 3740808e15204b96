"""A sans-IO gossip node: eager push to a seeded fan-out, lazy IHAVE/IWANT pull, TTL, dedup.

How it works
------------
The design follows gossipsub v1.1 (libp2p) with a Plumtree-like split: *eager push* of
whole items to a few neighbours, *lazy push* of their ids to the rest, and *pull* of what
is missing — without gossipsub's mesh maintenance (the neighbours are the topology's links,
given per topic by the caller: D2D links for an LMUC, the backhaul for the MECs).

- An item is opaque bytes in a topic; its id is SHA-256(bytes), computed by every receiver.
  De-duplication is per (topic, id) in a bounded seen-set whose entries expire after
  `seen_ttl_s` (a replay older than that is treated as new: the application's ledger must
  still refuse what it already holds).
- `publish` (local item, trusted) and the first valid copy from a peer are stored, delivered
  to the application (`Deliver`, unless the topic is relay-only) and pushed to `fanout`
  neighbours chosen by SHA-256(seed, node, item, peer) order — seeded-random, reproducible
  and independent of event order — or to all when fanout >= degree. Neither the sender nor
  a peer known to hold the item with as many hops left is chosen.
- TTL: an `Item` copy carries the hops it may still travel; a receiver relays with ttl - 1
  when that is >= 1, clamping what arrives to `config.ttl`, so an item reaches at most
  `config.ttl` hops from its source (or from a Byzantine relay that re-sends it). A later
  copy, or IHAVE, with a larger ttl *upgrades* the stored one: at its next heartbeat the
  node tells the neighbours that would gain in its IHAVEs (ids only, so this costs no item
  bytes; a neighbour holding the item upgrades in turn, one lacking it pulls it) — with
  `lazy_fanout`, those known to hold the item with fewer hops left, and that heartbeat's
  lazy neighbours; the item is announced afresh, so the others hear of it at the next
  heartbeats. (Told at once, one IHAVE per item and neighbour, upgrades were about two
  thirds of all messages in a 50-node full mesh: items arrive first by long paths, then by
  short ones, and every upgrade told ~48 neighbours.) Each node raises an item's ttl at most
  `config.ttl` times, and a Byzantine relay that forwards first with ttl 1 cannot stop an
  item that has an honest path.
- Validation: each topic has a hook from the scheme (verify a signed transaction, a block).
  `reject(reason)` drops the copy, counts it (per reason and per sending peer) and
  remembers its id so a resend costs no second check; `ignore(reason)` drops it without
  remembering (e.g. a block whose parent is not known yet). Rejected or ignored copies are
  never delivered nor relayed. Oversize items are dropped before hashing.
- Pull (`tick`, called every heartbeat by the host): a stored item is announced to
  neighbours not known to hold it (a peer holds an item once it sent us the item or an
  IHAVE for it) — all of them, or, with `lazy_fanout` (gossipsub's D_lazy), that many per
  topic chosen anew each heartbeat (seeded by the heartbeat's number) — at each of the
  first `announce_ticks` heartbeats after it arrived, then (`announce_backoff`) at
  heartbeats 2^k while it is stored (`history_s`), so a neighbour that lost every copy in a
  burst of loss or a partition still learns of it. Each neighbour told anything gets one
  IHAVE(topic, ids, a ttl per id) a heartbeat with all of it, upgrades included (an IHAVE
  per ttl sent twice as many in a 50-node mesh; each message costs a signature and its
  check). A node that sees an unknown id sends IWANT to the announcer — at once, or, with
  `want_delay_s` (Plumtree's lazy-push timer; per topic, `Topic.want_delay_s`, over the
  config's), only if no pushed copy came within that delay: an IHAVE often overtakes the
  large item it names, and answering it at once makes a second copy travel
  (`wants_spared` counts the pulls the delay saved). It asks another announcer (or the
  same one) after `want_timeout_s`, each further ask waiting `want_backoff` times as long
  as the one before, `max_want_tries` IWANTs in all. IWANT is answered with the stored
  item, at most `max_serves_per_peer` times per peer and item in any `want_timeout_s` (a
  peer cannot turn a node into an amplifier of large items). Pending wants are bounded in
  all and per peer, so fake announcements cannot crowd out real ones. Pull recovers what
  lost messages, a small fan-out or dropping relays missed; what is older than
  `history_s` is the ledger sync's job (`node.ledger.sync`), not gossip's.

- Counters (`GossipStats`): items and messages, and payload bytes — `received_bytes` (new
  valid items), `relayed_bytes` and `served_bytes` (copies of others' items this node
  pushed on or sent in answer to IWANT: what it *forwarded*, `forwarded_bytes`; its own
  published items are not counted), and `relayed_from` (per peer: the bytes of the valid
  copies it relayed to this node, each item once per peer, copies at the full `ttl` — from
  their source — not counted): what a node can check itself of a peer's forwarding.

Inputs are already-authenticated ``(sender, message, now)``; outputs are `Send` and
`Deliver` actions. The core reads no clock, opens no socket and draws no random numbers.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from node.gossip.actions import (
    Deliver,
    GossipAction,
    GossipConfig,
    GossipStats,
    Send,
    Topic,
    Verdict,
    reject,
)
from node.gossip.cache import ExpiringMap
from node.gossip.messages import (
    GossipError,
    GossipMessage,
    IHave,
    Item,
    IWant,
    check_topic,
    decode,
)

log = logging.getLogger(__name__)

Key = tuple[str, bytes]


@dataclass
class _Entry:
    data: bytes
    relay_ttl: int
    age: int = 0
    """Heartbeats since it was stored (or since its ttl rose from 0)."""
    have: dict[str, int] = field(default_factory=dict)
    """Peer -> the largest relay ttl it is known to hold the item with (MAX_TTL after an
    IHAVE, whose ttl is unknown)."""
    pushed: dict[str, int] = field(default_factory=dict)
    """Peer -> the largest ttl this node sent it the item with."""
    served: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Peer -> (start of its current serving window, items served in it)."""
    own: bool = False
    """Published here (its pushes and serves are not counted as forwarded bytes)."""
    relayed_by: set[str] = field(default_factory=set)
    """Peers whose relayed copy was counted in `GossipStats.relayed_from`."""


@dataclass
class _Want:
    announcers: list[str]
    deadline: float
    """When the next IWANT leaves: the first after `want_delay_s`, then after each timeout."""
    tries: int = 1
    """IWANTs sent so far (0: held back, waiting for a pushed copy)."""
    asked: str = ""
    """The announcer this want is counted against (`max_pending_per_peer`)."""


class GossipNode:
    """One node's gossip state across its topics: feed it messages and ticks, get actions."""

    def __init__(
        self, node_id: str, topics: Iterable[Topic], config: GossipConfig | None = None
    ) -> None:
        self.id = node_id
        self.config = cfg = config or GossipConfig()
        self.stats = GossipStats()
        self._topics: dict[str, Topic] = {}
        for topic in topics:
            self.subscribe(topic)
        self._seen: ExpiringMap[Key, None] = ExpiringMap(cfg.seen_ttl_s, cfg.max_seen)
        self._rejected: ExpiringMap[Key, str] = ExpiringMap(
            cfg.seen_ttl_s, max(1, cfg.max_seen // 4)
        )
        self._store: ExpiringMap[Key, _Entry] = ExpiringMap(
            cfg.history_s, cfg.max_store_items, self._forget
        )
        self._store_bytes = 0
        self._wants: dict[Key, _Want] = {}
        self._wants_per_peer: Counter[str] = Counter()
        self._heartbeats = 0  # ticks so far: salts each heartbeat's choice of lazy peers
        self._upgraded: dict[Key, str] = {}  # items whose ttl rose -> the peer that raised it

    # ---- configuration ----------------------------------------------------------------

    def subscribe(self, topic: Topic) -> None:
        """Take part in `topic` (replaces an earlier subscription of that name)."""
        check_topic(topic.name)
        if topic.want_delay_s is not None and topic.want_delay_s < 0:
            raise ValueError(f"gossip topic {topic.name!r}: want_delay_s must be >= 0")
        self._topics[topic.name] = Topic(
            topic.name,
            tuple(sorted(set(topic.peers) - {self.id})),
            topic.validate,
            topic.deliver,
            topic.want_delay_s,
        )

    def set_peers(self, topic: str, peers: Sequence[str]) -> None:
        """Replace the neighbours of `topic` (links came up or went down)."""
        old = self._topics.get(topic)
        if old is None:
            raise ValueError(f"not subscribed to gossip topic {topic!r}")
        self.subscribe(Topic(topic, tuple(peers), old.validate, old.deliver, old.want_delay_s))

    def peers(self, topic: str) -> tuple[str, ...]:
        """The neighbours of `topic`."""
        return self._topics[topic].peers

    # ---- queries ----------------------------------------------------------------------

    @staticmethod
    def item_id(data: bytes) -> bytes:
        """The id of an item: SHA-256 of its bytes."""
        return hashlib.sha256(data).digest()

    def has(self, topic: str, item_id: bytes, now: float) -> bool:
        """Whether the item was seen (accepted or published) and has not expired."""
        return self._seen.contains((topic, item_id), now)

    def get(self, topic: str, item_id: bytes, now: float) -> bytes | None:
        """The stored bytes of an item (kept `history_s` for serving), or None."""
        entry = self._store.get((topic, item_id), now)
        return None if entry is None else entry.data

    def pending_wants(self) -> int:
        """Ids asked for (IWANT) and not yet received."""
        return len(self._wants)

    # ---- inputs -----------------------------------------------------------------------

    def publish(self, topic: str, data: bytes, now: float) -> list[GossipAction]:
        """Spread a local item (trusted: not validated); [] if it was already seen."""
        if topic not in self._topics:
            raise ValueError(f"not subscribed to gossip topic {topic!r}")
        if len(data) > self.config.max_item_bytes:
            raise ValueError(
                f"gossip item of {len(data)} bytes exceeds max_item_bytes "
                f"{self.config.max_item_bytes}"
            )
        key = (topic, self.item_id(data))
        if self._seen.contains(key, now):
            return []
        self.stats.published += 1
        entry = self._accept(key, data, self.config.ttl, now)
        entry.own = True
        self._drop_want(key)
        return self._push(key, entry, exclude="", now=now)

    def handle_bytes(self, sender: str, raw: bytes, now: float) -> list[GossipAction]:
        """`decode` then `handle`; a malformed message is counted under its reason."""
        try:
            msg = decode(raw, self.config.max_item_bytes, self.config.max_ids)
        except GossipError as exc:
            self.stats.dropped[exc.reason] += 1
            return []
        return self.handle(sender, msg, now)

    def handle(self, sender: str, msg: GossipMessage, now: float) -> list[GossipAction]:
        """Process one authenticated message from peer `sender`."""
        if msg.topic not in self._topics:
            self.stats.dropped["unknown_topic"] += 1
            return []
        if isinstance(msg, Item):
            return self._on_item(sender, msg, now)
        if len(msg.ids) > self.config.max_ids:
            self.stats.dropped["too_many_ids"] += 1
            return []
        if isinstance(msg, IHave):
            return self._on_ihave(sender, msg, now)
        return self._on_iwant(sender, msg, now)

    def tick(self, now: float) -> list[GossipAction]:
        """The heartbeat: expire state, announce recent items, retry overdue wants."""
        self._seen.expire(now)
        self._rejected.expire(now)
        self._store.expire(now)
        return self._announce(now) + self._retry_wants(now)

    # ---- items ------------------------------------------------------------------------

    def _on_item(self, sender: str, msg: Item, now: float) -> list[GossipAction]:
        cfg = self.config
        if len(msg.data) > cfg.max_item_bytes:
            self.stats.dropped["oversize"] += 1
            return []
        key = (msg.topic, self.item_id(msg.data))
        relay_ttl = min(msg.ttl, cfg.ttl) - 1
        if self._seen.contains(key, now):
            self.stats.duplicates += 1
            entry = self._store.get(key, now)
            if entry is None:
                return []
            _note(entry.have, sender, msg.ttl)
            self._count_from(entry, sender, msg)
            return self._upgrade(key, entry, sender, relay_ttl)
        remembered = self._rejected.get(key, now)
        if remembered is not None:
            self._count_invalid(sender, remembered)
            return []
        verdict = self._validate(msg.topic, msg.data)
        if not verdict.ok:
            self._count_invalid(sender, verdict.reason)
            if verdict.remember:
                self._rejected.put(key, verdict.reason, now)
            return []
        self.stats.received += 1
        self.stats.received_bytes += len(msg.data)
        want = self._drop_want(key)
        if want is not None and want.tries == 0:
            self.stats.wants_spared += 1
        elif want is not None:
            self.stats.pulled += 1
        entry = self._accept(key, msg.data, relay_ttl, now)
        _note(entry.have, sender, msg.ttl)
        self._count_from(entry, sender, msg)
        out: list[GossipAction] = []
        if self._topics[msg.topic].deliver:
            self.stats.delivered += 1
            out.append(Deliver(msg.topic, key[1], msg.data, sender))
        return out + self._push(key, entry, exclude=sender, now=now)

    def _validate(self, topic: str, data: bytes) -> Verdict:
        try:
            verdict = self._topics[topic].validate(data)
        except Exception as exc:  # a hook must not crash the node on hostile bytes
            log.warning("gossip validator for %s raised %s", topic, type(exc).__name__)
            return reject("validator_error")
        if not isinstance(verdict, Verdict):
            return reject("validator_error")
        return verdict

    def _count_from(self, entry: _Entry, sender: str, msg: Item) -> None:
        """Count a valid copy `sender` relayed (not its source's: ttl below ours), once per
        item and peer."""
        if msg.ttl < self.config.ttl and sender not in entry.relayed_by:
            entry.relayed_by.add(sender)
            self.stats.relayed_from[sender] += len(msg.data)

    def _count_invalid(self, sender: str, reason: str) -> None:
        self.stats.invalid[reason] += 1
        self.stats.invalid_from[sender] += 1

    def _accept(self, key: Key, data: bytes, relay_ttl: int, now: float) -> _Entry:
        """Mark seen and store; `relay_ttl` is the ttl this node relays the item with."""
        self._seen.put(key, None, now)
        entry = _Entry(data, relay_ttl)
        self._forget(key, self._store.pop(key))
        self._store.put(key, entry, now)
        self._store_bytes += len(data)
        while self._store_bytes > self.config.max_store_bytes and len(self._store) > 1:
            oldest = next(iter(self._store))
            self._forget(oldest, self._store.pop(oldest))
        return entry

    def _forget(self, key: Key, entry: _Entry | None) -> None:
        if entry is not None:
            self._store_bytes -= len(entry.data)

    def _pick(self, candidates: Iterable[str], k: int | None, salt: bytes) -> list[str]:
        """Up to `k` of `candidates`, in seeded pseudo-random order (all if k is None)."""
        pool = sorted(candidates)
        if k is None or len(pool) <= k:
            return pool
        base = self.config.seed + b"\x00" + self.id.encode() + b"\x00" + salt
        pool.sort(key=lambda p: hashlib.sha256(base + p.encode()).digest())
        return pool[:k]

    def _short(self, key: Key, entry: _Entry, exclude: str) -> list[str]:
        """Neighbours not known to hold the item with at least our relay ttl - 1."""
        ttl = entry.relay_ttl
        return [
            p
            for p in self._topics[key[0]].peers
            if p != exclude and max(entry.have.get(p, -1), entry.pushed.get(p, 0) - 1) < ttl - 1
        ]

    def _push(self, key: Key, entry: _Entry, exclude: str, now: float) -> list[GossipAction]:
        if entry.relay_ttl < 1:
            return []
        ttl = entry.relay_ttl
        targets = self._pick(self._short(key, entry, exclude), self.config.fanout, key[1])
        for peer in targets:
            entry.pushed[peer] = ttl
        if not entry.own:
            self.stats.relayed += len(targets)
            self.stats.relayed_bytes += len(targets) * len(entry.data)
        msg = Item(key[0], ttl, entry.data)
        return [Send(peer, msg) for peer in targets]

    def _upgrade(self, key: Key, entry: _Entry, sender: str, relay_ttl: int) -> list[GossipAction]:
        """A copy (or IHAVE) with more hops left than ours: raise our relay ttl; at the next
        heartbeat the neighbours that would gain hear of it, in an IHAVE carrying the new
        ttl (ids only: a neighbour holding the item raises its ttl in turn, one lacking it
        pulls it), one IHAVE per neighbour and ttl for all the heartbeat's upgrades."""
        if relay_ttl <= entry.relay_ttl:
            return []
        self.stats.ttl_upgrades += 1
        if entry.relay_ttl < 1 or self.config.lazy_fanout is not None:
            entry.age = 0  # announced afresh: with lazy_fanout, to those not told at once
        entry.relay_ttl = relay_ttl
        self._upgraded[key] = sender  # told at the next heartbeat (`_announce`)
        return []

    # ---- pull -------------------------------------------------------------------------

    def _on_ihave(self, sender: str, msg: IHave, now: float) -> list[GossipAction]:
        cfg = self.config
        delay = self._topics[msg.topic].want_delay_s
        delay = cfg.want_delay_s if delay is None else delay
        wanted: list[bytes] = []
        out: list[GossipAction] = []
        for item_id, ttl in msg.announced().items():
            key = (msg.topic, item_id)
            if self._seen.contains(key, now):
                entry = self._store.get(key, now)
                if entry is not None:
                    _note(entry.have, sender, ttl)
                    out += self._upgrade(key, entry, sender, min(ttl, cfg.ttl) - 1)
                continue
            if ttl < 1 or self._rejected.contains(key, now):
                continue
            want = self._wants.get(key)
            if want is not None:
                if sender not in want.announcers and len(want.announcers) < 16:
                    want.announcers.append(sender)
                continue
            if (
                len(self._wants) >= cfg.max_pending_wants
                or self._wants_per_peer[sender] >= cfg.max_pending_per_peer
            ):
                self.stats.dropped["want_overflow"] += 1
                continue
            self._wants_per_peer[sender] += 1
            if delay > 0:  # held back: a pushed copy may be on its way
                self._wants[key] = _Want([sender], now + delay, 0, sender)
                continue
            self._wants[key] = _Want([sender], now + cfg.want_timeout_s, 1, sender)
            wanted.append(item_id)
        if wanted:
            self.stats.iwant_msgs += 1
            out.append(Send(sender, IWant(msg.topic, tuple(wanted))))
        return out

    def _on_iwant(self, sender: str, msg: IWant, now: float) -> list[GossipAction]:
        out: list[GossipAction] = []
        for item_id in dict.fromkeys(msg.ids):
            entry = self._store.get((msg.topic, item_id), now)
            if entry is None or entry.relay_ttl < 1:
                self.stats.dropped["want_unknown"] += 1
                continue
            start, count = entry.served.get(sender, (now, 0))
            if now - start >= self.config.want_timeout_s:
                start, count = now, 0
            if count >= self.config.max_serves_per_peer:
                self.stats.dropped["serve_limit"] += 1
                continue
            entry.served[sender] = (start, count + 1)
            self.stats.served += 1
            if not entry.own:
                self.stats.served_bytes += len(entry.data)
            out.append(Send(sender, Item(msg.topic, entry.relay_ttl, entry.data)))
        return out

    def _drop_want(self, key: Key) -> _Want | None:
        want = self._wants.pop(key, None)
        if want is not None:
            self._release(want.asked)
        return want

    def _release(self, peer: str) -> None:
        self._wants_per_peer[peer] -= 1
        if self._wants_per_peer[peer] <= 0:
            del self._wants_per_peer[peer]

    def _announce_now(self, age: int) -> bool:
        ticks = self.config.announce_ticks
        if age <= ticks:
            return True
        return ticks > 0 and self.config.announce_backoff and age & (age - 1) == 0

    def _announce(self, now: float) -> list[GossipAction]:
        """This heartbeat's IHAVEs, one per neighbour: the items whose ttl rose since the
        last heartbeat, to the neighbours that would gain (not the one that raised it), and
        the items due (`_announce_now`) to the neighbours not known to hold them; with
        `lazy_fanout`, to that many of those neighbours per topic, chosen anew each
        heartbeat, and the upgrades also to the neighbours known to hold the item with
        fewer hops left (an upgraded item is announced afresh: the others hear of it at
        the next heartbeats; without announcements, `announce_ticks: 0`, all are told)."""
        self._heartbeats += 1
        batches: dict[tuple[str, str], dict[bytes, int]] = {}
        upgrades: list[tuple[_Entry, str, str]] = []
        for key, sender in self._upgraded.items():
            entry = self._store.get(key, now)
            if entry is None:
                continue
            for peer in self._short(key, entry, sender):
                batches.setdefault((key[0], peer), {})[key[1]] = entry.relay_ttl
                upgrades.append((entry, key[0], peer))
        self._upgraded = {}
        for key, entry in self._store.items():
            entry.age += 1
            if entry.relay_ttl < 1 or not self._announce_now(entry.age):
                continue
            for peer in self._topics[key[0]].peers:
                if peer not in entry.have:
                    batches.setdefault((key[0], peer), {})[key[1]] = entry.relay_ttl
        forced = {  # holds it with fewer hops: no announcement would tell it
            (topic, peer) for entry, topic, peer in upgrades if peer in entry.have
        }
        if self.config.announce_ticks == 0:  # no later announcements: tell every upgrade now
            forced |= {(topic, peer) for _, topic, peer in upgrades}
        told = forced | self._lazy_peers(set(batches) - forced)
        for entry, topic, peer in upgrades:
            if (topic, peer) in told:
                entry.pushed[peer] = max(entry.pushed.get(peer, 0), entry.relay_ttl)
        return self._ihaves({b: ids for b, ids in batches.items() if b in told})

    def _lazy_peers(self, candidates: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (topic, neighbour) pairs told this heartbeat: all `candidates`, or, with
        `lazy_fanout`, that many neighbours per topic, chosen anew each heartbeat."""
        lazy = self.config.lazy_fanout
        if lazy is None:
            return candidates
        salt = b"heartbeat" + self._heartbeats.to_bytes(8, "big")
        return {
            (topic, peer)
            for topic in {t for t, _ in candidates}
            for peer in self._pick({p for t, p in candidates if t == topic}, lazy, salt)
        }

    def _ihaves(self, batches: dict[tuple[str, str], dict[bytes, int]]) -> list[GossipAction]:
        """One IHAVE per (topic, neighbour) and `max_ids` ids, each id with its ttl (one
        `ttl` where they are all equal, else `ttls`), in a fixed order. (An IHAVE per ttl
        sent about twice as many in a 50-node group; every message costs a signature and
        its check.)"""
        out: list[GossipAction] = []
        step = self.config.max_ids
        for (topic, peer), announced in sorted(batches.items()):
            pairs = list(announced.items())
            for i in range(0, len(pairs), step):
                ids, ttls = zip(*pairs[i : i + step], strict=True)
                top = max(ttls)
                self.stats.ihave_msgs += 1
                per_id = () if min(ttls) == top else tuple(ttls)
                out.append(Send(peer, IHave(topic, tuple(ids), top, per_id)))
        return out

    def _retry_wants(self, now: float) -> list[GossipAction]:
        batches: dict[tuple[str, str], list[bytes]] = {}
        for key, want in list(self._wants.items()):
            if want.deadline > now:
                continue
            if want.tries >= self.config.max_want_tries or key[0] not in self._topics:
                self.stats.want_failed += 1
                self._drop_want(key)
                continue
            peer = want.announcers[want.tries % len(want.announcers)]
            self._release(want.asked)
            self._wants_per_peer[peer] += 1
            want.asked = peer
            want.deadline = now + self.config.want_timeout_s * self.config.want_backoff**want.tries
            want.tries += 1
            batches.setdefault((key[0], peer), []).append(key[1])
        out: list[GossipAction] = []
        for (topic, peer), ids in sorted(batches.items()):
            for i in range(0, len(ids), self.config.max_ids):
                self.stats.iwant_msgs += 1
                out.append(Send(peer, IWant(topic, tuple(ids[i : i + self.config.max_ids]))))
        return out


def _note(have: dict[str, int], peer: str, ttl: int) -> None:
    if ttl > have.get(peer, -1):
        have[peer] = ttl
