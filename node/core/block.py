"""Blocks: a header, an ordered list of transactions and a commit certificate.

How it works: the header is ``[height, prev_hash, timestamp_ms, proposer, merkle_root,
state_root]`` and the block hash is ``sha256(BLOCK_DOMAIN || canonical(header))``; the
header commits to the transactions through ``merkle_root`` (Merkle root of the transaction
hashes) and to the post-block state through ``state_root``. The certificate is a list of
Ed25519 commit signatures over ``COMMIT_DOMAIN || block_hash``; it is not part of the hash
(validators sign the hash, so it cannot contain their signatures). A block travels and is
stored as ``canonical([header, [tx, ...], [[signer, signature], ...]])``; ``from_bytes``
refuses anything oversize, non-canonical or of the wrong shape with BlockError. Whether a
block is valid for the chain (links, roots, signatures, quorum) is the chain's business.

Costs: a block parsed from bytes keeps them (`to_bytes` returns them: a replica stores what
it received without encoding it again) and its transactions keep their own slices of the
decoded value, encoded once (`Transaction.from_decoded`); a block built here is encoded
from its header and its transactions' kept bytes, once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from node import sigcache
from node.core.encoding import (
    EncodingError,
    array_header,
    canonical,
    decode_canonical,
    sha256,
)
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeKey

logger = logging.getLogger(__name__)

BLOCK_DOMAIN = b"bcfl/block/v1\x00"
COMMIT_DOMAIN = b"bcfl/commit/v1\x00"
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)
MAX_BLOCK_TXS = 10_000
MAX_BLOCK_BYTES = 32 * 1024 * 1024
MAX_CERTIFICATE_SIGS = 4096
MAX_UINT63 = 2**63 - 1


class BlockError(ValueError):
    """A block is malformed or oversize; `reason` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _check_uint(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BlockError("malformed", f"{name} must be an integer")
    if not 0 <= value <= MAX_UINT63:
        raise BlockError("malformed", f"{name} {value} out of range")


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise BlockError("malformed", f"{name} must be {length} bytes")


@dataclass(frozen=True)
class BlockHeader:
    """What a block hash covers."""

    height: int
    prev_hash: bytes
    timestamp_ms: int
    proposer: bytes
    merkle_root: bytes
    state_root: bytes

    def __post_init__(self) -> None:
        _check_uint("height", self.height)
        _check_bytes("prev_hash", self.prev_hash, HASH_BYTES)
        _check_uint("timestamp_ms", self.timestamp_ms)
        _check_bytes("proposer", self.proposer, PUBLIC_KEY_BYTES)
        _check_bytes("merkle_root", self.merkle_root, HASH_BYTES)
        _check_bytes("state_root", self.state_root, HASH_BYTES)

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [
            self.height,
            self.prev_hash,
            self.timestamp_ms,
            self.proposer,
            self.merkle_root,
            self.state_root,
        ]

    @classmethod
    def from_obj(cls, obj: Any) -> BlockHeader:
        """From the canonical list form; raises BlockError("malformed")."""
        if not (isinstance(obj, list) and len(obj) == 6):
            raise BlockError("malformed", "a header is a list of 6 fields")
        return cls(*obj)

    @cached_property
    def hash(self) -> bytes:
        """The block hash: sha256(BLOCK_DOMAIN || canonical(header))."""
        return sha256(BLOCK_DOMAIN + canonical(self.to_obj()))


@dataclass(frozen=True)
class CommitSignature:
    """One validator's signature committing to a block hash."""

    signer: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("signer", self.signer, PUBLIC_KEY_BYTES)
        _check_bytes("signature", self.signature, SIGNATURE_BYTES)

    @staticmethod
    def signing_bytes(block_hash: bytes) -> bytes:
        """What a validator signs to commit to `block_hash`."""
        return COMMIT_DOMAIN + block_hash

    @classmethod
    def create(cls, key: NodeKey, block_hash: bytes) -> CommitSignature:
        """`key`'s commit signature over `block_hash` (remembered as valid by this process's
        signature cache: it is its own)."""
        message = cls.signing_bytes(block_hash)
        signature = key.sign(message)
        sigcache.remember(key.public_key, message, signature)
        return cls(key.public_key, signature)

    def verify(self, block_hash: bytes) -> bool:
        """True if this is the signer's valid commit signature over `block_hash` (checked
        once per process: the PBFT COMMIT carrying it already did, see `node.sigcache`)."""
        return sigcache.verify(self.signer, self.signing_bytes(block_hash), self.signature)

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [self.signer, self.signature]

    @classmethod
    def from_obj(cls, obj: Any) -> CommitSignature:
        """From the canonical list form; raises BlockError("malformed")."""
        if not (isinstance(obj, list) and len(obj) == 2):
            raise BlockError("malformed", "a commit signature is a list of 2 fields")
        return cls(obj[0], obj[1])


@dataclass(frozen=True)
class Block:
    """A header, its transactions and its commit certificate."""

    header: BlockHeader
    txs: tuple[Transaction, ...]
    certificate: tuple[CommitSignature, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.header, BlockHeader):
            raise BlockError("malformed", "header must be a BlockHeader")
        if not isinstance(self.txs, tuple) or not all(
            isinstance(tx, Transaction) for tx in self.txs
        ):
            raise BlockError("malformed", "txs must be a tuple of Transactions")
        if len(self.txs) > MAX_BLOCK_TXS:
            raise BlockError("oversize", f"{len(self.txs)} transactions exceed {MAX_BLOCK_TXS}")
        if not isinstance(self.certificate, tuple) or not all(
            isinstance(sig, CommitSignature) for sig in self.certificate
        ):
            raise BlockError("malformed", "certificate must be a tuple of CommitSignatures")
        if len(self.certificate) > MAX_CERTIFICATE_SIGS:
            raise BlockError(
                "oversize", f"{len(self.certificate)} signatures exceed {MAX_CERTIFICATE_SIGS}"
            )

    @property
    def hash(self) -> bytes:
        """The header hash (the certificate is not part of it)."""
        return self.header.hash

    @property
    def height(self) -> int:
        """The header's height."""
        return self.header.height

    def computed_merkle_root(self) -> bytes:
        """The Merkle root of this block's transaction hashes."""
        return merkle_root([tx.hash for tx in self.txs])

    def with_certificate(self, sigs: Iterable[CommitSignature]) -> Block:
        """This block with its certificate replaced by `sigs`."""
        return dataclasses.replace(self, certificate=tuple(sigs))

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [
            self.header.to_obj(),
            [tx.to_obj() for tx in self.txs],
            [sig.to_obj() for sig in self.certificate],
        ]

    def to_bytes(self) -> bytes:
        """Canonical bytes (what is stored and sent); raises BlockError("oversize")."""
        data = self._encoded
        if len(data) > MAX_BLOCK_BYTES:
            raise BlockError("oversize", f"block of {len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
        return data

    @cached_property
    def _encoded(self) -> bytes:
        # == canonical(self.to_obj()): a list's encoding is its header, then its items'
        return b"".join(
            (
                _BLOCK_HEADER,
                canonical(self.header.to_obj()),
                array_header(len(self.txs)),
                *(tx.to_bytes() for tx in self.txs),
                canonical([sig.to_obj() for sig in self.certificate]),
            )
        )

    @classmethod
    def from_obj(cls, obj: Any) -> Block:
        """From the canonical list form; raises BlockError."""
        return cls._from_obj(obj, decoded=False)

    @classmethod
    def _from_obj(cls, obj: Any, decoded: bool) -> Block:
        """`from_obj`; `decoded`: `obj` was just returned by `decode_canonical`."""
        if not (isinstance(obj, list) and len(obj) == 3):
            raise BlockError("malformed", "a block is a list of 3 fields")
        header_obj, txs_obj, cert_obj = obj
        header = BlockHeader.from_obj(header_obj)
        if not isinstance(txs_obj, list):
            raise BlockError("malformed", "txs must be a list")
        if len(txs_obj) > MAX_BLOCK_TXS:
            raise BlockError("oversize", f"{len(txs_obj)} transactions exceed {MAX_BLOCK_TXS}")
        parse = Transaction.from_decoded if decoded else Transaction.from_obj
        try:
            txs = tuple(parse(tx) for tx in txs_obj)
        except TxError as exc:
            raise BlockError("malformed", f"transaction: {exc}") from None
        if not isinstance(cert_obj, list):
            raise BlockError("malformed", "certificate must be a list")
        if len(cert_obj) > MAX_CERTIFICATE_SIGS:
            raise BlockError(
                "oversize", f"{len(cert_obj)} signatures exceed {MAX_CERTIFICATE_SIGS}"
            )
        certificate = tuple(CommitSignature.from_obj(sig) for sig in cert_obj)
        return cls(header, txs, certificate)

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Parse canonical bytes; raises BlockError on anything wrong."""
        if not isinstance(data, bytes):
            raise BlockError("malformed", "block data must be bytes")
        if len(data) > MAX_BLOCK_BYTES:
            raise BlockError("oversize", f"block of {len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
        try:
            obj = decode_canonical(data, max_bytes=MAX_BLOCK_BYTES)
        except EncodingError as exc:
            raise BlockError("malformed", str(exc)) from None
        block = cls._from_obj(obj, decoded=True)
        block.__dict__["_encoded"] = data if type(data) is bytes else bytes(data)
        return block


_BLOCK_HEADER = b"\x93"  # the encoding's header of the 3-item block list


def genesis_header(state_root: bytes, timestamp_ms: int = 0) -> BlockHeader:
    """The header of block 0: no parent, no proposer, no transactions."""
    return BlockHeader(
        height=0,
        prev_hash=ZERO_HASH,
        timestamp_ms=timestamp_ms,
        proposer=bytes(PUBLIC_KEY_BYTES),
        merkle_root=merkle_root([]),
        state_root=state_root,
    )
