"""A private, real OpenSSH server on 127.0.0.1 for the cluster tests (as root).

`PrivateSshd(directory)` makes a host key and a client key, starts ``/usr/sbin/sshd -D``
with its own configuration (keys only, root by key, tunnels permitted, no PAM) on a free
port, and waits until the port answers; `server()` is the `ServerSettings` that reaches it
with the client key and a known-hosts file of its own. `stop()` ends it by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from topologies.backends.cluster.settings import ServerSettings

SSHD = "/usr/sbin/sshd"


def missing() -> str | None:
    """Why a private sshd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private sshd logging in as root needs root"
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        return "OpenSSH's server is not installed (apt-get install openssh-server)"
    if shutil.which("ssh") is None:
        return "OpenSSH's client is not installed (apt-get install openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateSshd:
    """One sshd on 127.0.0.1 with keys made for it in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for name in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                check=True,
            )
        (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
        (directory / "authorized_keys").chmod(0o600)
        (directory / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {directory / 'host_key'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
            "PermitTunnel yes\nMaxSessions 50\nMaxStartups 50:30:100\n"
        )

    def start(self, timeout_s: float = 60.0) -> None:
        """Start sshd and wait until its port accepts connections."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation root
        log = (self.dir / "sshd.log").open("wb")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port} within {timeout_s} s")

    def server(self, name: str = "peer", **fields: object) -> ServerSettings:
        """Settings that reach this sshd as root with the client key."""
        settings: dict[str, object] = {
            "name": name,
            "address": "127.0.0.1",
            "port": self.port,
            "key": str(self.dir / "client_key"),
            "known_hosts": str(self.dir / "known_hosts"),
        }
        settings.update(fields)
        return ServerSettings.model_validate(settings)

    def stop(self) -> None:
        """End sshd (and with it the sessions it forked)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
