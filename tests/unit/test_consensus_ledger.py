"""The PBFT-ledger adapter parses a candidate block once for its digest and its commit."""

from __future__ import annotations

import pytest

from node.consensus.actions import Commit
from node.consensus.ledger import block_digest, certified_block
from node.core.block import BlockError, CommitSignature
from node.core.tx import Transaction
from node.keys import NodeKey
from tests.unit.test_ledger_block import make_block

KEYS = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]


def test_digest_and_commit_share_one_parse() -> None:
    tx = Transaction.create(KEYS[0], "task.record_update", 1, {"r": 1})
    request = make_block(1, bytes(32), (tx,), signers=()).to_bytes()
    digest = block_digest(request)
    cert = tuple((k.public_key, k.sign(CommitSignature.signing_bytes(digest))) for k in KEYS[:3])

    block = certified_block(Commit(1, digest, request, cert))

    assert block.hash == digest and len(block.certificate) == 3
    assert block.txs == (tx,)
    again = certified_block(Commit(1, digest, request, cert))
    assert again.txs[0] is block.txs[0]  # the same parsed transactions, hashes computed once


def test_bad_bytes_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(BlockError):
            block_digest(b"\x93not a block")


def test_a_commit_whose_digest_differs_is_refused() -> None:
    request = make_block(1, bytes(32), (), signers=()).to_bytes()
    with pytest.raises(ValueError, match="not the block"):
        certified_block(Commit(1, bytes(32), request, ()))
