"""A run's shared file (endpoints, roster, topology, chain), parsed once per process.

At 1,000 devices the topology is most of a node's configuration: the full MEC backhaul mesh
of 200 MECs is 40k directed links, 7 MB of JSON, and parsing it into a `TopologySpec` costs
each daemon ~1.7 s of CPU and ~38 MB (measured). Written once per run instead of into every
node's config, and parsed once by the fork server before it forks (``preload``), the daemons
share the parsed objects copy-on-write: `load` returns the cached parse when the file has not
changed (same path, size and modification time).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies.spec import TopologySpec

SHARED_KEY = "shared"  # a node config's key naming its run's shared file


@dataclass(frozen=True)
class SharedRun:
    """The parsed shared file: its JSON object and the topology built from it."""

    data: dict[str, Any]
    topology: TopologySpec


_CACHE: dict[tuple[str, int, int], SharedRun] = {}


def load(path: str | Path) -> SharedRun:
    """The shared file at `path`, parsed (cached per path, size and modification time)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is None:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
            raise ValueError(f"{path}: a run's shared file is a JSON object with a topology")
        cached = SharedRun(data, TopologySpec.from_dict(data["topology"]))
        _CACHE.clear()  # one run at a time: an earlier run's parse is garbage now
        _CACHE[key] = cached
    return cached


def shared_path_of(config_path: str | Path) -> str | None:
    """The shared file a node config names, or None (a self-contained config)."""
    try:
        data = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        return None
    value = data.get(SHARED_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
