"""PBFT core: message validation and drop reasons, commit certificates, ledger adapter."""

from __future__ import annotations

import pytest

from node.consensus.actions import Broadcast, Commit, PbftConfig, Send, StartTimer
from node.consensus.ledger import block_digest, certified_block, ledger_config
from node.consensus.messages import (
    CommitMsg,
    MessageError,
    Prepare,
    PrePrepare,
    open_envelope,
    seal,
)
from node.consensus.pbft import PbftReplica
from node.core.block import Block, BlockHeader, CommitSignature
from node.core.encoding import canonical, sha256
from node.keys import NodeKey

KEYS = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
IDS = [f"r{i}" for i in range(4)]
GROUP = [(rid, k.public_key) for rid, k in zip(IDS, KEYS, strict=True)]


def _replica(i: int, config: PbftConfig | None = None) -> PbftReplica:
    return PbftReplica(IDS[i], KEYS[i], GROUP, config)


def test_constructor_checks_membership_and_size() -> None:
    with pytest.raises(ValueError):
        PbftReplica("r0", KEYS[1], GROUP)
    with pytest.raises(ValueError):
        PbftReplica("r0", KEYS[0], GROUP[:3])


def test_envelope_round_trip_and_malformed() -> None:
    raw = seal(KEYS[0], "r0", Prepare(1, 2, bytes(32)))
    env = open_envelope(raw)
    assert env.kind == "prepare" and env.body == Prepare(1, 2, bytes(32))
    for bad in (
        b"\x00junk",
        canonical([1, "prepare", "r0", [1, 2], bytes(64)]),
        canonical([9, "prepare", "r0", [1, 2, bytes(32)], bytes(64)]),
        canonical([1, "nope", "r0", [], bytes(64)]),
    ):
        with pytest.raises(MessageError):
            open_envelope(bad)


@pytest.mark.parametrize(
    ("sender", "raw", "reason"),
    [
        ("r1", seal(NodeKey.from_seed(b"x" * 32), "r1", Prepare(0, 1, bytes(32))), "bad_signature"),
        ("r1", seal(KEYS[2], "r2", Prepare(0, 1, bytes(32))), "sender_mismatch"),
        ("rX", seal(KEYS[2], "rX", Prepare(0, 1, bytes(32))), "unknown_sender"),
        ("r1", b"garbage", "malformed"),
        ("r0", seal(KEYS[0], "r0", PrePrepare(0, 1, sha256(b"a"), b"b")), "bad_digest"),
        ("r1", seal(KEYS[1], "r1", PrePrepare(0, 1, sha256(b"a"), b"a")), "not_primary"),
        ("r0", seal(KEYS[0], "r0", PrePrepare(0, 99, sha256(b"a"), b"a")), "out_of_window"),
        ("r1", seal(KEYS[1], "r1", CommitMsg(0, 1, bytes(32), bytes(64))), "bad_commit_signature"),
        ("r0", seal(KEYS[0], "r0", Prepare(0, 1, bytes(32))), "prepare_from_primary"),
    ],
)
def test_bad_messages_are_dropped_and_counted(sender: str, raw: bytes, reason: str) -> None:
    r = _replica(3)
    assert [a for a in r.handle(sender, raw, 0.0) if isinstance(a, Broadcast)] == []
    assert r.stats[reason] == 1


def test_backup_forwards_and_primary_pre_prepares() -> None:
    backup, primary = _replica(1), _replica(0)
    acts = backup.propose(b"req", 0.0)
    fwd = [a for a in acts if isinstance(a, Send)]
    assert fwd and fwd[0].dst == "r0" and any(isinstance(a, StartTimer) for a in acts)
    out = primary.handle("r1", fwd[0].data, 0.0)
    pp = open_envelope(next(a for a in out if isinstance(a, Broadcast)).data).body
    assert pp == PrePrepare(0, 1, sha256(b"req"), b"req")
    assert primary.propose(b"req", 0.0) == []  # already assigned: not proposed twice


def _run_lockstep(replicas: list[PbftReplica], request: bytes) -> list[Commit]:
    """Deliver every message to everyone until quiet; return replica 0's commits."""
    queue = [(replicas[0].id, a) for a in replicas[0].propose(request, 0.0)]
    commits: list[Commit] = []
    while queue:
        src, act = queue.pop(0)
        if isinstance(act, Commit) and src == replicas[0].id:
            commits.append(act)
        if isinstance(act, Broadcast):
            for r in replicas:
                if r.id != src:
                    queue += [(r.id, a) for a in r.handle(src, act.data, 0.0)]
    return commits


def test_commit_certificate_is_a_ledger_certificate() -> None:
    header = BlockHeader(1, bytes(32), 5, KEYS[0].public_key, sha256(b""), bytes(32))
    block = Block(header, ())
    config = ledger_config(PbftConfig())
    replicas = [_replica(i, config) for i in range(4)]
    commits = _run_lockstep(replicas, block.to_bytes())
    assert len(commits) == 1 and commits[0].digest == block.hash == block_digest(block.to_bytes())
    certified = certified_block(commits[0])
    assert len(certified.certificate) >= 3
    assert all(sig.verify(block.hash) for sig in certified.certificate)
    assert {s.signer for s in certified.certificate} <= {k.public_key for k in KEYS}
    assert isinstance(certified.certificate[0], CommitSignature)


def test_ledger_config_rejects_non_blocks() -> None:
    r = _replica(0, ledger_config())
    assert r.propose(b"not a block", 0.0) == []
    assert r.stats["bad_request"] == 1


def test_duplicate_request_executes_once() -> None:
    replicas = [_replica(i) for i in range(4)]
    assert len(_run_lockstep(replicas, b"once")) == 1
    assert replicas[0].propose(b"once", 0.0) == []
    assert replicas[0].stats["duplicate_request"] == 1
