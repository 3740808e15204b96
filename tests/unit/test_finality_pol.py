"""The proof-of-learning finality kind: one valid signature by the proposer, an ES member;
its dict form; and a chain that appends only blocks its members proposed and signed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.finality import (
    FINALITY,
    FinalityError,
    ProofOfLearning,
    finality_from_dict,
)
from node.core.merkle import merkle_root
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig, LedgerError
from node.ledger.store import open_store


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


MEMBERS = [_key(50 + i) for i in range(7)]
STRANGER = _key(99)


def _rule() -> ProofOfLearning:
    return ProofOfLearning(tuple(k.public_key for k in MEMBERS))


def _unsigned(proposer: NodeKey = MEMBERS[2]) -> Block:
    header = BlockHeader(4, b"\x01" * 32, 1000, proposer.public_key, merkle_root([]), bytes(32))
    return Block(header, (), ())


def _signed(proposer: NodeKey = MEMBERS[2], signer: NodeKey | None = None) -> Block:
    block = _unsigned(proposer)
    return block.with_certificate((CommitSignature.create(signer or proposer, block.hash),))


def test_the_proposers_signature_makes_a_block_final() -> None:
    for member in MEMBERS:
        _rule().check(_signed(member))


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (_unsigned(), "0 signatures, the member's one expected"),
        (_signed(MEMBERS[2], MEMBERS[3]), "not the block's proposer"),
        (_signed(MEMBERS[2], STRANGER), "signer is not a member"),
        (_signed(STRANGER), "signer is not a member"),
    ],
    ids=["unsigned", "wrong-signer", "stranger-signs", "non-member-proposer"],
)
def test_bad_certificates_are_not_final(block: Block, why: str) -> None:
    with pytest.raises(FinalityError, match=why):
        _rule().check(block)


def test_two_signatures_are_not_final_even_both_valid() -> None:
    block = _unsigned()
    sigs = (
        CommitSignature.create(MEMBERS[2], block.hash),
        CommitSignature.create(MEMBERS[3], block.hash),
    )
    with pytest.raises(FinalityError, match="2 signatures"):
        _rule().check(block.with_certificate(sigs))
    with pytest.raises(FinalityError, match="2 signatures"):
        _rule().check(block.with_certificate((sigs[0], sigs[0])))


def test_a_forged_or_moved_signature_is_not_final() -> None:
    block = _signed()
    # the proposer's signature over another block
    other = _signed().header
    moved = dataclasses.replace(other, height=5)
    with pytest.raises(FinalityError, match="invalid commit signature"):
        _rule().check(Block(moved, (), block.certificate))
    # random bytes in place of the signature
    forged = CommitSignature(MEMBERS[2].public_key, bytes(range(64)))
    with pytest.raises(FinalityError, match="invalid commit signature"):
        _rule().check(block.with_certificate((forged,)))


def test_dict_round_trip_through_the_registry() -> None:
    rule = _rule()
    assert FINALITY["proof-of-learning"] is ProofOfLearning
    d = rule.to_dict()
    assert d == {"kind": "proof-of-learning", "members": [k.public_key.hex() for k in MEMBERS]}
    back = finality_from_dict(d)
    assert isinstance(back, ProofOfLearning)
    assert back == rule
    assert back.signers == tuple(k.public_key for k in MEMBERS)
    back.check(_signed(MEMBERS[6]))


@pytest.mark.parametrize(
    ("d", "why"),
    [
        ({"kind": "proof-of-learning", "members": []}, "non-empty"),
        ({"kind": "proof-of-learning", "members": "ab"}, "must be a list"),
        ({"kind": "proof-of-learning", "members": ["00"]}, "32-byte"),
        ({"kind": "proof-of-learning", "members": [7]}, "hex string"),
        (
            {"kind": "proof-of-learning", "members": [MEMBERS[0].public_key.hex()] * 2},
            "distinct",
        ),
        ({"kind": "proof-of-learning"}, "members"),
    ],
)
def test_bad_dicts_are_refused_naming_the_field(d: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        finality_from_dict(d)


def test_a_chain_appends_member_signed_blocks_only(tmp_path: Path) -> None:
    members = {f"es{i}": (k.public_key, "mec") for i, k in enumerate(MEMBERS)}
    config = ChainConfig(Genesis(members=members, balances={}, chain_id="bees"), _rule())
    chain = Chain(open_store(tmp_path / "a"), config)
    for proposer in (MEMBERS[0], MEMBERS[4], MEMBERS[0]):
        block = chain.candidate([], proposer.public_key, chain.head.timestamp_ms + 1)
        chain.append(block.with_certificate((CommitSignature.create(proposer, block.hash),)))
    assert chain.height == 3
    block = chain.candidate([], MEMBERS[1].public_key, chain.head.timestamp_ms + 1)
    for signer in (MEMBERS[2], STRANGER):  # signed by someone other than the proposer
        with pytest.raises(LedgerError, match="bad_certificate"):
            chain.append(block.with_certificate((CommitSignature.create(signer, block.hash),)))
    assert chain.height == 3
    assert ChainConfig.from_dict(config.to_dict()) == config
