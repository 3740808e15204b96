"""The gossip core bound to a node: signed frames out, verified messages in, a heartbeat timer.

How it works
------------
A role makes one `GossipService` in its ``start(ctx)``, with the neighbours gossip may use
(its D2D links, the MEC backhaul…), subscribes its topics (a validation hook and a delivery
callback each), then calls `start`. From then on the role hands every message of type
`CODEC_TYPE` to `on_message` and every timer to `on_timer` (each answers whether it was the
service's own); `publish` spreads a local item; `finish` writes the node's ``gossip``
metrics record (the core's counters, ``gossip_*``), which the orchestrator merges into
``counters.csv``.

Frames are the node's signed codec frames (``ctx.multicast``: one encoding per message, sent
to every neighbour it goes to), so the sender of every message is authenticated before the
core sees it. A payload that is not a well-formed gossip message, or a message from a node
that is not a neighbour in its topic, is dropped and counted (``gossip_dropped`` by reason,
and the daemon's ``dropped`` as ``gossip_<reason>``); an item its topic's hook refuses (a
corrupted transaction, a block with a bad signature) is dropped and counted by the core
(``gossip_invalid`` by reason, ``gossip_invalid_from`` by peer). Nothing a peer sends stops
the node. Items are capped so that an item frame fits the node's ``max_message_bytes``.
Only this module touches the node; the core (`node.gossip.core`) stays sans-IO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from node.gossip.actions import (
    Deliver,
    GossipAction,
    GossipConfig,
    GossipStats,
    Send,
    Topic,
    Validator,
)
from node.gossip.core import GossipNode
from node.gossip.messages import (
    CODEC_TYPE,
    ID_BYTES,
    GossipError,
    GossipMessage,
    IHave,
    Item,
    IWant,
    from_payload,
    to_payload,
)

log = logging.getLogger(__name__)

FRAME_OVERHEAD = 1024
"""Bytes of a codec frame around an item's data (envelope, signature, payload keys, topic)."""
ID_OVERHEAD = ID_BYTES + 2
"""Bytes one id adds to an IHAVE/IWANT payload (msgpack bin header + 32 bytes)."""
LOG_FIRST = 20

Deliverer = Callable[[Deliver], None]


class _Config(Protocol):
    @property
    def max_message_bytes(self) -> int: ...


class _Metrics(Protocol):
    def write(self, event: str, **fields: Any) -> None: ...


class GossipHost(Protocol):
    """What the service uses of its node (a subset of `node.roles.base.NodeContext`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def config(self) -> _Config: ...

    @property
    def metrics(self) -> _Metrics: ...

    def now(self) -> float: ...

    def multicast(self, dsts: Iterable[str], msg_type: str, payload: Mapping[str, Any]) -> None: ...

    def set_timer(self, name: str, delay_s: float) -> None: ...

    def drop(self, reason: str, detail: str = "") -> None: ...


class GossipMessageIn(Protocol):
    """A verified message as the daemon hands it to a role (`node.codec.Message`)."""

    @property
    def type(self) -> str: ...

    @property
    def sender(self) -> str: ...

    @property
    def payload(self) -> Any:
        """The payload map (or a decoded `GossipMessage`, for a daemon that decodes)."""
        ...


@dataclass
class ServiceStats:
    """What the service counts besides the core's counters."""

    sent_msgs: int = 0
    """Gossip messages handed to the node (one per neighbour they go to)."""


def fit_config(config: GossipConfig, max_message_bytes: int) -> GossipConfig:
    """`config` with `max_item_bytes` and `max_ids` lowered so that every gossip frame fits
    `max_message_bytes`; ValueError when not even a 1-byte item would."""
    budget = max_message_bytes - FRAME_OVERHEAD
    if budget < ID_OVERHEAD:
        raise ValueError(
            f"max_message_bytes {max_message_bytes} is too small for gossip "
            f"(needs more than {FRAME_OVERHEAD + ID_OVERHEAD})"
        )
    return replace(
        config,
        max_item_bytes=min(config.max_item_bytes, budget),
        max_ids=min(config.max_ids, budget // ID_OVERHEAD),
    )


class GossipService:
    """One node's gossip: a `GossipNode` whose messages travel as the node's signed frames."""

    def __init__(
        self,
        ctx: GossipHost,
        peers: Sequence[str],
        config: GossipConfig | None = None,
        heartbeat_s: float = 0.5,
        prefix: str = "gossip.",
    ) -> None:
        """`peers`: the default neighbours of every topic; `heartbeat_s`: how often the core
        announces and retries pulls (its timer is named `prefix` + ``tick``)."""
        if heartbeat_s <= 0:
            raise ValueError("gossip heartbeat_s must be > 0")
        self._ctx = ctx
        self.peers = tuple(sorted(set(peers) - {ctx.node_id}))
        self.core = GossipNode(
            ctx.node_id, (), fit_config(config or GossipConfig(), ctx.config.max_message_bytes)
        )
        self.heartbeat_s = heartbeat_s
        self.prefix = prefix
        self.timer = prefix + "tick"
        self.service_stats = ServiceStats()
        self._deliver: dict[str, Deliverer | None] = {}
        self._started = False

    @property
    def stats(self) -> GossipStats:
        """The core's counters."""
        return self.core.stats

    def subscribe(
        self,
        topic: str,
        validate: Validator,
        deliver: Deliverer | None,
        peers: Sequence[str] | None = None,
        want_delay_s: float | None = None,
    ) -> None:
        """Take part in `topic`: `validate` returns a `Verdict` (ACCEPT, reject, ignore) for
        an item's bytes; `deliver` gets each new valid item (None: relay only); `peers`
        replaces the service's neighbours for this topic; `want_delay_s` is this topic's
        (None: the config's)."""
        neighbours = tuple(self.peers if peers is None else peers)
        self.core.subscribe(Topic(topic, neighbours, validate, deliver is not None, want_delay_s))
        self._deliver[topic] = deliver

    def set_peers(self, topic: str, peers: Sequence[str]) -> None:
        """Replace the neighbours of `topic` (links came up or went down)."""
        self.core.set_peers(topic, peers)

    def start(self) -> None:
        """Arm the heartbeat."""
        self._started = True
        self._ctx.set_timer(self.timer, self.heartbeat_s)

    def publish(self, topic: str, data: bytes) -> bytes:
        """Spread a local item (trusted, not validated; not delivered back); its id.
        ValueError if `topic` is not subscribed or the item is over `max_item_bytes`."""
        item_id = self.core.item_id(data)
        self._carry(self._ctx, self.core.publish(topic, data, self._ctx.now()))
        return item_id

    def has(self, topic: str, item_id: bytes) -> bool:
        """Whether the item was published here or received valid (and is still remembered)."""
        return self.core.has(topic, item_id, self._ctx.now())

    def on_message(self, ctx: GossipHost, msg: GossipMessageIn) -> bool:
        """Handle `msg` if it is a gossip message (then True); False leaves it to the role."""
        if msg.type != CODEC_TYPE:
            return False
        cfg = self.core.config
        payload = msg.payload
        if isinstance(payload, Item | IHave | IWant):  # already decoded (the core re-checks
            message: GossipMessage = payload  # sizes against this node's limits)
        else:
            try:
                message = from_payload(payload, cfg.max_item_bytes, cfg.max_ids)
            except GossipError as exc:
                self._refuse(ctx, exc.reason, f"from {msg.sender}: {exc.detail}")
                return True
        try:
            peers = self.core.peers(message.topic)
        except KeyError:
            self._refuse(ctx, "unknown_topic", f"{message.topic!r} from {msg.sender}")
            return True
        if msg.sender not in peers:
            self._refuse(ctx, "not_peer", f"{msg.sender} on {message.topic!r}")
            return True
        before = self.core.stats.invalid_from[msg.sender]
        actions = self.core.handle(msg.sender, message, ctx.now())
        invalid = self.core.stats.invalid_from[msg.sender] - before
        if invalid:
            total = sum(self.core.stats.invalid.values())
            if total <= LOG_FIRST or total % 100 == 0:
                log.warning("gossip: dropped invalid item #%d from %s", total, msg.sender)
        self._carry(ctx, actions)
        return True

    def on_timer(self, ctx: GossipHost, name: str) -> bool:
        """Run the heartbeat if `name` is the service's timer (then True)."""
        if name != self.timer:
            return False
        self._carry(ctx, self.core.tick(ctx.now()))
        if self._started:
            ctx.set_timer(self.timer, self.heartbeat_s)
        return True

    def stop(self) -> None:
        """Stop re-arming the heartbeat (a pending tick still runs once)."""
        self._started = False

    def record(self) -> dict[str, Any]:
        """The ``gossip`` metrics record's fields: the core's counters and ``gossip_sent_msgs``."""
        return {
            **self.core.stats.as_record(),
            "gossip_sent_msgs": self.service_stats.sent_msgs,
        }

    def finish(self, ctx: GossipHost) -> None:
        """Write this node's ``gossip`` metrics record."""
        self._started = False
        ctx.metrics.write("gossip", **self.record())

    # ---- internals ----------------------------------------------------------------------

    def _refuse(self, ctx: GossipHost, reason: str, detail: str) -> None:
        self.core.stats.dropped[reason] += 1
        ctx.drop("gossip_" + reason, detail)

    def _carry(self, ctx: GossipHost, actions: list[GossipAction]) -> None:
        """Send each `Send` (one encoding per message object), deliver each `Deliver`."""
        groups: dict[int, tuple[Send, list[str]]] = {}
        for action in actions:
            if isinstance(action, Send):
                group = groups.setdefault(id(action.message), (action, []))
                group[1].append(action.dst)
        for send, dsts in groups.values():
            self.service_stats.sent_msgs += len(dsts)
            ctx.multicast(dsts, CODEC_TYPE, to_payload(send.message))
        for action in actions:
            if isinstance(action, Deliver):
                deliver = self._deliver.get(action.topic)
                if deliver is not None:
                    deliver(action)
