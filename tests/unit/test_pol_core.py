"""The PoL core's rules one at a time: turns, forged certificates, duplicates, heights, the
early-block buffer and its arguments (real keys and signed blocks, a hand-driven clock)."""

from __future__ import annotations

import pytest

from node.consensus.pol import Accept, PolCore, Propose, Reject
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.encoding import sha256
from node.core.merkle import merkle_root
from node.keys import NodeKey

IDS = [f"es{i}" for i in range(7)]
KEYS = {es: NodeKey.from_seed(sha256(b"pol-core/" + es.encode())) for es in IDS}
MEMBERS = {es: k.public_key for es, k in KEYS.items()}
RANKING = ("es3", "es1", "es0", "es6", "es2", "es5", "es4")
T = 100  # timeout_ms; the default grace is 25


def block(height: int, proposer: str, signer: str | None = None, salt: int = 0) -> Block:
    """A block for `height` by `proposer`, signed by `signer` (default: the proposer)."""
    header = BlockHeader(
        height, bytes(32), salt, MEMBERS[proposer], merkle_root([]), sha256(b"s%d" % salt)
    )
    unsigned = Block(header, ())
    sig = CommitSignature.create(KEYS[signer or proposer], unsigned.hash)
    return unsigned.with_certificate((sig,))


def core(me: str = "es0", bad: frozenset[bytes] = frozenset()) -> PolCore:
    """`me`'s core; `verify` refuses the block hashes in `bad`."""
    return PolCore(me, MEMBERS, lambda b: "bad update" if b.hash in bad else None, T)


def test_ranks_propose_in_turn_and_stop_once_a_block_is_accepted() -> None:
    winner = core("es3")
    assert winner.start_round(1, RANKING, 1000) == [Propose(1, 0)]
    assert winner.tick(5000) == []  # once per round
    third = core("es0")  # rank 2
    assert third.start_round(1, RANKING, 1000) == []
    assert third.next_tick_ms() == 1000 + 2 * T
    assert third.tick(1000 + 2 * T - 1) == []
    assert third.tick(1000 + 2 * T) == [Propose(1, 2)]
    # a node that accepted a block for the round does not propose
    second = core("es1")
    second.start_round(1, RANKING, 1000)
    b = block(1, "es3")
    assert second.on_block(b, "es3", 1010) == [Accept(1, b.hash, "es3", 0)]
    assert second.next_tick_ms() is None
    assert second.tick(1000 + T) == []


def test_a_block_naming_the_winner_but_signed_by_another_is_refused() -> None:
    c = core()
    c.start_round(1, RANKING, 0)
    forged = block(1, "es3", signer="es1")
    [reject] = c.on_block(forged, "es1", 5)
    assert isinstance(reject, Reject)
    assert reject.reason == "bad_certificate:signer is not the block's proposer"
    unsigned = forged.with_certificate(())
    assert c.on_block(unsigned, "es1", 6)[0] == Reject(
        1, unsigned.hash, "bad_certificate:0 signatures, the member's one expected"
    )
    genuine = block(1, "es3")
    assert c.on_block(genuine, "es3", 7) == [Accept(1, genuine.hash, "es3", 0)]
    assert c.counts == {"bad_certificate": 2, "accepted": 1}


def test_the_grace_opens_a_turn_early_and_a_member_outside_the_ranking_never_wins() -> None:
    c = core()
    c.start_round(1, RANKING[:6], 0)  # es4 did not report this round
    rank1 = block(1, "es1")
    assert c.on_block(rank1, "es1", T - 26) == [Reject(1, rank1.hash, "not_winner")]
    outsider = block(1, "es4")
    assert c.on_block(outsider, "es4", 10 * T) == [Reject(1, outsider.hash, "not_winner")]
    assert c.on_block(rank1, "es1", T - 25) == [Accept(1, rank1.hash, "es1", 1)]


def test_first_acceptable_block_wins_and_later_ones_are_duplicates() -> None:
    bad = block(1, "es3", salt=1)
    c = core(bad=frozenset({bad.hash}))
    c.start_round(1, RANKING, 0)
    assert c.on_block(bad, "es3", 1) == [Reject(1, bad.hash, "unverifiable:bad update")]
    rank1 = block(1, "es1")
    assert c.on_block(rank1, "es1", T) == [Accept(1, rank1.hash, "es1", 1)]
    # the winner's second, valid block comes too late: our choice keeps the first accepted
    late = block(1, "es3", salt=2)
    assert c.on_block(late, "es3", T + 1) == [Reject(1, late.hash, "duplicate")]
    assert c.on_block(rank1, "es6", T + 2) == [Reject(1, rank1.hash, "duplicate")]
    assert c.accepted == Accept(1, rank1.hash, "es1", 1)
    assert c.counts == {"unverifiable": 1, "accepted": 1, "duplicate": 2}


def test_blocks_of_later_rounds_wait_for_their_round_and_stale_ones_are_refused() -> None:
    c = core()
    c.start_round(1, RANKING, 0)
    b1, b2, b3 = block(1, "es3"), block(2, "es5"), block(3, "es6")
    assert c.on_block(b2, "es5", 1) == []  # kept
    assert c.on_block(b3, "es6", 2) == []  # kept
    too_far = block(6, "es3")
    assert c.on_block(too_far, "es3", 3) == [Reject(6, too_far.hash, "wrong_height")]
    again = block(2, "es5", salt=9)  # a second block by one proposer for round 2
    assert c.on_block(again, "es5", 4) == [Reject(2, again.hash, "duplicate")]
    assert c.on_block(b1, "es3", 5) == [Accept(1, b1.hash, "es3", 0)]
    # round 2's ranking has es5 first: its kept block is judged when the round starts
    assert c.start_round(2, ("es5", *IDS[:5], "es6"), 50) == [Accept(2, b2.hash, "es5", 0)]
    assert c.on_block(b1, "es3", 51) == [Reject(1, b1.hash, "wrong_height")]
    # round 3 is skipped (the host synced past it): the kept block for 3 is refused
    assert c.start_round(4, RANKING, 60) == [Reject(3, b3.hash, "wrong_height")]
    assert c.counts == {"accepted": 2, "wrong_height": 3, "duplicate": 1}


def test_bad_arguments_are_refused_naming_them() -> None:
    verify = lambda b: None  # noqa: E731
    with pytest.raises(ValueError, match="not a member"):
        PolCore("es9", MEMBERS, verify, T)
    with pytest.raises(ValueError, match="timeout_ms"):
        PolCore("es0", MEMBERS, verify, 0)
    with pytest.raises(ValueError, match="grace_ms"):
        PolCore("es0", MEMBERS, verify, T, grace_ms=T)
    c = PolCore("es0", MEMBERS, verify, T)
    with pytest.raises(ValueError, match="distinct"):
        c.start_round(1, ("es0", "es0"), 0)
    with pytest.raises(ValueError, match="non-members: es9"):
        c.start_round(1, ("es0", "es9"), 0)
    c.start_round(3, RANKING, 0)
    with pytest.raises(ValueError, match="round 3 does not follow round 3"):
        c.start_round(3, RANKING, 0)
