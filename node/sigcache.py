"""Ed25519 verification, once per (key, message, signature) per process.

How it works: every Ed25519 check in a node (the roster, transactions, commit signatures,
PBFT envelopes) goes through `verify`. A successful check is remembered in a bounded LRU
set keyed by ``public_key || sha256(message) || signature`` (128 bytes, so a large message
is not kept alive by the cache), and the same triple later costs one SHA-256 and a dict
lookup instead of a curve check: a transaction verified on arrival is not verified again
inside its block, the commit signatures PBFT checked are not checked again by
`Chain.append`, and a nested proof is verified once however often it is relayed.
Failures are never cached: a bad signature is checked (and refused) every time, and a
cached entry can only say "valid" for exactly the bytes that were verified (SHA-256 is
collision resistant, so a different message cannot hit another message's entry).

`remember` adds a signature this process has just made with its own private key (a
transaction it signed, a commit signature over a block it built): valid by construction,
so the node does not check its own signature when its transaction comes back inside a
block. Everyone else's signatures are checked as before.

Batch verification: libsodium (PyNaCl 1.6) and `cryptography` offer no Ed25519 batch
verification API, so each signature is checked alone; this cache removes the repeats,
which were the larger cost (each of n replicas re-verifying what it had already checked).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import nacl.bindings
import nacl.exceptions

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
DEFAULT_SIZE = 8192


class VerifyCache:
    """A bounded LRU set of verified (key, message digest, signature) triples; thread-safe."""

    def __init__(self, max_entries: int = DEFAULT_SIZE) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self.failures = 0
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ok)

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._ok.clear()
            self.hits = self.misses = self.failures = 0

    def remember(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        """Record `signature` as `public_key`'s valid signature of `message` without a
        check: only for a signature this process made itself with that key."""
        if not self.enabled or self.max_entries == 0:
            return
        key = public_key + hashlib.sha256(message).digest() + signature
        with self._lock:
            self._ok[key] = None
            self._ok.move_to_end(key)
            while len(self._ok) > self.max_entries:
                self._ok.popitem(last=False)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True if `signature` is `public_key`'s Ed25519 signature of `message`."""
        if (
            not isinstance(public_key, bytes)
            or len(public_key) != PUBLIC_KEY_BYTES
            or not isinstance(signature, bytes)
            or len(signature) != SIGNATURE_BYTES
        ):
            return False
        if not self.enabled or self.max_entries == 0:
            return _check(public_key, message, signature)
        key = public_key + hashlib.sha256(message).digest() + signature
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                self.hits += 1
                return True
        if not _check(public_key, message, signature):
            with self._lock:
                self.failures += 1
            return False
        with self._lock:
            self.misses += 1
            self._ok[key] = None
            while len(self._ok) > self.max_entries:
                self._ok.popitem(last=False)
        return True


def _check(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """One Ed25519 verification by libsodium."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


CACHE = VerifyCache()


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Verify through the process-wide cache (see the module docstring)."""
    return CACHE.verify(public_key, message, signature)


def remember(public_key: bytes, message: bytes, signature: bytes) -> None:
    """`VerifyCache.remember` on the process-wide cache: for this process's own signatures."""
    CACHE.remember(public_key, message, signature)
