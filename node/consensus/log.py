"""The per-sequence-number message log of a PBFT replica.

How it works: a `Slot` holds, for one sequence number, the accepted PRE-PREPARE per view,
the first PREPARE and first COMMIT of each replica per view (a second, different one from the
same replica in the same view is equivocation and is dropped), and which views this replica
has already voted in. Quorums are counted over distinct replicas for one (view, digest).
Slots at or below the stable checkpoint are garbage-collected by the replica.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.consensus.messages import PrePrepare


@dataclass
class Slot:
    """What one replica logged for one sequence number."""

    pre_prepares: dict[int, tuple[PrePrepare, bytes]] = field(default_factory=dict)
    prepares: dict[int, dict[str, tuple[bytes, bytes]]] = field(default_factory=dict)
    commits: dict[int, dict[str, tuple[bytes, bytes]]] = field(default_factory=dict)
    sent_prepare: set[int] = field(default_factory=set)
    sent_commit: set[int] = field(default_factory=set)
    decided: bool = False

    def add_vote(
        self,
        table: dict[int, dict[str, tuple[bytes, bytes]]],
        view: int,
        sender: str,
        digest: bytes,
        raw: bytes,
    ) -> str | None:
        """Record a prepare/commit; returns a drop reason or None."""
        votes = table.setdefault(view, {})
        old = votes.get(sender)
        if old is not None:
            return "duplicate" if old[0] == digest else "equivocation"
        votes[sender] = (digest, raw)
        return None

    def prepared(self, view: int, primary: str, f: int) -> list[bytes] | None:
        """The 2f matching prepares if (view, this seq) is prepared, else None."""
        pp = self.pre_prepares.get(view)
        if pp is None:
            return None
        raws = [
            raw
            for sender, (d, raw) in self.prepares.get(view, {}).items()
            if d == pp[0].digest and sender != primary
        ]
        return raws if len(raws) >= 2 * f else None

    def commit_quorum(self, quorum: int) -> tuple[int, bytes, list[bytes]] | None:
        """(view, digest, raws) of 2f+1 matching commits in some view, else None."""
        for view, votes in self.commits.items():
            counts = Counter(d for d, _ in votes.values())
            for digest, count in counts.items():
                if count >= quorum:
                    return view, digest, [raw for d, raw in votes.values() if d == digest]
        return None

    def forget_views_below(self, view: int) -> None:
        """Drop pre-prepares and prepares of views below `view` (commits stay as evidence)."""
        for table in (self.pre_prepares, self.prepares):
            for v in [v for v in table if v < view]:
                del table[v]

    def size(self) -> int:
        """Number of logged messages."""
        return (
            len(self.pre_prepares)
            + sum(len(v) for v in self.prepares.values())
            + sum(len(v) for v in self.commits.values())
        )
