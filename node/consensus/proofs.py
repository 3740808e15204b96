"""Verification of PBFT proofs: checkpoint, prepared and commit certificates, VIEW-CHANGE
and NEW-VIEW (recomputing O).

How it works: every proof is a set of raw signed envelopes, re-verified here.
- stable checkpoint: 2f+1 CHECKPOINT(seq, state) from distinct replicas (seq 0 needs none);
- prepared certificate (view v, seq n, digest d): the primary's PRE-PREPARE plus 2f PREPAREs
  from distinct backups, all for (v, n, d), with the request hashing to d (or null);
- commit certificate: 2f+1 COMMITs for one (v, n, d) from distinct replicas, each with a
  valid commit signature over d; it proves d is decided at n in every view;
- NEW-VIEW for v: 2f+1 valid VIEW-CHANGEs for v and O, which must equal what every replica
  recomputes: min_s = highest stable checkpoint in them, max_s = highest prepared seq, and
  for n in (min_s, max_s] the digest of the highest-view prepared certificate, else null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.consensus.messages import (
    NULL_DIGEST,
    Checkpoint,
    CommitMsg,
    Group,
    MessageError,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
)

DigestFn = Callable[[bytes], bytes]


def digest_ok(digest_fn: DigestFn, digest: bytes, request: bytes) -> bool:
    """True if `request` hashes to `digest` (a null request is empty with NULL_DIGEST)."""
    if digest == NULL_DIGEST:
        return request == b""
    if not request:
        return False
    try:
        return digest_fn(request) == digest
    except ValueError:
        return False


@dataclass(frozen=True)
class PreparedCert:
    """A verified prepared certificate."""

    view: int
    seq: int
    digest: bytes
    request: bytes
    pre_prepare: bytes
    prepares: tuple[bytes, ...]


@dataclass(frozen=True)
class ViewChangeInfo:
    """A verified VIEW-CHANGE."""

    sender: str
    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[bytes, ...]
    certs: dict[int, PreparedCert]
    raw: bytes


def check_checkpoint_proof(group: Group, seq: int, proof: tuple[bytes, ...]) -> bytes | None:
    """The proven state digest at `seq` (None for seq 0); raises MessageError."""
    if seq == 0:
        return None
    by_sender: dict[str, bytes] = {}
    for raw in proof:
        env = group.open(raw, "checkpoint")
        assert isinstance(env.body, Checkpoint)
        if env.body.seq != seq:
            raise MessageError("bad_proof", "checkpoint seq differs")
        by_sender[env.sender] = env.body.state
    states = set(by_sender.values())
    if len(by_sender) < group.quorum or len(states) != 1:
        raise MessageError("bad_proof", "not 2f+1 matching checkpoints")
    return states.pop()


def check_prepared(
    group: Group, digest_fn: DigestFn, pp_raw: bytes, prepares: tuple[bytes, ...]
) -> PreparedCert:
    """Verify one prepared certificate; raises MessageError."""
    env = group.open(pp_raw, "preprepare")
    pp = env.body
    assert isinstance(pp, PrePrepare)
    if env.sender != group.primary(pp.view):
        raise MessageError("bad_proof", "pre-prepare not from the view's primary")
    if not digest_ok(digest_fn, pp.digest, pp.request):
        raise MessageError("bad_proof", "request does not match digest")
    backups = set()
    for raw in prepares:
        penv = group.open(raw, "prepare")
        p = penv.body
        assert isinstance(p, Prepare)
        if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
            raise MessageError("bad_proof", "prepare does not match pre-prepare")
        if penv.sender != env.sender:
            backups.add(penv.sender)
    if len(backups) < 2 * group.f:
        raise MessageError("bad_proof", "fewer than 2f prepares")
    return PreparedCert(pp.view, pp.seq, pp.digest, pp.request, pp_raw, prepares)


def check_commit_proof(
    group: Group, seq: int, request: bytes, commits: tuple[bytes, ...], digest_fn: DigestFn
) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """Verify a commit certificate for `seq`; returns (digest, certificate pairs)."""
    key: tuple[int, bytes] | None = None
    cert: dict[str, bytes] = {}
    for raw in commits:
        env = group.open(raw, "commit")
        c = env.body
        assert isinstance(c, CommitMsg)
        if c.seq != seq or (key is not None and (c.view, c.digest) != key):
            raise MessageError("bad_proof", "commits do not match")
        key = (c.view, c.digest)
        if not group.commit_sig_ok(env.sender, c.digest, c.csig):
            raise MessageError("bad_commit_signature", env.sender)
        cert[env.sender] = c.csig
    if key is None or len(cert) < group.quorum:
        raise MessageError("bad_proof", "fewer than 2f+1 commits")
    if not digest_ok(digest_fn, key[1], request):
        raise MessageError("bad_digest", "request does not match committed digest")
    return key[1], tuple((group.keys[s], sig) for s, sig in sorted(cert.items()))


def check_view_change(
    group: Group, digest_fn: DigestFn, window: int, sender: str, vc: ViewChange, raw: bytes
) -> ViewChangeInfo:
    """Verify a VIEW-CHANGE's proofs; raises MessageError."""
    if vc.new_view == 0:
        raise MessageError("bad_view", "view change to view 0")
    check_checkpoint_proof(group, vc.stable_seq, vc.checkpoint_proof)
    certs: dict[int, PreparedCert] = {}
    for pp_raw, prepares in vc.prepared:
        cert = check_prepared(group, digest_fn, pp_raw, prepares)
        if cert.view >= vc.new_view:
            raise MessageError("bad_proof", "prepared in a view not below the new view")
        if not vc.stable_seq < cert.seq <= vc.stable_seq + window or cert.seq in certs:
            raise MessageError("bad_proof", "prepared seq out of window or repeated")
        certs[cert.seq] = cert
    return ViewChangeInfo(sender, vc.new_view, vc.stable_seq, vc.checkpoint_proof, certs, raw)


def compute_o(
    vcs: list[ViewChangeInfo],
) -> tuple[int, tuple[bytes, ...], list[tuple[int, bytes, bytes]]]:
    """(min_s, its checkpoint proof, [(seq, digest, request)]) for a NEW-VIEW."""
    best = max(vcs, key=lambda v: v.stable_seq)
    min_s = best.stable_seq
    max_s = max([s for v in vcs for s in v.certs] + [min_s])
    o = []
    for seq in range(min_s + 1, max_s + 1):
        found = [v.certs[seq] for v in vcs if seq in v.certs]
        if found:
            c = max(found, key=lambda c: (c.view, c.digest))
            o.append((seq, c.digest, c.request))
        else:
            o.append((seq, NULL_DIGEST, b""))
    return min_s, best.checkpoint_proof, o


def check_new_view(
    group: Group, digest_fn: DigestFn, window: int, sender: str, nv: NewView
) -> tuple[list[ViewChangeInfo], list[PrePrepare]]:
    """Verify a NEW-VIEW by re-verifying its view changes and recomputing O."""
    if sender != group.primary(nv.view):
        raise MessageError("not_primary", "new-view not from the new primary")
    vcs: dict[str, ViewChangeInfo] = {}
    for raw in nv.view_changes:
        env = group.open(raw, "viewchange")
        assert isinstance(env.body, ViewChange)
        if env.body.new_view != nv.view:
            raise MessageError("bad_proof", "view change for another view")
        vcs[env.sender] = check_view_change(group, digest_fn, window, env.sender, env.body, raw)
    if len(vcs) < group.quorum:
        raise MessageError("bad_proof", "fewer than 2f+1 view changes")
    _, _, o = compute_o(list(vcs.values()))
    pps = []
    for raw in nv.pre_prepares:
        env = group.open(raw, "preprepare")
        assert isinstance(env.body, PrePrepare)
        if env.sender != sender or env.body.view != nv.view:
            raise MessageError("bad_proof", "O pre-prepare not from the new primary")
        if not digest_ok(digest_fn, env.body.digest, env.body.request):
            raise MessageError("bad_digest", "O request does not match digest")
        pps.append(env.body)
    if [(p.seq, p.digest) for p in pps] != [(s, d) for s, d, _ in o]:
        raise MessageError("bad_new_view", "O differs from the recomputed one")
    return list(vcs.values()), pps
