"""PBFT wire messages: a signed canonical envelope and the typed bodies inside it.

How it works: every message travels as ``canonical([VERSION, kind, sender, body, sig])``
where ``sig`` is the sender's Ed25519 signature over
``MSG_DOMAIN || canonical([VERSION, kind, sender, body])``. `open_envelope` checks the
shape (never unpickles anything) and parses the body into a frozen dataclass;
`Group.verify` checks that the sender is a replica and the signature is its own. Nested
proofs (checkpoint and prepared certificates in VIEW-CHANGE, view changes in NEW-VIEW,
commit certificates in COMMITTED) are carried as the raw signed envelopes, so every
replica re-verifies them. A COMMIT also carries ``csig``, the sender's
`CommitSignature` over the block digest, so 2f+1 commits form a ledger certificate.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node import sigcache
from node.core.block import CommitSignature
from node.core.encoding import EncodingError, canonical, decode_canonical
from node.keys import SIGNATURE_BYTES, NodeKey

VERSION = 1
MSG_DOMAIN = b"bcfl/pbft/v1\x00"
DIGEST_BYTES = 32
NULL_DIGEST = bytes(DIGEST_BYTES)
MAX_MESSAGE_BYTES = 96 * 1024 * 1024
MAX_LIST = 4096
MAX_UINT = 2**63 - 1


class MessageError(ValueError):
    """A message is refused; `reason` is the stats key it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _uint(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_UINT:
        raise MessageError("malformed", "expected an unsigned integer")
    return v


def _bytes(v: Any, length: int | None = None) -> bytes:
    if not isinstance(v, bytes) or (length is not None and len(v) != length):
        raise MessageError("malformed", f"expected {length or 'some'} bytes")
    return v


def _list(v: Any, length: int | None = None) -> list[Any]:
    if not isinstance(v, list) or len(v) > MAX_LIST or (length is not None and len(v) != length):
        raise MessageError("malformed", "expected a list")
    return v


@dataclass(frozen=True)
class Request:
    """A request forwarded to the primary."""

    request: bytes


@dataclass(frozen=True)
class PrePrepare:
    """The primary assigns `digest` (carried in full as `request`) to `seq` in `view`."""

    view: int
    seq: int
    digest: bytes
    request: bytes


@dataclass(frozen=True)
class Prepare:
    """A backup accepted the pre-prepare (view, seq, digest)."""

    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True)
class CommitMsg:
    """A replica is prepared for (view, seq, digest); `csig` signs COMMIT_DOMAIN + digest."""

    view: int
    seq: int
    digest: bytes
    csig: bytes


@dataclass(frozen=True)
class Checkpoint:
    """The replica's state digest after executing `seq`."""

    seq: int
    state: bytes


@dataclass(frozen=True)
class ViewChange:
    """Move to `new_view`: stable checkpoint proof and prepared certificates above it."""

    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[bytes, ...]
    prepared: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    last_exec: int


@dataclass(frozen=True)
class NewView:
    """The new primary's proof (2f+1 view changes) and its re-issued pre-prepares O."""

    view: int
    view_changes: tuple[bytes, ...]
    pre_prepares: tuple[bytes, ...]


@dataclass(frozen=True)
class Fetch:
    """Ask for committed entries from `from_seq` on."""

    from_seq: int


@dataclass(frozen=True)
class Committed:
    """Committed entries: (seq, request, 2f+1 raw COMMIT envelopes) each."""

    entries: tuple[tuple[int, bytes, tuple[bytes, ...]], ...]


Body = (
    Request
    | PrePrepare
    | Prepare
    | CommitMsg
    | Checkpoint
    | ViewChange
    | NewView
    | Fetch
    | Committed
)


def _raws(v: Any) -> tuple[bytes, ...]:
    return tuple(_bytes(x) for x in _list(v))


def _parse_body(kind: str, b: Any) -> Body:
    if kind == "request":
        return Request(_bytes(_list(b, 1)[0]))
    if kind == "preprepare":
        b = _list(b, 4)
        return PrePrepare(_uint(b[0]), _uint(b[1]), _bytes(b[2], DIGEST_BYTES), _bytes(b[3]))
    if kind == "prepare":
        b = _list(b, 3)
        return Prepare(_uint(b[0]), _uint(b[1]), _bytes(b[2], DIGEST_BYTES))
    if kind == "commit":
        b = _list(b, 4)
        return CommitMsg(
            _uint(b[0]), _uint(b[1]), _bytes(b[2], DIGEST_BYTES), _bytes(b[3], SIGNATURE_BYTES)
        )
    if kind == "checkpoint":
        b = _list(b, 2)
        return Checkpoint(_uint(b[0]), _bytes(b[1], DIGEST_BYTES))
    if kind == "viewchange":
        b = _list(b, 5)
        prepared = []
        for entry in _list(b[3]):
            entry = _list(entry, 2)
            prepared.append((_bytes(entry[0]), _raws(entry[1])))
        return ViewChange(_uint(b[0]), _uint(b[1]), _raws(b[2]), tuple(prepared), _uint(b[4]))
    if kind == "newview":
        b = _list(b, 3)
        return NewView(_uint(b[0]), _raws(b[1]), _raws(b[2]))
    if kind == "fetch":
        return Fetch(_uint(_list(b, 1)[0]))
    if kind == "committed":
        entries = []
        for e in _list(b):
            e = _list(e, 3)
            entries.append((_uint(e[0]), _bytes(e[1]), _raws(e[2])))
        return Committed(tuple(entries))
    raise MessageError("unknown_kind", kind)


def body_obj(body: Body) -> tuple[str, list[Any]]:
    """The (kind, canonical list) form of a body."""
    match body:
        case Request():
            return "request", [body.request]
        case PrePrepare():
            return "preprepare", [body.view, body.seq, body.digest, body.request]
        case Prepare():
            return "prepare", [body.view, body.seq, body.digest]
        case CommitMsg():
            return "commit", [body.view, body.seq, body.digest, body.csig]
        case Checkpoint():
            return "checkpoint", [body.seq, body.state]
        case ViewChange():
            prepared = [[pp, list(ps)] for pp, ps in body.prepared]
            return "viewchange", [
                body.new_view,
                body.stable_seq,
                list(body.checkpoint_proof),
                prepared,
                body.last_exec,
            ]
        case NewView():
            return "newview", [body.view, list(body.view_changes), list(body.pre_prepares)]
        case Fetch():
            return "fetch", [body.from_seq]
        case Committed():
            return "committed", [[s, r, list(c)] for s, r, c in body.entries]
    raise TypeError(f"not a PBFT body: {body!r}")


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet verified, signed message."""

    kind: str
    sender: str
    body: Body
    signed: bytes
    signature: bytes
    raw: bytes


def seal(key: NodeKey, sender: str, body: Body) -> bytes:
    """The signed wire bytes of `body` from `sender`."""
    kind, obj = body_obj(body)
    signed = canonical([VERSION, kind, sender, obj])
    return canonical([VERSION, kind, sender, obj, key.sign(MSG_DOMAIN + signed)])


@functools.lru_cache(maxsize=65536)
def open_envelope(raw: bytes) -> Envelope:
    """Parse wire bytes (shape only; see `Group.verify`); raises MessageError."""
    if not isinstance(raw, bytes) or len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError("oversize", "message too large")
    try:
        obj = decode_canonical(raw, max_bytes=MAX_MESSAGE_BYTES)
    except EncodingError as exc:
        raise MessageError("malformed", str(exc)) from None
    obj = _list(obj, 5)
    if obj[0] != VERSION:
        raise MessageError("bad_version", repr(obj[0]))
    kind, sender = obj[1], obj[2]
    if not isinstance(kind, str) or not isinstance(sender, str):
        raise MessageError("malformed", "kind and sender must be strings")
    body = _parse_body(kind, obj[3])
    signed = canonical(obj[:4])
    return Envelope(kind, sender, body, signed, _bytes(obj[4], SIGNATURE_BYTES), raw)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification, once per (key, message, signature) per process (`sigcache`)."""
    return sigcache.verify(public_key, message, signature)


class Group:
    """The replica set: ids in order, public keys, f and the quorum 2f+1."""

    def __init__(self, replicas: Sequence[tuple[str, bytes]]) -> None:
        self.ids = tuple(rid for rid, _ in replicas)
        self.keys = dict(replicas)
        if len(self.keys) != len(self.ids) or len(self.ids) < 4:
            raise ValueError("need at least 4 replicas with distinct ids")
        self.n = len(self.ids)
        self.f = (self.n - 1) // 3
        self.quorum = 2 * self.f + 1

    def primary(self, view: int) -> str:
        """The primary of `view`."""
        return self.ids[view % self.n]

    def verify(self, env: Envelope) -> None:
        """Raise MessageError unless `env` is signed by its sender, a replica."""
        key = self.keys.get(env.sender)
        if key is None:
            raise MessageError("unknown_sender", env.sender)
        if not verify_signature(key, MSG_DOMAIN + env.signed, env.signature):
            raise MessageError("bad_signature", env.sender)

    def open(self, raw: bytes, kind: str) -> Envelope:
        """Parse and verify a nested raw message that must be of `kind`."""
        env = open_envelope(raw)
        if env.kind != kind:
            raise MessageError("malformed", f"expected a nested {kind}")
        self.verify(env)
        return env

    def commit_sig_ok(self, sender: str, digest: bytes, csig: bytes) -> bool:
        """True if `csig` is `sender`'s CommitSignature over `digest`."""
        key = self.keys.get(sender)
        return key is not None and verify_signature(
            key, CommitSignature.signing_bytes(digest), csig
        )
