"""`Chain.append` of a block this replica built takes the post-state from building it
(the publisher executed every block's contracts twice); every other check still runs, and
any other block (a peer's, or one built on a state that is no longer the head's) is
executed in full."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.contracts.runtime import CONTRACTS, BlockContext, Receipt, Registry
from node.contracts.state import State
from node.core.block import Block, CommitSignature
from node.core.tx import Transaction
from node.ledger.chain import Chain, LedgerError
from node.ledger.store import open_store
from tests.unit.test_ledger_chain import PUB, STRANGER, Writer, _config, _reheader


class CountingRegistry(Registry):
    """The default contracts, counting the transactions executed."""

    def __init__(self) -> None:
        super().__init__()
        for module in CONTRACTS:
            self.register(module.NAME, module.METHODS, module.API)
        self.executed = 0

    def execute(self, state: State, ctx: BlockContext, tx: Transaction) -> Receipt:
        self.executed += 1
        return super().execute(state, ctx, tx)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Chain, Chain, CountingRegistry]]:
    registry = CountingRegistry()
    writer = Chain(open_store(tmp_path / "writer"), _config(), registry)
    peer = Chain(open_store(tmp_path / "peer"), _config())
    yield writer, peer, registry
    writer.store.close()
    peer.store.close()


def test_a_built_block_is_executed_once_and_ends_where_a_peer_ends(
    pair: tuple[Chain, Chain, CountingRegistry],
) -> None:
    writer, peer, registry = pair
    w = Writer(writer)
    for _ in range(4):
        block = w.next_block()
        before = registry.executed
        receipts = writer.append(block)
        assert registry.executed == before, "append executed the built block again"
        assert receipts == peer.append(Block.from_bytes(block.to_bytes()))
        assert writer.state == peer.state and writer.state.root() == peer.state.root()
        assert writer.store.state_rows() == peer.store.state_rows()


def test_a_built_block_still_has_its_certificate_checked(
    pair: tuple[Chain, Chain, CountingRegistry],
) -> None:
    writer, _, _ = pair
    block = Writer(writer).next_block()
    forged = block.with_certificate((CommitSignature.create(STRANGER, block.hash),))
    with pytest.raises(LedgerError) as err:
        writer.append(forged)
    assert err.value.reason == "bad_certificate" and writer.height == 0
    writer.append(block)
    assert writer.height == 1


def test_a_block_built_on_an_older_state_is_executed_in_full(
    pair: tuple[Chain, Chain, CountingRegistry],
) -> None:
    writer, peer, registry = pair
    w = Writer(writer)
    writer.append(w.next_block())
    first = w.next_block()  # built on height 1, not appended here
    peer.append(Block.from_bytes(writer.store.block_bytes(1) or b""))
    peer.append(Block.from_bytes(first.to_bytes()))
    # the writer appends the same block after a detour: it rebuilt the state from its store
    writer.state = State.from_rows(writer.store.state_rows())
    before = registry.executed
    writer.append(first)
    assert registry.executed == before + len(first.txs), "a stale post-state was taken"
    assert writer.state == peer.state


def test_a_block_differing_from_the_built_one_is_executed_and_refused_as_ever(
    pair: tuple[Chain, Chain, CountingRegistry],
) -> None:
    writer, _, registry = pair
    block = Writer(writer).next_block()
    bad = _reheader(block, PUB, state_root=b"\x00" * 32)
    before = registry.executed
    with pytest.raises(LedgerError) as err:
        writer.append(bad)
    assert err.value.reason == "bad_state_root"
    assert registry.executed == before + len(block.txs)
    writer.append(block)
    assert writer.height == 1


def test_the_built_post_state_is_not_kept_past_its_use(
    pair: tuple[Chain, Chain, CountingRegistry],
) -> None:
    writer, _, _ = pair
    w = Writer(writer)
    for _ in range(20):
        w.next_block()  # built, never appended: a bounded number is kept
    assert len(writer._built) <= 8
    writer.append(w.next_block())
    assert not writer._built
