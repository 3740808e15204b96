"""Gossip: spread a scheme's items (transactions, blocks, model updates) along topology links.

`core.GossipNode` is the sans-IO protocol (see its module docstring for how it works),
`actions` what it returns and takes (actions, validation verdicts, topics, configuration,
counters), `messages` the typed wire messages with their strict encodings, `cache` its
bounded maps, `service.GossipService` the core bound to a node (signed frames, a heartbeat
timer, a metrics record).
A host feeds the node authenticated ``(sender, message, now)`` and a heartbeat `tick(now)`,
sends each `Send` (framed with `messages.to_payload` under `messages.CODEC_TYPE`, or with
`messages.encode`) and hands each `Deliver` to the scheme.
"""

from node.gossip.actions import (
    ACCEPT,
    Deliver,
    GossipAction,
    GossipConfig,
    GossipStats,
    Send,
    Topic,
    Validator,
    Verdict,
    ignore,
    reject,
)
from node.gossip.core import GossipNode
from node.gossip.messages import (
    CODEC_TYPE,
    GossipError,
    GossipMessage,
    IHave,
    Item,
    IWant,
    decode,
    encode,
    from_payload,
    to_payload,
)
from node.gossip.service import GossipHost, GossipService

__all__ = [
    "ACCEPT",
    "CODEC_TYPE",
    "Deliver",
    "GossipAction",
    "GossipConfig",
    "GossipError",
    "GossipHost",
    "GossipMessage",
    "GossipNode",
    "GossipService",
    "GossipStats",
    "IHave",
    "IWant",
    "Item",
    "Send",
    "Topic",
    "Validator",
    "Verdict",
    "decode",
    "encode",
    "from_payload",
    "ignore",
    "reject",
    "to_payload",
]
