"""What a mininet/containernet run may have left behind."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from topologies.backends import bridgefw, ovs


def leftovers(token: str) -> list[str]:
    """Interfaces, Mininet shells, OVS daemons, OVS dirs and FORWARD rules that carry the
    run's token."""
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
    for tool in bridgefw.TOOLS:
        if shutil.which(tool):
            rules = subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True)
            found += [f"{tool}: {r}" for r in bridgefw.tagged_rules(rules.stdout, token)]
    return found
