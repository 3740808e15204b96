"""`ChainSync.awaiting_blobs`: a ``blob.get`` is outstanding until its peer answers (with the
blob or without it) or REQUEST_TIMEOUT_S passes; a stopping node waits on it (`Daemon
.stop_when_synced`) so that the reply does not go to a node that has left."""

from __future__ import annotations

from pathlib import Path

from node.ledger.sync import REQUEST_TIMEOUT_S, Outgoing
from tests.sim.test_chain_sync import Replica, _config, _full_chain, closing  # noqa: F401


def _blob_gets(out: list[Outgoing]) -> list[Outgoing]:
    return [o for o in out if o.type == "blob.get"]


def _feed(node: Replica, honest: Replica, sender: str, now: float) -> list[Outgoing]:
    """Every block of `honest` to `node` as live blocks from `sender`; the blob requests."""
    out: list[Outgoing] = []
    for h in range(1, honest.chain.height + 1):
        block = honest.store.block_bytes(h)
        out += node.sync.handle(sender, "chain.block", {"block": block, "height": h}, now)
    return _blob_gets(out)


def test_a_blob_request_is_awaited_until_answered_or_timed_out(
    tmp_path: Path,
    closing: list[Replica],  # noqa: F811
) -> None:
    honest = _full_chain(tmp_path, closing, "honest", "sim", seed=3, n=3)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    gets = _feed(node, honest, "honest", 100.0)
    assert gets and node.chain.height == honest.chain.height
    assert node.sync.awaiting_blobs(100.0)
    assert not node.sync.awaiting_blobs(100.0 + REQUEST_TIMEOUT_S)  # bounded
    for get in gets:
        for reply in honest.sync.handle("node", "blob.get", get.payload, now=100.0):
            assert node.sync.awaiting_blobs(100.0)  # until the last reply
            node.sync.handle("honest", reply.type, reply.payload, now=100.0)
    assert not node.sync.awaiting_blobs(100.0) and not node.sync.missing_blobs


def test_a_reply_without_the_blob_ends_the_wait_on_that_peer(
    tmp_path: Path,
    closing: list[Replica],  # noqa: F811
) -> None:
    honest = _full_chain(tmp_path, closing, "honest", "sim", seed=3, n=3)
    node = Replica("node", tmp_path / "node", _config())
    closing.append(node)
    gets = _feed(node, honest, "bare", 0.0)
    assert gets
    for get in gets:
        node.sync.handle("bare", "blob.data", {"hash": get.payload["hash"], "missing": True}, 0.0)
    assert node.sync.missing_blobs and not node.sync.awaiting_blobs(0.0)
