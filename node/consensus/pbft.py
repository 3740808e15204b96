"""A sans-IO PBFT replica (Castro & Liskov, OSDI'99) ordering candidate ledger blocks.

How it works
------------
n >= 3f+1 replicas in a fixed order; the primary of view v is replicas[v mod n].
- Normal case: the primary assigns a pending request the next sequence number inside the
  watermarks (low, low+L] and broadcasts PRE-PREPARE(v, n, d, request). A backup accepts it
  if it is in view v, from the primary, in the window, the request hashes to d and no other
  digest was accepted for (v, n); it broadcasts PREPARE(v, n, d). Prepared = pre-prepare +
  2f matching prepares from distinct backups; a prepared replica broadcasts COMMIT(v, n, d)
  with a CommitSignature over d. 2f+1 matching COMMITs (one view) decide d at n — such a
  set is a transferable proof, so it is also accepted from past views and via FETCH.
- Execution: decided entries run strictly in sequence order, each exactly once; a digest
  already executed (or a null request) advances the sequence without a `Commit` action.
- Checkpoints: after executing n with n mod K == 0 a replica broadcasts CHECKPOINT(n, s),
  s = hash chain of executed digests; 2f+1 matching ones make n stable: low = n and the log
  at or below n is discarded. A replica that sees a stable checkpoint it has not reached,
  or whose request timer expires, broadcasts FETCH and executes the COMMITTED entries
  (request + 2f+1 signed commits) that peers return from their bounded archive.
- View change: a backup starts the request timer when it learns of a request it has not
  executed; on expiry it sends VIEW-CHANGE(v+1, stable checkpoint proof, prepared
  certificates above it). f+1 view changes for higher views make a replica join the
  smallest. The new primary, holding 2f+1, sends NEW-VIEW with O (see `proofs`); replicas
  recompute O before accepting and then prepare O's pre-prepares in the new view. The view
  change timer re-sends the VIEW-CHANGE once, then moves on to v+2 with a doubled timeout.
Invariant (safety): a digest decided at n by any honest replica is the only one decided at
n by every honest replica, because any two quorums of 2f+1 share an honest replica.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from node.consensus.actions import (
    REQUEST_TIMER,
    VIEW_CHANGE_TIMER,
    Action,
    Broadcast,
    Commit,
    PbftConfig,
    Send,
    StartTimer,
    StopTimer,
)
from node.consensus.log import Slot
from node.consensus.messages import (
    NULL_DIGEST,
    Body,
    Checkpoint,
    CommitMsg,
    Committed,
    Envelope,
    Fetch,
    Group,
    MessageError,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    ViewChange,
    open_envelope,
    seal,
)
from node.consensus.proofs import (
    PreparedCert,
    ViewChangeInfo,
    check_commit_proof,
    check_new_view,
    check_view_change,
    compute_o,
    digest_ok,
)
from node.core.block import CommitSignature
from node.core.encoding import sha256
from node.keys import NodeKey

log = logging.getLogger(__name__)

Decided = tuple[bytes, bytes, tuple[bytes, ...]]


class PbftReplica:
    """One PBFT replica: feed it requests, messages and timer expiries; it returns actions."""

    def __init__(
        self,
        node_id: str,
        key: NodeKey,
        replicas: Sequence[tuple[str, bytes]],
        config: PbftConfig | None = None,
    ) -> None:
        self.id = node_id
        self.key = key
        self.group = Group(replicas)
        if self.group.keys.get(node_id) != key.public_key:
            raise ValueError(f"{node_id!r} is not a replica with this key")
        self.config = config or PbftConfig()
        self.view = 0
        self.active = True
        self.low = 0
        self.stable_proof: tuple[bytes, ...] = ()
        self.last_exec = 0
        self.state = bytes(32)
        self.stats: Counter[str] = Counter()
        self.timeout = self.config.request_timeout_s
        self._states: dict[int, bytes] = {}
        self._slots: dict[int, Slot] = {}
        self._checkpoints: dict[int, dict[str, tuple[bytes, bytes]]] = {}
        self._decided: dict[int, Decided] = {}
        self._archive: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}
        self._executed: set[bytes] = set()
        self._requests: dict[bytes, bytes] = {}
        self._awaiting: dict[bytes, int] = {}
        self._certs: dict[int, PreparedCert] = {}
        self._vcs: dict[str, ViewChangeInfo] = {}
        self._new_view_raw: bytes | None = None
        self._next_seq = 0
        self._assigned: set[bytes] = set()
        self._request_timer = False
        self._vc_strikes = 0
        self._fetched_for = 0
        self._fetch_strike = False
        self._future: dict[str, list[Envelope]] = {}

    # ---- public API -------------------------------------------------------------------

    @property
    def primary(self) -> str:
        """The primary of the current view."""
        return self.group.primary(self.view)

    def log_size(self) -> int:
        """Messages held in the protocol log (slots and checkpoints)."""
        slots = sum(s.size() for s in self._slots.values())
        return slots + sum(len(c) for c in self._checkpoints.values())

    def pending(self) -> int:
        """Requests learned but not executed."""
        return len(self._requests)

    def propose(self, request: bytes, now: float) -> list[Action]:
        """A client/proposer submits `request` (a candidate block) to this replica."""
        try:
            digest = self._digest(request)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            return []
        if digest in self._executed:
            self.stats["duplicate_request"] += 1
            return []
        acts = self._learn(digest, request)
        if self.active and self.primary == self.id:
            return acts + self._assign()
        acts.append(Send(self.primary, seal(self.key, self.id, Request(request))))
        return acts + self._ensure_request_timer()

    def handle(self, sender: str, msg: bytes, now: float) -> list[Action]:
        """Raw signed message bytes from replica `sender`."""
        try:
            env = open_envelope(msg)
            if env.sender != sender:
                raise MessageError("sender_mismatch", f"{sender} relayed {env.sender}")
            if sender == self.id:
                raise MessageError("from_self")
            self.group.verify(env)
            return self._dispatch(env)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            log.debug("%s dropped a message from %s: %s", self.id, sender, exc)
            return []

    def on_timer(self, name: str, now: float) -> list[Action]:
        """Timer `name` expired."""
        if name == REQUEST_TIMER:
            self._request_timer = False
            if not self.active or not self._requests:
                return []
            if not self._fetch_strike or self.primary == self.id:
                self._fetch_strike = True
                return [self._fetch_msg(), *self._ensure_request_timer()]
            log.info("%s: request timer expired in view %d", self.id, self.view)
            return self._start_view_change(self.view + 1)
        if name == VIEW_CHANGE_TIMER and not self.active:
            self._vc_strikes += 1
            have = sum(1 for v in self._vcs.values() if v.new_view >= self.view)
            if self._vc_strikes >= 2 and have >= self.group.quorum:
                self.timeout = min(2 * self.timeout, self.config.max_timeout_s)
                return self._start_view_change(self.view + 1)
            mine = self._vcs[self.id].raw
            return [
                Broadcast(mine),
                self._fetch_msg(),
                StartTimer(VIEW_CHANGE_TIMER, self.timeout),
            ]
        return []

    # ---- plumbing ---------------------------------------------------------------------

    def _dispatch(self, env: Envelope) -> list[Action]:
        match env.body:
            case Request():
                return self._on_request(env.body)
            case PrePrepare():
                return self._on_pre_prepare(env, env.body)
            case Prepare():
                return self._on_prepare(env, env.body)
            case CommitMsg():
                return self._on_commit(env, env.body)
            case Checkpoint():
                return self._on_checkpoint(env, env.body)
            case ViewChange():
                return self._on_view_change(env, env.body)
            case NewView():
                return self._on_new_view(env, env.body)
            case Fetch():
                return self._on_fetch(env.sender, env.body)
            case Committed():
                return self._on_committed(env.body)
        raise MessageError("unknown_kind", env.kind)

    def _emit(self, body: Body) -> list[Action]:
        """Broadcast `body` and process it locally as if received."""
        raw = seal(self.key, self.id, body)
        try:
            return [Broadcast(raw), *self._dispatch(open_envelope(raw))]
        except MessageError as exc:  # e.g. our own checkpoint below a NEW-VIEW's
            self.stats[exc.reason] += 1
            return [Broadcast(raw)]

    def _fetch_msg(self) -> Broadcast:
        return Broadcast(seal(self.key, self.id, Fetch(self.last_exec + 1)))

    def _digest(self, request: bytes) -> bytes:
        if not request or len(request) > self.config.max_request_bytes:
            raise MessageError("bad_request", "empty or oversize request")
        try:
            return self.config.digest(request)
        except ValueError as exc:
            raise MessageError("bad_request", str(exc)) from None

    def _in_window(self, seq: int) -> bool:
        return self.low < seq <= self.low + self.config.log_window

    def _slot(self, seq: int) -> Slot:
        return self._slots.setdefault(seq, Slot())

    def _learn(self, digest: bytes, request: bytes) -> list[Action]:
        """Remember a request's bytes until it is executed."""
        if digest == NULL_DIGEST or digest in self._executed or digest in self._requests:
            return []
        if len(self._requests) >= self.config.max_pending:
            self.stats["too_many_pending"] += 1
            return []
        self._requests[digest] = request
        seq = self._awaiting.pop(digest, None)
        return self._try_decide(seq) if seq is not None else []

    def _ensure_request_timer(self) -> list[Action]:
        if self._request_timer or not self.active or not self._requests:
            return []
        self._request_timer = True
        return [StartTimer(REQUEST_TIMER, self.timeout)]

    def _restart_request_timer(self) -> list[Action]:
        acts: list[Action] = []
        if self._request_timer:
            self._request_timer = False
            acts.append(StopTimer(REQUEST_TIMER))
        return acts + self._ensure_request_timer()

    # ---- normal case ------------------------------------------------------------------

    def _on_request(self, req: Request) -> list[Action]:
        digest = self._digest(req.request)
        acts = self._learn(digest, req.request)
        return acts + self._assign()

    def _assign(self) -> list[Action]:
        """As an active primary, give pending requests sequence numbers."""
        if not self.active or self.primary != self.id:
            return []
        acts: list[Action] = []
        for digest, request in list(self._requests.items()):
            if digest in self._assigned:
                continue
            if self._next_seq >= self.low + self.config.log_window:
                break
            self._next_seq += 1
            self._assigned.add(digest)
            acts += self._emit(PrePrepare(self.view, self._next_seq, digest, request))
        return acts

    def _on_pre_prepare(self, env: Envelope, pp: PrePrepare) -> list[Action]:
        if not digest_ok(self.config.digest, pp.digest, pp.request):
            raise MessageError("bad_digest", "request does not hash to the digest")
        acts = self._learn(pp.digest, pp.request) if pp.view <= self.view else []
        if pp.view != self.view or not self.active:
            self._buffer(env, pp.view)
            return acts
        if env.sender != self.primary or not self._in_window(pp.seq):
            self.stats["not_primary" if env.sender != self.primary else "out_of_window"] += 1
            return acts
        slot = self._slot(pp.seq)
        old = slot.pre_prepares.get(pp.view)
        if old is not None:
            self.stats["duplicate" if old[0].digest == pp.digest else "equivocation"] += 1
            return acts
        slot.pre_prepares[pp.view] = (pp, env.raw)
        if self.id != self.primary and pp.view not in slot.sent_prepare:
            slot.sent_prepare.add(pp.view)
            acts += self._emit(Prepare(pp.view, pp.seq, pp.digest))
        return acts + self._ensure_request_timer() + self._check_prepared(pp.seq)

    def _buffer(self, env: Envelope, view: int) -> None:
        """Keep a message for the next view (it may overtake the NEW-VIEW); drop others."""
        if not self.view <= view <= self.view + 1:
            self.stats["wrong_view"] += 1
            return
        queue = self._future.setdefault(env.sender, [])
        if len(queue) >= 4 * self.config.log_window:
            self.stats["buffer_full"] += 1
            return
        queue.append(env)

    def _replay_buffered(self) -> list[Action]:
        """Process buffered messages of the view just entered."""
        acts: list[Action] = []
        future, self._future = self._future, {}
        for sender, envs in future.items():
            for env in envs:
                view = env.body.view if isinstance(env.body, PrePrepare | Prepare) else -1
                if view == self.view:
                    try:
                        acts += self._dispatch(env)
                    except MessageError as exc:
                        self.stats[exc.reason] += 1
                elif view > self.view:
                    self._future.setdefault(sender, []).append(env)
        return acts

    def _on_prepare(self, env: Envelope, p: Prepare) -> list[Action]:
        if p.view != self.view or not self.active:
            self._buffer(env, p.view)
            return []
        if env.sender == self.primary:
            raise MessageError("prepare_from_primary", env.sender)
        if not self._in_window(p.seq):
            raise MessageError("out_of_window", str(p.seq))
        slot = self._slot(p.seq)
        reason = slot.add_vote(slot.prepares, p.view, env.sender, p.digest, env.raw)
        if reason:
            raise MessageError(reason, env.sender)
        return self._check_prepared(p.seq)

    def _check_prepared(self, seq: int) -> list[Action]:
        slot = self._slots.get(seq)
        if slot is None or self.view in slot.sent_commit:
            return []
        raws = slot.prepared(self.view, self.primary, self.group.f)
        if raws is None:
            return []
        pp, pp_raw = slot.pre_prepares[self.view]
        slot.sent_commit.add(self.view)
        cert = PreparedCert(
            self.view, seq, pp.digest, pp.request, pp_raw, tuple(raws[: 2 * self.group.f])
        )
        self._certs[seq] = cert
        csig = self.key.sign(CommitSignature.signing_bytes(pp.digest))
        return self._emit(CommitMsg(self.view, seq, pp.digest, csig))

    def _on_commit(self, env: Envelope, c: CommitMsg) -> list[Action]:
        if c.view > self.view + self.group.n:
            raise MessageError("future_view", str(c.view))
        if c.seq <= self.last_exec:
            raise MessageError("stale", str(c.seq))
        if not self._in_window(c.seq):
            raise MessageError("out_of_window", str(c.seq))
        if not self.group.commit_sig_ok(env.sender, c.digest, c.csig):
            raise MessageError("bad_commit_signature", env.sender)
        slot = self._slot(c.seq)
        reason = slot.add_vote(slot.commits, c.view, env.sender, c.digest, env.raw)
        if reason:
            raise MessageError(reason, env.sender)
        return self._try_decide(c.seq)

    def _bytes_for(self, seq: int, digest: bytes) -> bytes | None:
        if digest == NULL_DIGEST:
            return b""
        if digest in self._requests:
            return self._requests[digest]
        for pp, _ in self._slots[seq].pre_prepares.values():
            if pp.digest == digest:
                return pp.request
        return None

    def _try_decide(self, seq: int) -> list[Action]:
        slot = self._slots.get(seq)
        if slot is None or slot.decided or seq <= self.last_exec or seq in self._decided:
            return []
        quorum = slot.commit_quorum(self.group.quorum)
        if quorum is None:
            return []
        _, digest, raws = quorum
        request = self._bytes_for(seq, digest)
        if request is None:
            if digest in self._executed:
                request = b""
            else:
                self._awaiting[digest] = seq
                return []
        slot.decided = True
        self._decided[seq] = (digest, request, tuple(raws))
        return self._execute_ready()

    def _execute_ready(self) -> list[Action]:
        acts: list[Action] = []
        progressed = False
        while self.last_exec + 1 in self._decided:
            seq = self.last_exec + 1
            digest, request, raws = self._decided.pop(seq)
            self.last_exec = seq
            self.state = sha256(self.state + seq.to_bytes(8, "big") + digest)
            self._archive[seq] = (request, raws)
            self._archive.pop(seq - self.config.archive_size, None)
            if digest != NULL_DIGEST and digest not in self._executed:
                self._executed.add(digest)
                self._requests.pop(digest, None)
                acts.append(Commit(seq, digest, request, self._certificate(raws)))
                progressed = True
                log.debug("%s executed seq %d", self.id, seq)
            if seq % self.config.checkpoint_interval == 0:
                self._states[seq] = self.state
                acts += self._emit(Checkpoint(seq, self.state))
        if progressed:
            self.timeout = self.config.request_timeout_s
            self._fetch_strike = False
            acts += self._restart_request_timer()
        return acts

    def _certificate(self, raws: tuple[bytes, ...]) -> tuple[tuple[bytes, bytes], ...]:
        pairs = {}
        for raw in raws:
            env = open_envelope(raw)
            assert isinstance(env.body, CommitMsg)
            pairs[self.group.keys[env.sender]] = env.body.csig
        return tuple(sorted(pairs.items()))

    # ---- checkpoints and catch-up ------------------------------------------------------

    def _on_checkpoint(self, env: Envelope, c: Checkpoint) -> list[Action]:
        if c.seq <= self.low:
            raise MessageError("stale", str(c.seq))
        if c.seq % self.config.checkpoint_interval:
            raise MessageError("malformed", "checkpoint off the interval")
        if c.seq > self.low + 4 * self.config.log_window:
            raise MessageError("out_of_window", str(c.seq))
        votes = self._checkpoints.setdefault(c.seq, {})
        old = votes.get(env.sender)
        if old is not None:
            raise MessageError("duplicate" if old[0] == c.state else "equivocation")
        votes[env.sender] = (c.state, env.raw)
        matching = [raw for s, raw in votes.values() if s == c.state]
        if len(matching) < self.group.quorum:
            return []
        if self.last_exec < c.seq:
            if self._fetched_for >= c.seq:
                return []
            self._fetched_for = c.seq
            return [self._fetch_msg()]
        if self._states.get(c.seq) != c.state:
            self.stats["checkpoint_mismatch"] += 1
            log.error("%s: stable checkpoint %d differs from local state", self.id, c.seq)
            return []
        self._make_stable(c.seq, tuple(matching))
        return self._assign()

    def _make_stable(self, seq: int, proof: tuple[bytes, ...]) -> None:
        """Make `seq` the low watermark and discard the log at or below it."""
        self.low = seq
        self.stable_proof = proof
        for table in (self._slots, self._checkpoints, self._states, self._certs):
            for s in [s for s in table if s <= seq]:
                del table[s]
        self._awaiting = {d: s for d, s in self._awaiting.items() if s > seq}
        self._next_seq = max(self._next_seq, seq)
        log.debug("%s: checkpoint %d stable", self.id, seq)

    def _on_fetch(self, sender: str, f: Fetch) -> list[Action]:
        entries = tuple(
            (s, *self._archive[s])
            for s in range(f.from_seq, f.from_seq + self.config.fetch_batch)
            if s in self._archive
        )
        if not entries:
            return []
        return [Send(sender, seal(self.key, self.id, Committed(entries)))]

    def _on_committed(self, c: Committed) -> list[Action]:
        horizon = self.last_exec + self.config.archive_size + self.config.log_window
        for seq, request, raws in c.entries:
            if seq <= self.last_exec or seq in self._decided or seq > horizon:
                continue
            try:
                digest, _ = check_commit_proof(self.group, seq, request, raws, self.config.digest)
            except MessageError as exc:
                self.stats[exc.reason] += 1
                continue
            self._decided[seq] = (digest, request, raws)
            if seq in self._slots:
                self._slots[seq].decided = True
        return self._execute_ready()

    # ---- view change ------------------------------------------------------------------

    def _start_view_change(self, new_view: int) -> list[Action]:
        log.info("%s: view change %d -> %d", self.id, self.view, new_view)
        acts: list[Action] = []
        if self._request_timer:
            self._request_timer = False
            acts.append(StopTimer(REQUEST_TIMER))
        self.view = new_view
        self.active = False
        self._vc_strikes = 0
        self._fetch_strike = False
        self._new_view_raw = None
        for slot in self._slots.values():
            slot.forget_views_below(new_view)
        prepared = tuple(
            (c.pre_prepare, c.prepares) for s, c in sorted(self._certs.items()) if s > self.low
        )
        vc = ViewChange(new_view, self.low, self.stable_proof, prepared, self.last_exec)
        acts += self._emit(vc)
        if not self.active:
            acts.append(StartTimer(VIEW_CHANGE_TIMER, self.timeout))
        return acts

    def _on_view_change(self, env: Envelope, vc: ViewChange) -> list[Action]:
        if vc.new_view < self.view or (vc.new_view == self.view and self.active):
            if self.active and vc.new_view == self.view and self._new_view_raw:
                return [Send(env.sender, self._new_view_raw)]
            raise MessageError("stale_view", str(vc.new_view))
        old = self._vcs.get(env.sender)
        if old is not None and old.new_view >= vc.new_view:
            raise MessageError("duplicate", env.sender)
        self._vcs[env.sender] = check_view_change(
            self.group, self.config.digest, self.config.log_window, env.sender, vc, env.raw
        )
        higher = [
            v.new_view for s, v in self._vcs.items() if s != self.id and v.new_view > self.view
        ]
        if len(higher) > self.group.f:
            return self._start_view_change(min(higher))
        return self._try_new_view()

    def _try_new_view(self) -> list[Action]:
        if self.active or self.primary != self.id or self._new_view_raw is not None:
            return []
        vcs = sorted(
            (v for v in self._vcs.values() if v.new_view == self.view), key=lambda v: v.sender
        )
        if len(vcs) < self.group.quorum:
            return []
        _, _, o = compute_o(vcs)
        pps = tuple(seal(self.key, self.id, PrePrepare(self.view, s, d, r)) for s, d, r in o)
        return self._emit(NewView(self.view, tuple(v.raw for v in vcs), pps))

    def _on_new_view(self, env: Envelope, nv: NewView) -> list[Action]:
        if nv.view < self.view or (nv.view == self.view and self.active):
            raise MessageError("stale_view", str(nv.view))
        vcs, pps = check_new_view(
            self.group, self.config.digest, self.config.log_window, env.sender, nv
        )
        min_s, proof, o = compute_o(vcs)
        log.info("%s: entering view %d", self.id, nv.view)
        acts: list[Action] = [StopTimer(VIEW_CHANGE_TIMER)]
        self.view, self.active, self._new_view_raw = nv.view, True, env.raw
        self._vcs = {s: v for s, v in self._vcs.items() if v.new_view > self.view}
        for slot in self._slots.values():
            slot.forget_views_below(self.view)
        if min_s > self.low:
            self._make_stable(min_s, proof)
            if self.last_exec < min_s:
                acts.append(self._fetch_msg())
        is_primary = self.primary == self.id
        for pp, raw in zip(pps, nv.pre_prepares, strict=True):
            if pp.seq <= self.low:
                continue
            acts += self._learn(pp.digest, pp.request)
            slot = self._slot(pp.seq)
            slot.pre_prepares[self.view] = (pp, raw)
            if not is_primary:
                slot.sent_prepare.add(self.view)
                acts += self._emit(Prepare(self.view, pp.seq, pp.digest))
            acts += self._check_prepared(pp.seq)
        if is_primary:
            self._next_seq = max([self.low] + [s for s, _, _ in o])
            self._assigned = {d for _, d, _ in o}
            acts += self._assign()
        return acts + self._replay_buffered() + self._restart_request_timer()
