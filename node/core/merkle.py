"""Merkle root of a block's transaction hashes.

How it works: RFC 6962 style domain separation. Each leaf is hashed as
``sha256(0x00 || leaf)``, each inner node as ``sha256(0x01 || left || right)``; levels are
built bottom-up pairing neighbours left to right, and an odd node at the end of a level is
promoted unchanged to the next level. The root of no leaves is ``sha256(b"")``. The two
prefixes stop a leaf from being passed off as an inner node (second-preimage attacks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from node.core.encoding import sha256

logger = logging.getLogger(__name__)

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = sha256(b"")


def leaf_hash(leaf: bytes) -> bytes:
    """The hash of one leaf."""
    return sha256(LEAF_PREFIX + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node from its two children."""
    return sha256(NODE_PREFIX + left + right)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of `leaves` (in order); sha256(b"") for no leaves."""
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
