"""Commands on a cluster server: over ssh for a remote one, directly for this machine.

ssh runs in BatchMode (keys only: a server that wants a password fails at once instead of
prompting), with a connect timeout, the server's port and key, and ``IdentitiesOnly`` when a
key is given. A remote command is one shell string, each word quoted (`shlex.quote`), so
paths with spaces or shell characters reach the server as the words they were.
"""

from __future__ import annotations

import math
import shlex
import subprocess
from collections.abc import Sequence

from topologies.backends.cluster.settings import ServerSettings


def ssh_argv(server: ServerSettings, timeout_s: float) -> list[str]:
    """The ssh command line up to and including the destination (append the command)."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={max(1, math.ceil(timeout_s))}",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-p",
        str(server.port),
    ]
    if server.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={server.known_hosts}"]
    if server.key is not None:
        argv += ["-i", server.key, "-o", "IdentitiesOnly=yes"]
    return [*argv, f"{server.user}@{server.address}"]


def command_argv(server: ServerSettings, words: Sequence[str], timeout_s: float) -> list[str]:
    """The argv that runs `words` on `server` (through ssh unless it is this machine)."""
    if server.is_local:
        return list(words)
    return [*ssh_argv(server, timeout_s), " ".join(shlex.quote(w) for w in words)]


def run(
    server: ServerSettings,
    words: Sequence[str],
    connect_timeout_s: float,
    timeout_s: float,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `words` on `server`, feeding `stdin`; raises subprocess.TimeoutExpired past
    `timeout_s` (the connect included) and FileNotFoundError without ssh."""
    return subprocess.run(
        command_argv(server, words, connect_timeout_s),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
