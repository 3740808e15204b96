"""blockfl's fork choice above the ledger: longest branch, lower hash on ties, confirmation
depth, losing forks dropped, orphans, and invalid blocks refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.contracts.state import State
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.finality import ProofOfWork, mine
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig
from node.ledger.store import open_store
from node.schemes.blockfl.forkchoice import BlockTree, InvalidBlock

BITS = 6
MINERS = [NodeKey.from_seed(bytes([40 + i]) * 32) for i in range(2)]
STRANGER = NodeKey.from_seed(b"\x63" * 32)


def _chain(path: Path) -> Chain:
    members = {f"mec{i}": (k.public_key, "mec") for i, k in enumerate(MINERS)}
    rule = ProofOfWork(tuple(k.public_key for k in MINERS), BITS)
    return Chain(open_store(path), ChainConfig(Genesis(members, {}, "fc"), rule))


def _mined(
    chain: Chain,
    parent: tuple[BlockHeader, State],
    miner: NodeKey,
    ts: int = 1000,
    txs: tuple[Transaction, ...] = (),
) -> Block:
    candidate, _ = chain.candidate_on(parent[0], parent[1], txs, miner.public_key, ts)
    header = mine(candidate.header, BITS, candidate.header.timestamp_ms, 1 << 16)
    assert header is not None
    block = Block(header, candidate.txs, ())
    return block.with_certificate((CommitSignature.create(miner, block.hash),))


def _on(tree: BlockTree, block: Block) -> tuple[BlockHeader, State]:
    """The (header, post-state) of a block the tree holds, to mine on."""
    entry = tree._entries[block.hash]
    return entry.block.header, entry.state


def test_longest_branch_wins_and_ties_go_to_the_lower_hash(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    tree = BlockTree(chain, confirmations=1)
    a1 = _mined(chain, tree.tip, MINERS[0], ts=1000)
    b1 = _mined(chain, tree.tip, MINERS[1], ts=5000)
    low, high = sorted((a1, b1), key=lambda b: b.hash)

    assert tree.add(high) == [high]
    assert tree.tip[0] == high.header
    assert tree.add(low) == [low]
    assert tree.tip[0] == low.header  # same height: the lower hash, whatever came first
    assert tree.forks == 1
    assert tree.add(low) == []  # known

    # in the other order, the same choice
    other = BlockTree(_chain(tmp_path / "other"), confirmations=1)
    other.add(low)
    other.add(high)
    assert other.tip[0] == low.header

    h2 = _mined(chain, _on(tree, high), MINERS[0], ts=9000)
    assert tree.add(h2) == [h2]
    assert tree.tip[0] == h2.header  # longer beats lower
    assert [b.hash for b in tree.branch()] == [high.hash, h2.hash]
    assert tree.confirmable() == [high]


def test_confirmed_blocks_go_to_the_ledger_and_losing_forks_are_dropped(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    tree = BlockTree(chain, confirmations=2)
    a1 = _mined(chain, tree.tip, MINERS[0], ts=1000)
    b1 = _mined(chain, tree.tip, MINERS[1], ts=2000)
    tree.add(a1)
    tree.add(b1)
    a2 = _mined(chain, _on(tree, a1), MINERS[0], ts=3000)
    tree.add(a2)
    assert tree.confirmable() == []  # one block on a1: two needed
    a3 = _mined(chain, _on(tree, a2), MINERS[1], ts=4000)
    tree.add(a3)
    assert tree.confirmable() == [a1]

    for block in tree.confirmable():
        chain.append(block)
    tree.rebase()

    assert chain.height == 1 and chain.head == a1.header
    assert [b.hash for b in tree.branch()] == [a2.hash, a3.hash]
    assert tree.get(b1.hash) is None  # the losing fork is gone
    assert tree.get(a1.hash) == a1  # from the ledger
    assert tree.add(b1) == []  # at or below the ledger head: ignored
    assert [b.hash for b in tree.recent(5)] == [a3.hash, a2.hash, a1.hash]


def test_an_orphan_waits_for_its_parent(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    scratch = BlockTree(_chain(tmp_path / "scratch"), confirmations=1)
    a1 = _mined(chain, scratch.tip, MINERS[0])
    scratch.add(a1)
    a2 = _mined(chain, _on(scratch, a1), MINERS[1], ts=2000)
    tree = BlockTree(chain, confirmations=1)

    assert tree.add(a2) == []
    assert tree.missing_parent(a2)
    assert tree.add(a1) == [a1, a2]
    assert tree.tip[0] == a2.header
    assert not tree.missing_parent(a2)


def test_invalid_blocks_are_refused(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    tree = BlockTree(chain, confirmations=1)
    good = _mined(chain, tree.tip, MINERS[0])

    with pytest.raises(InvalidBlock) as exc:
        tree.add(_mined(chain, tree.tip, STRANGER))
    assert exc.value.reason == "bad_certificate"
    # a block whose state root does not follow from re-executing it (mined as it is)
    header = dataclasses.replace(good.header, state_root=b"\x05" * 32)
    found = mine(header, BITS, header.timestamp_ms, 1 << 16)
    assert found is not None
    forged = Block(found, (), ())
    forged = forged.with_certificate((CommitSignature.create(MINERS[0], forged.hash),))
    with pytest.raises(InvalidBlock) as exc:
        tree.add(forged)
    assert exc.value.reason == "bad_block"
    assert tree.tip[0] == chain.head  # nothing kept
    with pytest.raises(ValueError, match="at least 1"):
        BlockTree(chain, confirmations=0)
