"""The proof-of-work finality kind: the hash puzzle (`mine`), the rule's checks, its dict form,
and a chain that appends only mined blocks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.finality import (
    FINALITY,
    FinalityError,
    ProofOfWork,
    finality_from_dict,
    meets_target,
    mine,
    pow_target,
)
from node.core.merkle import merkle_root
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig, LedgerError
from node.ledger.store import open_store

BITS = 10


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


MINERS = [_key(30 + i) for i in range(3)]
STRANGER = _key(99)


def _header(proposer: NodeKey = MINERS[0], ts: int = 1000) -> BlockHeader:
    return BlockHeader(1, b"\x01" * 32, ts, proposer.public_key, merkle_root([]), bytes(32))


def _mined(bits: int = BITS, proposer: NodeKey = MINERS[0]) -> Block:
    found = mine(_header(proposer), bits, 1000, 1 << (bits + 8))
    assert found is not None
    block = Block(found, (), ())
    return block.with_certificate((CommitSignature.create(proposer, block.hash),))


def _rule(bits: int = BITS) -> ProofOfWork:
    return ProofOfWork(tuple(k.public_key for k in MINERS), bits)


def test_mine_finds_a_header_below_the_target_varying_only_the_timestamp() -> None:
    candidate = _header()
    found = mine(candidate, 12, 1000, 1 << 20)
    assert found is not None
    assert int.from_bytes(found.hash, "big") < pow_target(12)
    assert found.timestamp_ms >= 1000
    assert dataclasses.replace(found, timestamp_ms=candidate.timestamp_ms) == candidate
    # really searched: every earlier timestamp misses the target
    for ts in range(1000, found.timestamp_ms):
        assert not meets_target(dataclasses.replace(candidate, timestamp_ms=ts).hash, 12)


def test_mine_works_in_slices_and_is_deterministic() -> None:
    candidate = _header()
    whole = mine(candidate, 12, 1000, 1 << 20)
    assert whole is not None
    first, found, slices = 1000, None, 0
    while found is None:
        found = mine(candidate, 12, first, 256)
        first, slices = first + 256, slices + 1
    assert found == whole
    assert slices == (whole.timestamp_ms - 1000) // 256 + 1
    assert mine(candidate, 12, 1000, 0) is None


def test_difficulty_is_respected() -> None:
    hard = _mined(14)
    easy_only = None
    for ts in range(1000, 1 << 20):  # a header that meets 4 bits but not 14
        h = dataclasses.replace(_header(), timestamp_ms=ts)
        if meets_target(h.hash, 4) and not meets_target(h.hash, 14):
            easy_only = h
            break
    assert easy_only is not None
    easy = Block(easy_only, (), ())
    easy = easy.with_certificate((CommitSignature.create(MINERS[0], easy.hash),))
    _rule(14).check(hard)
    _rule(4).check(easy)
    _rule(4).check(hard)  # more work than asked is fine
    with pytest.raises(FinalityError, match="above the target of 14 bits"):
        _rule(14).check(easy)
    assert int.from_bytes(hard.hash, "big") >> (256 - 14) == 0  # 14 leading zero bits


def test_valid_block_passes_and_bad_certificates_fail() -> None:
    rule = _rule()
    block = _mined()
    rule.check(block)
    unsigned = block.with_certificate(())
    for bad, why in [
        (unsigned, "0 signatures"),
        (
            unsigned.with_certificate((CommitSignature.create(MINERS[0], block.hash),) * 2),
            "2 signatures",
        ),
        (
            unsigned.with_certificate((CommitSignature.create(MINERS[1], block.hash),)),
            "not the block's proposer",
        ),
        (
            unsigned.with_certificate((CommitSignature.create(MINERS[0], b"\x02" * 32),)),
            "invalid commit signature",
        ),
    ]:
        with pytest.raises(FinalityError, match=why):
            rule.check(bad)
    # mined and signed by a non-miner
    with pytest.raises(FinalityError, match="not a miner"):
        rule.check(_mined(proposer=STRANGER))


def test_tampered_block_fails() -> None:
    rule = _rule(12)
    block = _mined(12)
    # any header change moves the hash: off the target (almost surely) and off the signature
    for header in [
        dataclasses.replace(block.header, height=2),
        dataclasses.replace(block.header, state_root=b"\x07" * 32),
        dataclasses.replace(block.header, timestamp_ms=1),
    ]:
        with pytest.raises(FinalityError):
            rule.check(Block(header, (), block.certificate))
    # a tampered header that still meets the target fails on the miner's signature
    for ts in range(block.header.timestamp_ms + 1, 1 << 22):
        header = dataclasses.replace(block.header, timestamp_ms=ts)
        if meets_target(header.hash, 12):
            with pytest.raises(FinalityError, match="invalid commit signature"):
                rule.check(Block(header, (), block.certificate))
            break
    else:
        pytest.fail("no second solution found")


def test_dict_round_trip_and_registry() -> None:
    rule = _rule(17)
    assert FINALITY["proof-of-work"] is ProofOfWork
    d = rule.to_dict()
    assert d == {
        "kind": "proof-of-work",
        "miners": [k.public_key.hex() for k in MINERS],
        "difficulty_bits": 17,
    }
    assert finality_from_dict(d) == rule
    assert rule.signers == rule.miners
    assert rule.target == 1 << (256 - 17)


@pytest.mark.parametrize(
    ("d", "why"),
    [
        ({"kind": "proof-of-work", "miners": [], "difficulty_bits": 3}, "non-empty"),
        ({"kind": "proof-of-work", "miners": "ab", "difficulty_bits": 3}, "must be a list"),
        ({"kind": "proof-of-work", "miners": ["00"], "difficulty_bits": 3}, "32-byte"),
        (
            {
                "kind": "proof-of-work",
                "miners": [MINERS[0].public_key.hex()],
                "difficulty_bits": 65,
            },
            "0..64",
        ),
        (
            {
                "kind": "proof-of-work",
                "miners": [MINERS[0].public_key.hex()],
                "difficulty_bits": True,
            },
            "integer",
        ),
        ({"kind": "proof-of-work", "miners": [MINERS[0].public_key.hex()]}, "difficulty_bits"),
    ],
)
def test_bad_dicts_are_refused_naming_the_field(d: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        finality_from_dict(d)


def test_a_chain_appends_mined_blocks_only(tmp_path: Path) -> None:
    miner = MINERS[1]
    members = {f"m{i}": (k.public_key, "mec") for i, k in enumerate(MINERS)}
    config = ChainConfig(Genesis(members=members, balances={}, chain_id="pow"), _rule(8))
    chain = Chain(open_store(tmp_path / "a"), config)
    for _ in range(3):
        candidate = chain.candidate([], miner.public_key, chain.head.timestamp_ms)
        header = mine(candidate.header, 8, candidate.header.timestamp_ms, 1 << 16)
        assert header is not None
        block = Block(header, (), ())
        chain.append(block.with_certificate((CommitSignature.create(miner, block.hash),)))
    assert chain.height == 3
    # signed by the miner but not mined
    candidate = chain.candidate([], miner.public_key, chain.head.timestamp_ms)
    ts = candidate.header.timestamp_ms
    while meets_target(dataclasses.replace(candidate.header, timestamp_ms=ts).hash, 8):
        ts += 1
    block = Block(dataclasses.replace(candidate.header, timestamp_ms=ts), (), ())
    with pytest.raises(LedgerError, match="bad_certificate"):
        chain.append(block.with_certificate((CommitSignature.create(miner, block.hash),)))
    assert chain.height == 3
