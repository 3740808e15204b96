"""Finality rules (single writer, committee), their registry, and a chain validating with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.consensus.ledger import committee_replicas
from node.contracts.runtime import Genesis
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.encoding import canonical
from node.core.finality import (
    FINALITY,
    Committee,
    FinalityError,
    SingleWriter,
    finality_from_dict,
)
from node.core.merkle import merkle_root
from node.keys import NodeKey
from node.ledger.chain import CONFIG_META_KEY, Chain, ChainConfig, LedgerError
from node.ledger.store import open_store


def _key(i: int) -> NodeKey:
    return NodeKey.from_seed(bytes([i]) * 32)


WRITER = _key(1)
MEMBERS = [_key(20 + i) for i in range(4)]
STRANGER = _key(99)


def _block(height: int = 1) -> Block:
    header = BlockHeader(height, b"\x01" * 32, 5, WRITER.public_key, merkle_root([]), bytes(32))
    return Block(header, (), ())


def _signed(block: Block, *keys: NodeKey) -> Block:
    return block.with_certificate(CommitSignature.create(k, block.hash) for k in keys)


def test_single_writer_accepts_exactly_the_writers_signature() -> None:
    rule = SingleWriter(WRITER.public_key)
    block = _block()
    rule.check(_signed(block, WRITER))
    for bad, why in [
        (block, "0 signatures"),
        (_signed(block, WRITER, WRITER), "2 signatures"),
        (_signed(block, STRANGER), "not the chain's writer"),
        (
            block.with_certificate((CommitSignature.create(WRITER, b"\x02" * 32),)),
            "invalid commit signature",
        ),
    ]:
        with pytest.raises(FinalityError, match=why):
            rule.check(bad)


def test_committee_needs_a_quorum_of_distinct_members() -> None:
    rule = Committee.bft(k.public_key for k in MEMBERS)
    assert rule.quorum == 3  # n = 4, f = 1
    block = _block()
    rule.check(_signed(block, *MEMBERS[:3]))
    rule.check(_signed(block, *MEMBERS))
    for bad, why in [
        (_signed(block, *MEMBERS[:2]), "2 of 3"),
        (_signed(block, MEMBERS[0], MEMBERS[0], MEMBERS[1]), "2 of 3"),
        (_signed(block, *MEMBERS[:2], STRANGER), "not a committee member"),
    ]:
        with pytest.raises(FinalityError, match=why):
            rule.check(bad)


@pytest.mark.parametrize(("n", "quorum"), [(1, 1), (3, 1), (4, 3), (7, 5), (10, 7)])
def test_bft_quorum_is_2f_plus_1(n: int, quorum: int) -> None:
    assert Committee.bft(_key(50 + i).public_key for i in range(n)).quorum == quorum


def test_committee_parameters_are_checked() -> None:
    keys = tuple(k.public_key for k in MEMBERS)
    for args, why in [
        (((), 1), "non-empty"),
        ((keys, 0), "quorum 0"),
        ((keys, 5), "quorum 5"),
        (((keys[0], keys[0]), 1), "distinct"),
        (((b"short",), 1), "32-byte"),
    ]:
        with pytest.raises(ValueError, match=why):
            Committee(*args)


def test_registry_round_trip_and_unknown_kind() -> None:
    assert set(FINALITY) >= {"single-writer", "committee"}
    for rule in (SingleWriter(WRITER.public_key), Committee.bft(k.public_key for k in MEMBERS)):
        assert finality_from_dict(rule.to_dict()) == rule
    allowed = "allowed: committee, proof-of-learning, proof-of-work, single-writer"
    with pytest.raises(ValueError, match=f"'pow' is unknown; {allowed}"):
        finality_from_dict({"kind": "pow"})
    with pytest.raises(ValueError, match="finality committee"):
        finality_from_dict({"kind": "committee", "quorum": 1})


def _genesis(chain_id: str = "fin") -> Genesis:
    members = {"pub": (WRITER.public_key, "publisher")}
    members.update({f"mec{i}": (k.public_key, "mec") for i, k in enumerate(MEMBERS)})
    return Genesis(members, {"pub": 10}, chain_id)


def test_chain_appends_a_committee_certified_block_and_refuses_a_short_one(
    tmp_path: Path,
) -> None:
    config = ChainConfig(_genesis(), Committee.bft(k.public_key for k in MEMBERS))
    chain = Chain(open_store(tmp_path / "c"), config)
    block = chain.candidate([], WRITER.public_key, 1_000)
    with pytest.raises(LedgerError) as info:
        chain.append(_signed(block, *MEMBERS[:2]))
    assert info.value.reason == "bad_certificate" and "2 of 3" in str(info.value)
    assert chain.height == 0
    chain.append(_signed(block, *MEMBERS[1:]))
    assert chain.height == 1
    chain.store.close()


def test_the_form_before_finality_rules_is_still_read(tmp_path: Path) -> None:
    genesis = _genesis()
    legacy = {"genesis": genesis.to_dict(), "validators": [WRITER.public_key.hex()], "quorum": 1}
    assert ChainConfig.from_dict(legacy) == ChainConfig(genesis, SingleWriter(WRITER.public_key))
    keys = [k.public_key for k in MEMBERS]
    committee = {"genesis": genesis.to_dict(), "validators": [k.hex() for k in keys], "quorum": 3}
    assert ChainConfig.from_dict(committee).finality == Committee(tuple(keys), 3)
    # a store an earlier run wrote (config in the old form) opens with the new config
    store = open_store(tmp_path / "old")
    Chain(store, ChainConfig(genesis, SingleWriter(WRITER.public_key)))
    store.meta_set(CONFIG_META_KEY, canonical(legacy))
    reopened = Chain(store, ChainConfig(genesis, SingleWriter(WRITER.public_key)))
    assert reopened.height == 0
    with pytest.raises(ValueError, match="different chain"):
        Chain(store, ChainConfig(genesis, SingleWriter(STRANGER.public_key)))
    store.close()


def test_pbft_replicas_are_the_committee_members_in_order() -> None:
    ids = {f"mec{i}": k.public_key for i, k in enumerate(MEMBERS)} | {"pub": WRITER.public_key}
    keys = [k.public_key for k in reversed(MEMBERS)]
    replicas = committee_replicas(Committee.bft(keys), ids)
    assert replicas == [(f"mec{i}", MEMBERS[i].public_key) for i in (3, 2, 1, 0)]
    for rule, why in [
        (SingleWriter(WRITER.public_key), "needs committee finality, not single-writer"),
        (Committee(tuple(keys), 2), "quorum 2 is not PBFT's 2f\\+1 = 3 for 4 members"),
        (Committee.bft([*keys[:3], STRANGER.public_key]), "without a node id"),
    ]:
        with pytest.raises(ValueError, match=why):
            committee_replicas(rule, ids)
