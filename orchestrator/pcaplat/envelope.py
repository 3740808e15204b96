"""Peek a bcfl frame's header (type, sender, seq) from its first bytes.

How it works
------------
A bcfl frame is the msgpack array ``["bcfl", VERSION, type, sender, seq, body, signature]``
(`node.codec`). msgpack's streaming `Unpacker` is fed the first bytes of the message and
reads the array header and the first five items only: the body and the signature are never
read, the signature never checked. Limits on string and array sizes keep a hostile or
garbage payload from allocating anything large. A payload that is not a bcfl frame raises
`NotBcfl`; one whose header bytes were not all captured raises `HeaderIncomplete`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

from node.codec import MAGIC, VERSION

# The codec's patterns for a message type and a node id (node.codec._TYPE_RE / _ID_RE).
TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
ID_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
ENVELOPE_ITEMS = 7


class NotBcfl(ValueError):
    """The payload is not a bcfl frame; the message says what was wrong."""


class HeaderIncomplete(NotBcfl):
    """The first bytes end before the header does (a truncated capture)."""


@dataclass(frozen=True)
class Header:
    """A bcfl frame's identity: its type, sender and sequence number."""

    type: str
    sender: str
    seq: int


def peek(head: bytes) -> Header:
    """The (type, sender, seq) of the bcfl frame starting with `head`; raises NotBcfl (or
    HeaderIncomplete) otherwise."""
    unpacker = msgpack.Unpacker(
        raw=False,
        max_buffer_size=max(len(head), 1),
        max_str_len=64,
        max_bin_len=0,
        max_array_len=ENVELOPE_ITEMS,
        max_map_len=0,
        max_ext_len=0,
    )
    unpacker.feed(head)
    try:
        n = unpacker.read_array_header()
        if n != ENVELOPE_ITEMS:
            raise NotBcfl(f"an array of {n} items, not {ENVELOPE_ITEMS}")
        magic, version, msg_type, sender, seq = (unpacker.unpack() for _ in range(5))
    except msgpack.OutOfData:
        raise HeaderIncomplete(f"header cut short after {len(head)} bytes") from None
    except NotBcfl:
        raise
    except Exception as exc:  # msgpack raises many types on garbage
        raise NotBcfl(f"not msgpack ({type(exc).__name__})") from None
    if magic != MAGIC:
        raise NotBcfl(f"magic {magic!r}, expected {MAGIC!r}")
    if type(version) is not int or version != VERSION:
        raise NotBcfl(f"version {version!r}, expected {VERSION}")
    if not (isinstance(msg_type, str) and TYPE_RE.fullmatch(msg_type)):
        raise NotBcfl(f"bad message type {msg_type!r:.40}")
    if not (isinstance(sender, str) and ID_RE.fullmatch(sender)):
        raise NotBcfl(f"bad sender {sender!r:.40}")
    if type(seq) is not int or seq < 0:
        raise NotBcfl(f"bad sequence number {seq!r:.40}")
    return Header(msg_type, sender, seq)
