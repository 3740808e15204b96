"""Per-process limits a node daemon needs at scale: open files and ZeroMQ sockets.

A node keeps one PUSH socket per peer it sends to and accepts one TCP connection per peer that
sends to it; each ZeroMQ socket also owns an eventfd mailbox. The publisher of a 1,000-device
run therefore holds ~3 fds per node, far above the usual soft RLIMIT_NOFILE of 1024, and more
sockets than a ZeroMQ context's default ``MAX_SOCKETS`` (1023). The soft limit is ours to raise
(up to the hard limit, which only root can raise); the context's socket limit is set from the
node's peer count before its first socket.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

FDS_PER_PEER = 3  # a PUSH socket's mailbox and TCP connection, the peer's inbound connection
FDS_SPARE = 256  # files, SQLite, logs, the blob store, the ZeroMQ context's own fds
SOCKETS_SPARE = 64  # the PULL socket and any sockets a role adds
ZMQ_DEFAULT_MAX_SOCKETS = 1023


def fds_needed(peers: int) -> int:
    """Open files a node with `peers` peers may hold at once."""
    return FDS_PER_PEER * peers + FDS_SPARE


def zmq_max_sockets(peers: int) -> int:
    """The ZeroMQ context's socket limit for a node with `peers` peers (never below the
    library's default)."""
    return max(ZMQ_DEFAULT_MAX_SOCKETS, peers + SOCKETS_SPARE)


def raise_nofile(need: int | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (never lowers it); returns (soft, hard).

    With `need`, a warning says when even the hard limit is below it (only root can raise
    the hard limit: ``ulimit -Hn`` or the service's ``LimitNOFILE``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
    if need is not None and soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "RLIMIT_NOFILE is %d (hard %d) but this node may need %d open files; "
            "raise the hard limit (ulimit -Hn) or run fewer nodes",
            soft,
            hard,
            need,
        )
    return soft, hard
