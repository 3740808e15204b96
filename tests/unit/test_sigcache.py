"""The process-wide verified-signature cache: hits, misses, bounds, and no false accepts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node import sigcache
from node.consensus.messages import Group, Prepare, open_envelope, seal
from node.core.block import CommitSignature
from node.core.tx import Transaction, TxError
from node.keys import NodeKey, Roster
from node.sigcache import VerifyCache

KEY = NodeKey.from_seed(b"k" * 32)
OTHER = NodeKey.from_seed(b"o" * 32)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    sigcache.CACHE.clear()
    yield
    sigcache.CACHE.clear()


def test_a_repeated_valid_signature_is_checked_once() -> None:
    cache = VerifyCache(16)
    sig = KEY.sign(b"hello")

    assert cache.verify(KEY.public_key, b"hello", sig)
    assert cache.verify(KEY.public_key, b"hello", sig)

    assert (cache.misses, cache.hits, cache.failures) == (1, 1, 0)


def test_a_bad_signature_is_refused_every_time_and_never_cached() -> None:
    cache = VerifyCache(16)
    sig = KEY.sign(b"hello")
    forged = bytes([sig[0] ^ 1]) + sig[1:]

    for _ in range(3):
        assert not cache.verify(KEY.public_key, b"hello", forged)
    assert cache.failures == 3 and len(cache) == 0


def test_a_cached_signature_does_not_vouch_for_another_message_or_key() -> None:
    cache = VerifyCache(16)
    sig = KEY.sign(b"hello")
    assert cache.verify(KEY.public_key, b"hello", sig)

    assert not cache.verify(KEY.public_key, b"hellO", sig)
    assert not cache.verify(OTHER.public_key, b"hello", sig)
    assert cache.hits == 0 and cache.failures == 2


def test_malformed_keys_and_signatures_are_refused_without_raising() -> None:
    cache = VerifyCache(16)
    sig = KEY.sign(b"m")
    assert not cache.verify(KEY.public_key[:31], b"m", sig)
    assert not cache.verify(KEY.public_key, b"m", sig[:63])
    assert not cache.verify(bytes(32), b"m", sig)


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = VerifyCache(2)
    sigs = [KEY.sign(bytes([i])) for i in range(3)]
    for i in range(3):
        assert cache.verify(KEY.public_key, bytes([i]), sigs[i])

    assert len(cache) == 2
    assert cache.verify(KEY.public_key, bytes([0]), sigs[0])  # evicted: verified again
    assert (cache.misses, cache.hits) == (4, 0)


def test_disabled_cache_verifies_every_time() -> None:
    cache = VerifyCache(16)
    cache.enabled = False
    sig = KEY.sign(b"x")
    assert cache.verify(KEY.public_key, b"x", sig) and cache.verify(KEY.public_key, b"x", sig)
    assert len(cache) == 0 and cache.hits == 0


def test_a_transaction_verified_on_arrival_is_not_verified_again() -> None:
    tx = Transaction.create(KEY, "task.record_update", 1, {"round": 1})
    sigcache.CACHE.clear()  # as in the process receiving it
    tx.verify()
    tx.verify()
    assert (sigcache.CACHE.misses, sigcache.CACHE.hits) == (1, 1)

    forged = Transaction(tx.type, tx.sender, tx.nonce, {"round": 2}, tx.signature)
    with pytest.raises(TxError, match="bad_signature"):
        forged.verify()


def test_pbft_commit_signature_and_ledger_certificate_share_the_cache() -> None:
    replicas = [(f"r{i}", NodeKey.from_seed(bytes([i + 1]) * 32)) for i in range(4)]
    group = Group([(rid, k.public_key) for rid, k in replicas])
    digest = bytes(range(32))
    csig = replicas[1][1].sign(CommitSignature.signing_bytes(digest))

    assert group.commit_sig_ok("r1", digest, csig)  # PBFT checks the COMMIT's csig
    assert CommitSignature(replicas[1][1].public_key, csig).verify(digest)  # Chain.append

    assert (sigcache.CACHE.misses, sigcache.CACHE.hits) == (1, 1)
    assert not CommitSignature(replicas[2][1].public_key, csig).verify(digest)


def test_envelopes_and_roster_go_through_the_cache() -> None:
    replicas = [(f"r{i}", NodeKey.from_seed(bytes([i + 1]) * 32)) for i in range(4)]
    group = Group([(rid, k.public_key) for rid, k in replicas])
    env = open_envelope(seal(replicas[0][1], "r0", Prepare(0, 1, bytes(32))))
    group.verify(env)
    group.verify(env)
    roster = Roster({"a": KEY.public_key})
    assert roster.verify("a", b"m", KEY.sign(b"m"))
    assert roster.verify("a", b"m", KEY.sign(b"m"))
    assert not roster.verify("a", b"n", KEY.sign(b"m"))
    assert (sigcache.CACHE.misses, sigcache.CACHE.hits, sigcache.CACHE.failures) == (2, 2, 1)


def test_own_signatures_are_remembered_and_nothing_else_is() -> None:
    """A transaction or commit signature this process made is not checked again when it
    comes back (in a block); a changed copy of it is checked and refused."""
    tx = Transaction.create(KEY, "task.record_update", 1, {"round": 1})
    tx.verify()
    block_hash = bytes(range(32))
    csig = CommitSignature.create(KEY, block_hash)
    assert csig.verify(block_hash)
    assert (sigcache.CACHE.misses, sigcache.CACHE.hits) == (0, 2)

    forged = Transaction(tx.type, tx.sender, tx.nonce, {"round": 2}, tx.signature)
    with pytest.raises(TxError, match="bad_signature"):
        forged.verify()
    assert not CommitSignature(OTHER.public_key, csig.signature).verify(block_hash)
    assert not csig.verify(bytes(32))
    assert sigcache.CACHE.failures == 3


def test_remember_respects_the_bound_and_a_disabled_cache() -> None:
    cache = VerifyCache(2)
    sigs = [(m, KEY.sign(m)) for m in (b"a", b"b", b"c")]
    for m, sig in sigs:
        cache.remember(KEY.public_key, m, sig)
    assert len(cache) == 2
    assert cache.verify(KEY.public_key, b"a", sigs[0][1]) and cache.misses == 1  # evicted
    off = VerifyCache(16)
    off.enabled = False
    off.remember(KEY.public_key, b"a", sigs[0][1])
    assert len(off) == 0
