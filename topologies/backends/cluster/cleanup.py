"""`bcfl clean` on the other servers of a mininet-cluster run: each server named in the run's
meta.json is asked over ssh to run the mininet backend's `clean` for the run's token (Mininet
host shells, interfaces and bridges carrying it, trunks included) and to remove the containers
labelled with it from its Docker engine (``cluster.containers``; none where it has no engine or
no Python Docker client). A server's daemons need no
cleaning: its fork server kills them when the orchestrator's ssh connection goes
(``--kill-on-eof``). A server that cannot be reached is reported, not fatal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from topologies.backends.cluster import ssh
from topologies.backends.cluster.settings import ServerSettings
from topologies.backends.mininet import TOKEN_RE, process_cmdlines

CLEAN_TIMEOUT_S = 120.0
CLEAN = (
    "import sys\n"
    "from topologies.backends.docker_engine import remove_run_containers\n"
    "from topologies.backends.mininet import clean\n"
    "print('\\n'.join(clean(sys.argv[1]) + remove_run_containers(sys.argv[1])))\n"
)


def ssh_dir_prefix(token: str) -> str:
    """The name prefix of a run's directory of ssh configuration and master sockets."""
    return f"bcfl-{token}-ssh-"


def clean_ssh(token: str) -> list[str]:
    """Here: the run's ssh master connections (by the directory in their command line) and
    that directory."""
    prefix = ssh_dir_prefix(token)
    removed = []
    for pid, cmdline in process_cmdlines():
        # an ssh client names the directory in its arguments; a master has set its title to
        # "ssh: DIR/cm-... [mux]"
        first = cmdline[0].decode(errors="replace")
        is_ssh = Path(first).name == "ssh" or first.startswith("ssh: ")
        if is_ssh and any(f"/{prefix}".encode() in arg for arg in cmdline):
            try:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"ssh process {pid}")
            except ProcessLookupError:
                pass
    for directory in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"directory {directory}")
    return removed


def clean_servers(token: str, servers: list[dict[str, object]]) -> list[str]:
    """Clean the run `token` off every remote server of meta.json's ``cluster.servers``; what
    was removed, each line prefixed with its server's name."""
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"run token {token!r} must match {TOKEN_RE.pattern}")
    out = clean_ssh(token)
    for entry in servers:
        server = ServerSettings.model_validate(entry)
        if server.is_local:
            continue
        python = server.python or sys.executable
        try:
            done = ssh.run(server, [python, "-c", CLEAN, token], 15.0, CLEAN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out.append(f"{server.name}: no answer within {CLEAN_TIMEOUT_S:g} s; not cleaned")
            continue
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1][:200]
            out.append(f"{server.name}: not cleaned: {said}")
            continue
        out += [f"{server.name}: {line}" for line in done.stdout.splitlines() if line.strip()]
    return out
