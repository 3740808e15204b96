"""Finality rules: when a block of a chain is final (sans-IO, pure checks of a block).

How it works
------------
Every chain carries one `Finality` in its `ChainConfig`, agreed before block 1 (it is part of
the config a store keeps to recognise its chain). `Chain.validate` asks it, after the block's
links, roots and transactions, whether the block's certificate makes it final:
`check(block)` returns or raises `FinalityError` with a one-line detail (the ledger reports it
as ``bad_certificate``). A rule only looks at the block (header and certificate): the commit
signatures are Ed25519 signatures over ``COMMIT_DOMAIN || block_hash`` (`CommitSignature`).

Kinds (the registry `FINALITY`, keyed by `kind`; `finality_from_dict` reads `to_dict()`):

- ``single-writer``: one node writes the chain; a block is final with exactly one commit
  signature, the writer's (a publisher's task chain, a device's own log).
- ``committee``: a block is final with valid commit signatures of at least `quorum` distinct
  members of a fixed node set (any nodes: MECs, devices, a mix); `Committee.bft(members)` is
  the PBFT committee, quorum 2f+1 with f = (n-1)//3. The committer that gathers them (PBFT)
  lives in the roles; this rule only checks the result.

Room for more kinds: subclass `Finality`, give it a new `kind`, implement `check`, `to_dict`
and `from_dict`, and decorate it with `@register`. A proof-of-learning kind (BEES: the main
node elected by I = n·c/B) checks that the certificate is the elected node's signature and
carries its claimed accuracy/work in the block's transactions; a proof-of-work kind checks
that the block hash falls below its `target` (the work then lives in the header fields the
proposer varies, e.g. the timestamp or a nonce transaction). Both stay pure functions of the
block and the rule's parameters, so every replica decides alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from node.core.block import Block
from node.keys import PUBLIC_KEY_BYTES

__all__ = [
    "FINALITY",
    "Committee",
    "Finality",
    "FinalityError",
    "SingleWriter",
    "finality_from_dict",
    "register",
]


class FinalityError(Exception):
    """A block is not final under its chain's rule; `detail` says why (one line)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Finality(ABC):
    """A chain's rule for when a block is final."""

    kind: ClassVar[str]

    @abstractmethod
    def check(self, block: Block) -> None:
        """Return if `block`'s certificate makes it final; raise FinalityError otherwise."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with ``kind`` (what `finality_from_dict` reads)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Finality:
        """Inverse of `to_dict` (``kind`` already checked); raises ValueError/KeyError."""

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The keys whose commit signatures can count (for display; empty if none)."""
        return ()


FINALITY: dict[str, type[Finality]] = {}

F = TypeVar("F", bound=type[Finality])


def register(cls: F) -> F:
    """Add a `Finality` subclass to `FINALITY` under its `kind`."""
    if cls.kind in FINALITY:
        raise ValueError(f"finality kind {cls.kind!r} is already registered")
    FINALITY[cls.kind] = cls
    return cls


def finality_from_dict(d: dict[str, Any]) -> Finality:
    """The rule `d` (a `to_dict()` result) describes; raises ValueError naming the kind."""
    if not isinstance(d, dict):
        raise ValueError("finality must be a mapping with a 'kind'")
    kind = d.get("kind")
    cls = FINALITY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        allowed = ", ".join(sorted(FINALITY))
        raise ValueError(f"finality kind {kind!r} is unknown; allowed: {allowed}")
    try:
        return cls.from_dict(d)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"finality {kind}: {exc!r}") from None


def _key(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_BYTES:
        raise ValueError(f"{what} must be a {PUBLIC_KEY_BYTES}-byte public key")
    return value


def _hex_key(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string")
    return _key(bytes.fromhex(value), what)


@register
@dataclass(frozen=True)
class SingleWriter(Finality):
    """Final with exactly one commit signature, by `writer`."""

    kind: ClassVar[str] = "single-writer"
    writer: bytes

    def __post_init__(self) -> None:
        _key(self.writer, "writer")

    def check(self, block: Block) -> None:
        """One valid signature by the writer."""
        if len(block.certificate) != 1:
            raise FinalityError(f"{len(block.certificate)} signatures, the writer's one expected")
        sig = block.certificate[0]
        if sig.signer != self.writer:
            raise FinalityError("signer is not the chain's writer")
        if not sig.verify(block.hash):
            raise FinalityError("invalid commit signature")

    def to_dict(self) -> dict[str, Any]:
        """``{kind, writer}`` (hex)."""
        return {"kind": self.kind, "writer": self.writer.hex()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SingleWriter:
        """Inverse of `to_dict`."""
        return cls(_hex_key(d["writer"], "writer"))

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The writer."""
        return (self.writer,)


@register
@dataclass(frozen=True)
class Committee(Finality):
    """Final with valid commit signatures of at least `quorum` distinct `members`."""

    kind: ClassVar[str] = "committee"
    members: tuple[bytes, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple) or not self.members:
            raise ValueError("members must be a non-empty tuple of public keys")
        for i, member in enumerate(self.members):
            _key(member, f"members[{i}]")
        if len(set(self.members)) != len(self.members):
            raise ValueError("members must be distinct")
        if not isinstance(self.quorum, int) or not 1 <= self.quorum <= len(self.members):
            raise ValueError(f"quorum {self.quorum} must be in 1..{len(self.members)}")

    @classmethod
    def bft(cls, members: Iterable[bytes]) -> Committee:
        """A PBFT committee of `members`: quorum 2f+1, f = (n-1)//3 faults tolerated."""
        keys = tuple(members)
        return cls(keys, 2 * ((len(keys) - 1) // 3) + 1)

    def check(self, block: Block) -> None:
        """Every signature valid and by a member; at least `quorum` distinct signers."""
        members = set(self.members)
        signers: set[bytes] = set()
        for sig in block.certificate:
            if sig.signer not in members:
                raise FinalityError("signer is not a committee member")
            if not sig.verify(block.hash):
                raise FinalityError("invalid commit signature")
            signers.add(sig.signer)
        if len(signers) < self.quorum:
            raise FinalityError(f"{len(signers)} of {self.quorum} signatures")

    def to_dict(self) -> dict[str, Any]:
        """``{kind, members, quorum}`` (members in hex)."""
        return {
            "kind": self.kind,
            "members": [m.hex() for m in self.members],
            "quorum": self.quorum,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Committee:
        """Inverse of `to_dict`."""
        members = d["members"]
        if not isinstance(members, list):
            raise ValueError("members must be a list")
        quorum = d["quorum"]
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            raise ValueError("quorum must be an integer")
        return cls(tuple(_hex_key(m, f"members[{i}]") for i, m in enumerate(members)), quorum)

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The members."""
        return self.members
