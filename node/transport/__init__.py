"""Transports move opaque frames between node ids; codecs and roles sit above them."""

from node.transport.base import Transport, TransportStats
from node.transport.memory import InMemoryNetwork, InMemoryTransport
from node.transport.shaping import LinkShaper, ShapedTransport

__all__ = [
    "InMemoryNetwork",
    "InMemoryTransport",
    "LinkShaper",
    "ShapedTransport",
    "Transport",
    "TransportStats",
]
