"""Per-node Ed25519 keys and the run's roster of public keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from node import sigcache

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True)
class NodeKey:
    """A node's Ed25519 signing key."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key (one per node per run)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """A key from its 32-byte seed."""
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        """Read a key written by `save` (hex seed)."""
        return cls.from_seed(bytes.fromhex(path.read_text().strip()))

    def save(self, path: Path) -> None:
        """Write the seed as hex, readable by the owner only."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bytes(self.signing_key).hex())

    @property
    def public_key(self) -> bytes:
        """The 32-byte verify key."""
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte signature."""
        return self.signing_key.sign(message).signature


class Roster:
    """The run's node ids and their public keys: who may send to whom."""

    def __init__(self, public_keys: Mapping[str, bytes]) -> None:
        for node_id, key in public_keys.items():
            if len(key) != PUBLIC_KEY_BYTES:
                raise ValueError(
                    f"roster[{node_id!r}]: public key must be {PUBLIC_KEY_BYTES} bytes"
                )
        self._keys = {nid: bytes(k) for nid, k in public_keys.items()}

    @classmethod
    def from_hex(cls, public_keys: Mapping[str, str]) -> Roster:
        """A roster from {node id: hex public key}."""
        return cls({nid: bytes.fromhex(k) for nid, k in public_keys.items()})

    def to_hex(self) -> dict[str, str]:
        """{node id: hex public key}, for writing into files."""
        return {nid: k.hex() for nid, k in self._keys.items()}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        """Node ids in roster order."""
        return list(self._keys)

    def verify(self, node_id: str, message: bytes, signature: bytes) -> bool:
        """True if `signature` is `node_id`'s signature of `message` (checked once per
        process: see `node.sigcache`)."""
        key = self._keys.get(node_id)
        if key is None or len(signature) != SIGNATURE_BYTES:
            return False
        return sigcache.verify(key, message, signature)
