"""What a mininet/containernet run may have left behind: interfaces and host shells."""

from __future__ import annotations

import subprocess
from pathlib import Path


def leftovers(token: str) -> list[str]:
    """Interfaces whose name starts with the run token, and Mininet shells of the run."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [line.split(":")[1].strip() for line in links.splitlines() if f" {token}" in line]
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                cmd = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            if f"mininet:{token}".encode() in cmd:
                found.append(f"process {pid.name}")
    return found
