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

- ``proof-of-work``: a block is final when its hash, read as a 256-bit big-endian integer, is
  below ``2**(256 - difficulty_bits)`` and its certificate is exactly one valid commit
  signature, by the block's proposer, who is one of the rule's `miners` (the winning miner
  signs). The work lives in the header's ``timestamp_ms`` (our choice: the header has no
  nonce field and a nonce transaction would need a signature per attempt): a miner builds its
  candidate once and tries ``timestamp_ms = t0, t0 + 1, ...`` (`mine`), so a mined block's
  timestamp is at least the wall clock when mining started and runs ahead of it by the
  number of attempts (about ``2**difficulty_bits`` ms on average). No contract reads the
  block timestamp, so the state root does not change with it. Which of two competing valid
  blocks a replica keeps (forks) is the scheme's fork choice, not this rule's. So a PoW
  block's timestamp is not when it was proposed: the winning miner records that itself
  (when it began mining the block, and when it found the proof, which is when the block
  became final) with `ChainStore.record_proposal`, and the run's block timings
  (`node.ledger.timing`) take those. We kept the search in the timestamp rather than add a
  nonce field: a seventh header field would change every block's hash and encoding. For
  the other kinds the timestamp is the proposal time: a single writer's when it built the
  block, a committee's when the transactions were submitted to it.

- ``proof-of-learning`` (BEES): a block is final when its certificate is exactly one valid
  commit signature, by the block's proposer, who is one of the rule's `members` (the edge
  servers) — proof of work without the puzzle. Who may propose height h is the rank-r node of
  the PoL ranking (argmax I_k = n_k·c_k/B_k first) computed from the state at block h-1:
  that is state-dependent, so this rule (a function of the block alone) cannot check it. The
  election is enforced by the BEES contract: the proposer puts ``bees.elect {round, rank}``
  in its block and the contract rejects the block (its transactions do not apply, so the
  chain refuses it) unless the proposer is ``ranking[rank]`` at the parent state. When each
  rank's turn comes (rank r after r timeouts), and which block a node accepts first, is the
  PoL core's business (`node.consensus.pol`), for liveness.

Room for more kinds: subclass `Finality`, give it a new `kind`, implement `check`, `to_dict`
and `from_dict`, and decorate it with `@register`. Every kind stays a pure function of the
block and the rule's parameters, so every replica decides alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from node.core.block import BLOCK_DOMAIN, Block, BlockHeader
from node.core.encoding import canonical, sha256
from node.keys import PUBLIC_KEY_BYTES

__all__ = [
    "FINALITY",
    "Committee",
    "Finality",
    "FinalityError",
    "ProofOfLearning",
    "ProofOfWork",
    "SingleWriter",
    "finality_from_dict",
    "meets_target",
    "mine",
    "pow_target",
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


MAX_DIFFICULTY_BITS = 64


def pow_target(difficulty_bits: int) -> int:
    """The exclusive upper bound a block hash (as an integer) must fall below."""
    return 1 << (256 - difficulty_bits)


def meets_target(block_hash: bytes, difficulty_bits: int) -> bool:
    """True if `block_hash` (big-endian) is below the target of `difficulty_bits`."""
    return int.from_bytes(block_hash, "big") < pow_target(difficulty_bits)


def mine(
    candidate: BlockHeader, difficulty_bits: int, first: int, attempts: int
) -> BlockHeader | None:
    """Search ``timestamp_ms`` in ``first .. first + attempts - 1`` for a header of
    `candidate` (every other field kept) whose hash meets the target; None if this slice has
    none (the caller goes on from ``first + attempts``, e.g. from a timer, so that its loop
    stays responsive). Pure: the same arguments give the same answer."""
    if attempts < 0 or first < 0:
        raise ValueError("first and attempts must be non-negative")
    target = pow_target(difficulty_bits)
    fields = candidate.to_obj()
    # hashed as `BlockHeader.hash` hashes, without building a header per attempt
    for ts in range(first, first + attempts):
        fields[2] = ts
        if int.from_bytes(sha256(BLOCK_DOMAIN + canonical(fields)), "big") < target:
            return BlockHeader(*fields)  # checks the range of ts
    return None


def check_sole_proposer(block: Block, allowed: tuple[bytes, ...], who: str) -> None:
    """The certificate is exactly one valid commit signature, by the block's proposer, one
    of `allowed` (a `who`: "miner", "member"); FinalityError naming what is wrong."""
    if len(block.certificate) != 1:
        raise FinalityError(f"{len(block.certificate)} signatures, the {who}'s one expected")
    sig = block.certificate[0]
    if sig.signer not in allowed:
        raise FinalityError(f"signer is not a {who}")
    if sig.signer != block.header.proposer:
        raise FinalityError("signer is not the block's proposer")
    if not sig.verify(block.hash):
        raise FinalityError("invalid commit signature")


@register
@dataclass(frozen=True)
class ProofOfWork(Finality):
    """Final when the block hash meets the ``difficulty_bits`` target and the certificate is
    one valid signature by the block's proposer, one of `miners`."""

    kind: ClassVar[str] = "proof-of-work"
    miners: tuple[bytes, ...]
    difficulty_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.miners, tuple) or not self.miners:
            raise ValueError("miners must be a non-empty tuple of public keys")
        for i, miner in enumerate(self.miners):
            _key(miner, f"miners[{i}]")
        if len(set(self.miners)) != len(self.miners):
            raise ValueError("miners must be distinct")
        bits = self.difficulty_bits
        if not isinstance(bits, int) or isinstance(bits, bool):
            raise ValueError("difficulty_bits must be an integer")
        if not 0 <= bits <= MAX_DIFFICULTY_BITS:
            raise ValueError(f"difficulty_bits {bits} must be in 0..{MAX_DIFFICULTY_BITS}")

    @property
    def target(self) -> int:
        """The exclusive bound on the block hash (as a big-endian integer)."""
        return pow_target(self.difficulty_bits)

    def check(self, block: Block) -> None:
        """Hash below the target; one valid signature, by the proposer, a miner."""
        if not meets_target(block.hash, self.difficulty_bits):
            raise FinalityError(f"block hash above the target of {self.difficulty_bits} bits")
        check_sole_proposer(block, self.miners, "miner")

    def to_dict(self) -> dict[str, Any]:
        """``{kind, miners, difficulty_bits}`` (miners in hex)."""
        return {
            "kind": self.kind,
            "miners": [m.hex() for m in self.miners],
            "difficulty_bits": self.difficulty_bits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProofOfWork:
        """Inverse of `to_dict`."""
        miners = d["miners"]
        if not isinstance(miners, list):
            raise ValueError("miners must be a list")
        bits = d["difficulty_bits"]
        if not isinstance(bits, int) or isinstance(bits, bool):
            raise ValueError("difficulty_bits must be an integer")
        return cls(tuple(_hex_key(m, f"miners[{i}]") for i, m in enumerate(miners)), bits)

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The miners."""
        return self.miners


@register
@dataclass(frozen=True)
class ProofOfLearning(Finality):
    """Final when the certificate is one valid signature by the block's proposer, one of
    `members` (BEES edge servers; the election itself is the contract's check)."""

    kind: ClassVar[str] = "proof-of-learning"
    members: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple) or not self.members:
            raise ValueError("members must be a non-empty tuple of public keys")
        for i, member in enumerate(self.members):
            _key(member, f"members[{i}]")
        if len(set(self.members)) != len(self.members):
            raise ValueError("members must be distinct")

    def check(self, block: Block) -> None:
        """One valid signature, by the proposer, a member."""
        check_sole_proposer(block, self.members, "member")

    def to_dict(self) -> dict[str, Any]:
        """``{kind, members}`` (members in hex)."""
        return {"kind": self.kind, "members": [m.hex() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProofOfLearning:
        """Inverse of `to_dict`."""
        members = d["members"]
        if not isinstance(members, list):
            raise ValueError("members must be a list")
        return cls(tuple(_hex_key(m, f"members[{i}]") for i, m in enumerate(members)))

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The members."""
        return self.members
