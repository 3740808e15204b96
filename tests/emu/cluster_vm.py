"""The QEMU VM of `vm/cluster-vm.sh` as the second server of the cluster e2e tests: where its
cache lives and the `cluster.servers` entries that name this machine and the VM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("BCFL_VM_CACHE", "/var/tmp/bcfl-vm")) / "cluster"
VM_ADDRESS = f"{os.environ.get('BCFL_CLUSTER_VM_NET', '172.31.77')}.2"


def vm_servers() -> list[dict[str, Any]]:
    """`cluster.servers`: this machine ("here") and the VM ("vm", reached with the cache's key)."""
    return [
        {"name": "here", "address": "localhost"},
        {
            "name": "vm",
            "address": VM_ADDRESS,
            "python": "/opt/bcfl/venv/bin/python",
            "key": str(CACHE / "id_ed25519"),
            "known_hosts": str(CACHE / "known_hosts"),
        },
    ]
