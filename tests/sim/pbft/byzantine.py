"""Byzantine behaviours as wrappers around an honest PBFT core.

Each wrapper is an `Endpoint`: it forwards inputs to the honest core it wraps and rewrites
or adds to the core's outputs. Signatures they produce are real Ed25519 signatures with
the node's own key unless the behaviour is forgery.
"""

from __future__ import annotations

import random

from node.consensus.actions import Action, Broadcast, Send
from node.consensus.messages import (
    CommitMsg,
    MessageError,
    Prepare,
    PrePrepare,
    open_envelope,
    seal,
)
from node.consensus.pbft import PbftReplica
from node.core.block import CommitSignature
from node.core.encoding import sha256
from node.keys import NodeKey


def _body(act: Action) -> object:
    """The body of a broadcast message, else None."""
    return open_envelope(act.data).body if isinstance(act, Broadcast) else None


class Wrapper:
    """Forwards to an honest core; subclasses override `rewrite` and/or `extra`."""

    def __init__(self, core: PbftReplica, rng: random.Random) -> None:
        self.core = core
        self.id = core.id
        self.rng = rng

    def others(self) -> list[str]:
        """The other replica ids."""
        return [r for r in self.core.group.ids if r != self.id]

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Change what the honest core would do."""
        return actions

    def extra(self, sender: str, msg: bytes) -> list[Action]:
        """Additional actions on receiving `msg`."""
        return []

    def propose(self, request: bytes, now: float) -> list[Action]:
        """Forward."""
        return self.rewrite(self.core.propose(request, now))

    def handle(self, sender: str, msg: bytes, now: float) -> list[Action]:
        """Forward, then add `extra`."""
        return self.rewrite(self.core.handle(sender, msg, now)) + self.extra(sender, msg)

    def on_timer(self, name: str, now: float) -> list[Action]:
        """Forward."""
        return self.rewrite(self.core.on_timer(name, now))


class Silent(Wrapper):
    """A crashed replica: never sends anything."""

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Nothing."""
        return []


class Equivocator(Wrapper):
    """As primary, sends a different block to half of the backups."""

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Split each pre-prepare broadcast into two conflicting ones."""
        out: list[Action] = []
        for act in actions:
            body = _body(act)
            if not isinstance(act, Broadcast) or not isinstance(body, PrePrepare):
                out.append(act)
                continue
            evil_req = body.request + b"/evil"
            evil = PrePrepare(body.view, body.seq, sha256(evil_req), evil_req)
            evil_raw = seal(self.core.key, self.id, evil)
            for i, dst in enumerate(self.others()):
                out.append(Send(dst, evil_raw if i % 2 else act.data))
        return out


class WrongDigest(Wrapper):
    """Sends pre-prepares, prepares and commits with digests that match nothing."""

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Replace the digest in every vote it broadcasts."""
        out: list[Action] = []
        key = self.core.key
        for act in actions:
            body = _body(act)
            if isinstance(body, PrePrepare):
                bad = sha256(body.digest + b"x")
                out.append(
                    Broadcast(
                        seal(key, self.id, PrePrepare(body.view, body.seq, bad, body.request))
                    )
                )
            elif isinstance(body, Prepare):
                bad = sha256(body.digest + b"x")
                out.append(Broadcast(seal(key, self.id, Prepare(body.view, body.seq, bad))))
            elif isinstance(body, CommitMsg):
                bad = sha256(body.digest + b"x")
                csig = key.sign(CommitSignature.signing_bytes(bad))
                out.append(Broadcast(seal(key, self.id, CommitMsg(body.view, body.seq, bad, csig))))
            else:
                out.append(act)
        return out


class Replayer(Wrapper):
    """Honest, but also re-sends old messages: its own and others' (as relays)."""

    def __init__(self, core: PbftReplica, rng: random.Random) -> None:
        super().__init__(core, rng)
        self.seen: list[tuple[str, bytes]] = []

    def extra(self, sender: str, msg: bytes) -> list[Action]:
        """Replay up to two old messages."""
        self.seen.append((sender, msg))
        out: list[Action] = []
        for _ in range(2):
            _, old = self.rng.choice(self.seen)
            out.append(Send(self.rng.choice(self.others()), old))
        return out

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Remember its own broadcasts and sometimes send them twice."""
        for act in actions:
            if isinstance(act, Broadcast):
                self.seen.append((self.id, act.data))
        if self.seen and self.rng.random() < 0.5:
            actions = [*actions, Broadcast(self.rng.choice(self.seen)[1])]
        return actions


class Forger(Wrapper):
    """Signs with a key not its own, and impersonates other replicas."""

    def __init__(self, core: PbftReplica, rng: random.Random) -> None:
        super().__init__(core, rng)
        self.fake = NodeKey.from_seed(sha256(b"forger" + self.id.encode()))

    def rewrite(self, actions: list[Action]) -> list[Action]:
        """Re-sign every broadcast with the wrong key or under another id."""
        out: list[Action] = []
        for act in actions:
            if not isinstance(act, Broadcast):
                out.append(act)
                continue
            body = open_envelope(act.data).body
            out.append(Broadcast(seal(self.fake, self.id, body)))
            victim = self.rng.choice(self.others())
            out.append(Broadcast(seal(self.core.key, victim, body)))
        return out


class VoteForEverything(Wrapper):
    """Honest, plus a prepare and a commit for every (view, seq, digest) it sees."""

    def __init__(self, core: PbftReplica, rng: random.Random) -> None:
        super().__init__(core, rng)
        self.voted: set[tuple[int, int, bytes]] = set()

    def extra(self, sender: str, msg: bytes) -> list[Action]:
        """Vote for whatever `msg` is about."""
        try:
            body = open_envelope(msg).body
        except MessageError:
            return []
        if not isinstance(body, PrePrepare | Prepare | CommitMsg):
            return []
        key = (body.view, body.seq, body.digest)
        if key in self.voted:
            return []
        self.voted.add(key)
        k = self.core.key
        csig = k.sign(CommitSignature.signing_bytes(body.digest))
        return [
            Broadcast(seal(k, self.id, Prepare(*key))),
            Broadcast(seal(k, self.id, CommitMsg(*key, csig))),
        ]


BEHAVIOURS: dict[str, type[Wrapper]] = {
    "silent": Silent,
    "equivocate": Equivocator,
    "wrong_digest": WrongDigest,
    "replay": Replayer,
    "forge": Forger,
    "vote_all": VoteForEverything,
}
