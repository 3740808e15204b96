"""`ChainSync.fetch_blob`: a blob by hash from named peers, one at a time, moving on after a
timeout, a reply without it or wrong bytes; good bytes stored and handed over once."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.core.encoding import sha256
from node.ledger.blobs import MemoryBlobStore
from node.ledger.chain import Chain
from node.ledger.store import open_store
from node.ledger.sync import REQUEST_TIMEOUT_S, ChainSync, Outgoing
from tests.sim.test_chain_sync import _config

DATA = b"update weights " * 100
KEY = sha256(DATA)


@pytest.fixture
def sync(tmp_path: Path) -> ChainSync:
    return ChainSync(Chain(open_store(tmp_path), _config()), MemoryBlobStore())


class Done:
    """Records `on_done` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes | None]] = []

    def __call__(self, key: bytes, data: bytes | None) -> None:
        self.calls.append((key, data))


def _get(out: list[Outgoing]) -> str:
    """The one peer asked in `out`."""
    assert [(o.type, o.payload) for o in out] == [("blob.get", {"hash": KEY})]
    return out[0].dst


def test_fetch_asks_the_first_peer_and_stores_the_blob(sync: ChainSync) -> None:
    done = Done()
    assert _get(sync.fetch_blob(KEY, ["a", "b"], 0.0, on_done=done)) == "a"
    assert sync.wants_blob(KEY) and sync.awaiting_blobs(0.0)

    assert sync.handle("a", "blob.data", {"hash": KEY, "data": DATA}, 0.1) == []

    assert done.calls == [(KEY, DATA)]
    assert sync.blobs.get(KEY) == DATA
    assert not sync.fetching and not sync.awaiting_blobs(0.1) and not sync.failures


def test_a_silent_peer_times_out_and_the_next_is_asked(sync: ChainSync) -> None:
    done = Done()
    _get(sync.fetch_blob(KEY, ["a", "b"], 0.0, on_done=done))
    assert sync.tick(REQUEST_TIMEOUT_S - 0.1) == []  # not yet

    assert _get(sync.tick(REQUEST_TIMEOUT_S + 0.1)) == "b"
    assert sync.failures["blob_timeout"] == 1
    sync.handle("b", "blob.data", {"hash": KEY, "data": DATA}, 6.0)
    assert done.calls == [(KEY, DATA)]
    late = sync.handle("a", "blob.data", {"hash": KEY, "data": DATA}, 7.0)  # after the timeout
    assert late == [] and sync.failures["unsolicited_blob"] == 1 and len(done.calls) == 1


def test_wrong_bytes_are_dropped_counted_and_the_next_peer_asked(sync: ChainSync) -> None:
    done = Done()
    _get(sync.fetch_blob(KEY, ["liar", "big", "honest"], 0.0, on_done=done, max_bytes=len(DATA)))

    assert _get(sync.handle("liar", "blob.data", {"hash": KEY, "data": b"x" * 10}, 0.1)) == "big"
    assert _get(sync.handle("big", "blob.data", {"hash": KEY, "data": DATA + b"!"}, 0.2)) == (
        "honest"
    )
    assert sync.failures["bad_blob"] == 2 and not sync.blobs.has(KEY) and done.calls == []
    sync.handle("honest", "blob.data", {"hash": KEY, "data": DATA}, 0.3)
    assert done.calls == [(KEY, DATA)]


def test_unsolicited_blobs_are_dropped_and_counted(sync: ChainSync) -> None:
    other = b"not asked for"
    sync.handle("a", "blob.data", {"hash": sha256(other), "data": other}, 0.0)
    _get(sync.fetch_blob(KEY, ["a"], 0.0))
    sync.handle("mallory", "blob.data", {"hash": KEY, "data": DATA}, 0.1)  # not the one asked

    assert sync.failures["unsolicited_blob"] == 2
    assert not sync.blobs.has(sha256(other)) and not sync.blobs.has(KEY)
    assert sync.fetching == {KEY}


def test_every_peer_failing_ends_the_fetch_in_vain(sync: ChainSync) -> None:
    done = Done()
    _get(sync.fetch_blob(KEY, ["a", "b"], 0.0, on_done=done))
    assert _get(sync.handle("a", "blob.data", {"hash": KEY, "missing": True}, 0.1)) == "b"
    assert sync.tick(REQUEST_TIMEOUT_S + 1.0) == []  # b silent: none left

    assert done.calls == [(KEY, None)]
    assert sync.failures["blob_unavailable"] == 1 and sync.failures["blob_timeout"] == 1
    assert not sync.fetching and not sync.wants_blob(KEY)


def test_a_held_blob_is_handed_over_at_once_and_cancel_forgets(sync: ChainSync) -> None:
    sync.blobs.put(DATA)
    done = Done()
    assert sync.fetch_blob(KEY, ["a"], 0.0, on_done=done) == []
    assert done.calls == [(KEY, DATA)]

    other = b"another blob"
    key = sha256(other)
    assert sync.fetch_blob(key, ["a"], 0.0, on_done=done)
    sync.cancel_fetch(key)
    assert not sync.fetching and not sync.awaiting_blobs(0.0)
    assert sync.tick(REQUEST_TIMEOUT_S + 1.0) == [] and len(done.calls) == 1


def test_a_second_fetch_of_the_same_blob_joins_the_first(sync: ChainSync) -> None:
    first, second = Done(), Done()
    _get(sync.fetch_blob(KEY, ["a"], 0.0, on_done=first))
    assert sync.fetch_blob(KEY, ["a", "b"], 0.0, on_done=second) == []  # a is asked already
    assert _get(sync.handle("a", "blob.data", {"hash": KEY, "missing": True}, 0.1)) == "b"
    sync.handle("b", "blob.data", {"hash": KEY, "data": DATA}, 0.2)
    assert first.calls == second.calls == [(KEY, DATA)]


def test_bad_arguments_are_refused(sync: ChainSync) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sync.fetch_blob(b"short", ["a"], 0.0)
    with pytest.raises(ValueError, match="peer"):
        sync.fetch_blob(KEY, [], 0.0)
