"""What a mininet/containernet run may have left behind."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from topologies.backends import ovs


def leftovers(token: str) -> list[str]:
    """Interfaces, Mininet shells, OVS daemons and OVS dirs that carry the run's token."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [line.split(":")[1].strip() for line in links.splitlines() if f" {token}" in line]
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                cmd = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            if f"mininet:{token}".encode() in cmd or f"{ovs.DIR_PREFIX}{token}-".encode() in cmd:
                found.append(f"process {pid.name}: {cmd[:80]!r}")
    found += [str(d) for d in Path(tempfile.gettempdir()).glob(f"{ovs.DIR_PREFIX}{token}-*")]
    return found
