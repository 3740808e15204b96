"""Signed transactions: a call of one contract method by one registered key.

A transaction is ``(type, sender, nonce, payload, signature)``. ``type`` names the
contract and method (``"task.record_update"``); ``sender`` is the 32-byte Ed25519 public
key; ``nonce`` must be greater than the sender's last used nonce (the chain enforces it,
which stops replays while allowing gaps for transactions never included); ``payload`` is
a canonical map of at most MAX_PAYLOAD_BYTES; the signature covers
``TX_DOMAIN || canonical([type, sender, nonce, payload])``. The hash is SHA-256 of the
canonical bytes of the whole signed transaction. Model weights never go in a payload:
only their blob hash and size.

Costs: a transaction's canonical bytes (hence its hash) are computed once and kept on the
(frozen) object; one parsed from bytes keeps those bytes. `verify` encodes the payload once
per call, for the form check and the signed message together, from the fields as they are
then, so nothing kept from an earlier call can make a transaction whose fields differ from
what was signed pass. (The payload map is not copied: like the hash, the kept bytes assume
nobody changes a transaction's payload in place; nothing does.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from node import sigcache
from node.core.encoding import (
    EncodingError,
    canonical,
    decode_canonical,
    packb_normal,
    sha256,
)
from node.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeKey

TX_DOMAIN = b"bcfl/tx/v1\x00"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NONCE = 2**63 - 1
TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,31}")


class TxError(ValueError):
    """A transaction is malformed, oversize or badly signed; `reason` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Transaction:
    """One signed contract call."""

    type: str
    sender: bytes
    nonce: int
    payload: dict[str, Any]
    signature: bytes

    @staticmethod
    def signing_bytes_for(type_: str, sender: bytes, nonce: int, payload: dict[str, Any]) -> bytes:
        """What the sender signs."""
        return TX_DOMAIN + canonical([type_, sender, nonce, payload])

    @classmethod
    def create(cls, key: NodeKey, type_: str, nonce: int, payload: dict[str, Any]) -> Transaction:
        """A transaction signed by `key`; raises TxError if it is not well-formed."""
        tx = cls(type_, key.public_key, nonce, payload, b"")
        tx.check_form()
        message = cls.signing_bytes_for(type_, key.public_key, nonce, payload)
        signature = key.sign(message)
        sigcache.remember(key.public_key, message, signature)  # ours: valid when it returns
        return cls(type_, key.public_key, nonce, payload, signature)

    def check_form(self) -> None:
        """Raise TxError("malformed" | "oversize") unless the fields are well-formed."""
        self._checked_payload()

    def _check_fields(self) -> None:
        if not isinstance(self.type, str) or not TYPE_RE.fullmatch(self.type):
            raise TxError("malformed", f"type {self.type!r} must be 'contract.method'")
        if not isinstance(self.sender, bytes) or len(self.sender) != PUBLIC_KEY_BYTES:
            raise TxError("malformed", "sender must be a 32-byte public key")
        if not isinstance(self.nonce, int) or isinstance(self.nonce, bool):
            raise TxError("malformed", "nonce must be an integer")
        if not 0 <= self.nonce <= MAX_NONCE:
            raise TxError("malformed", f"nonce {self.nonce} out of range")
        if not isinstance(self.payload, dict):
            raise TxError("malformed", "payload must be a map")

    def _checked_payload(self) -> bytes:
        """The payload's canonical bytes, after the checks of `check_form`."""
        self._check_fields()
        try:
            data = canonical(self.payload)
        except EncodingError as exc:
            raise TxError("malformed", f"payload: {exc}") from None
        _check_size(len(data))
        return data

    def verify(self) -> None:
        """Raise TxError unless the transaction is well-formed and its signature is valid."""
        payload = self._checked_payload()
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_BYTES:
            raise TxError("bad_signature", "signature must be 64 bytes")
        # == signing_bytes_for(...): a list's encoding is its header, then its items'
        head = canonical([self.type, self.sender, self.nonce])
        message = TX_DOMAIN + _SIGNED_HEADER + head[1:] + payload
        if not sigcache.verify(self.sender, message, self.signature):  # once per process
            raise TxError("bad_signature", f"transaction {self.hash.hex()[:16]}")

    def to_obj(self) -> list[Any]:
        """The canonical list form."""
        return [self.type, self.sender, self.nonce, self.payload, self.signature]

    def to_bytes(self) -> bytes:
        """Canonical bytes (what is hashed, stored and sent)."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return canonical(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Transaction:
        """From the canonical list form; raises TxError("malformed") on a wrong shape."""
        if not (isinstance(obj, list) and len(obj) == 5):
            raise TxError("malformed", "a transaction is a list of 5 fields")
        type_, sender, nonce, payload, signature = obj
        tx = cls(type_, sender, nonce, payload, signature)
        tx.check_form()
        if not isinstance(signature, bytes):
            raise TxError("malformed", "signature must be bytes")
        return tx

    @classmethod
    def from_decoded(cls, obj: Any, data: bytes | None = None) -> Transaction:
        """`from_obj` of a value just returned by `decode_canonical` (or a part of one),
        whose canonical bytes are therefore packed as they are; `data`, if given, are
        those bytes. Same checks and errors as `from_obj`."""
        if not (type(obj) is list and len(obj) == 5):
            return cls.from_obj(obj)  # raises
        type_, sender, nonce, payload, signature = obj
        tx = cls(type_, sender, nonce, payload, signature)
        tx._check_fields()
        _check_size(len(packb_normal(payload)))
        if not isinstance(signature, bytes):
            raise TxError("malformed", "signature must be bytes")
        tx.__dict__["_encoded"] = data if data is not None else packb_normal(obj)
        return tx

    @classmethod
    def from_bytes(cls, data: bytes) -> Transaction:
        """Parse canonical bytes; raises TxError."""
        if len(data) > MAX_PAYLOAD_BYTES + 1024:
            raise TxError("oversize", f"transaction of {len(data)} bytes")
        try:
            obj = decode_canonical(data)
        except EncodingError as exc:
            raise TxError("malformed", str(exc)) from None
        return cls.from_decoded(obj, data if type(data) is bytes else None)

    @cached_property
    def hash(self) -> bytes:
        """SHA-256 of the canonical bytes."""
        return sha256(self.to_bytes())


_SIGNED_HEADER = b"\x94"  # the encoding's header of the 4-item signed list


def _check_size(size: int) -> None:
    if size > MAX_PAYLOAD_BYTES:
        raise TxError("oversize", f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")
