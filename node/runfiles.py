"""A run's shared file (endpoints, roster, topology, chains), parsed once per process.

At 1,000 devices the topology is most of a node's configuration: the full MEC backhaul mesh
of 200 MECs is 40k directed links, 7 MB of JSON, and parsing it into a `TopologySpec` costs
each daemon ~1.7 s of CPU and ~38 MB (measured). Written once per run instead of into every
node's config, and parsed once by the fork server before it forks (``preload``), the daemons
share the parsed objects copy-on-write: `load` returns the cached parse when the file has not
changed (same path, size and modification time).

Besides the topology, `load` builds what every daemon of the run would otherwise build
identically for itself (measured per daemon at 1,000 devices, `bench/daemon_memory.py`): the
shared fields checked against `NodeConfig`'s types once (a config then takes them without a
pydantic copy each), each chain's config with its genesis block, state and encoding (~3 MB of
private memory per daemon), per chain a store holding the genesis that each node's new ledger
of that chain starts as a copy of (``shared.genesis-HASH.sqlite``: writing 2,202 genesis rows
cost each daemon ~2 MB), the roster's public keys, and the topology's compact route index
(`topologies.routing`: a BFS over the shared links copied ~8 MB of pages per daemon).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topologies.routing import RouteIndex
from topologies.spec import TopologySpec

if TYPE_CHECKING:
    from node.keys import Roster
    from node.ledger.chain import ChainConfig

SHARED_KEY = "shared"  # a node config's key naming its run's shared file


@dataclass(frozen=True)
class SharedRun:
    """The parsed shared file: its JSON object (the shared fields checked against
    `NodeConfig`'s types), the topology, and, where the file has them, the chain configs by
    chain id (their genesis computed) and the roster."""

    data: dict[str, Any]
    topology: TopologySpec
    chains: Mapping[str, ChainConfig] = field(default_factory=dict)
    roster: Roster | None = None
    # chain id -> a store holding that chain's genesis, for nodes to copy
    genesis_dbs: Mapping[str, Path] = field(default_factory=dict)


def _parse(path: str | Path) -> SharedRun:
    from pydantic import TypeAdapter, ValidationError

    from node.config import SHARED_FIELDS, NodeConfig
    from node.keys import Roster

    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
        raise ValueError(f"{path}: a run's shared file is a JSON object with a topology")
    for name in SHARED_FIELDS:
        if name in data:
            annotation: Any = NodeConfig.model_fields[name].rebuild_annotation()
            try:
                data[name] = TypeAdapter(annotation).validate_python(data[name])
            except ValidationError as exc:
                raise ValueError(f"{path}: {name}: {exc.errors()[0]['msg']}") from None
            except (KeyError, TypeError, ValueError) as exc:  # TopologySpec/ChainConfig parsing
                raise ValueError(f"{path}: {name}: {exc}") from None
    topology: TopologySpec = data["topology"]
    RouteIndex.of(topology)
    chains: dict[str, ChainConfig] = data.get("chains", {})
    for chain in chains.values():
        _ = chain.encoded, chain.genesis_block  # computed here: shared by forked daemons
    try:
        roster = Roster.from_hex(data["roster"]) if "roster" in data else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: roster: {exc}") from None
    templates = {cid: _genesis_template(Path(path), chain) for cid, chain in chains.items()}
    genesis_dbs = {cid: db for cid, db in templates.items() if db is not None}
    return SharedRun(data, topology, chains, roster, genesis_dbs)


def _genesis_template(shared: Path, chain: ChainConfig) -> Path | None:
    """The run's genesis store next to its shared file, written unless there (named by the
    chain config's hash, so a changed config gets its own); None where it cannot be written
    (each node then writes its own genesis, as without a template)."""
    import hashlib
    import logging
    import sqlite3

    from node.ledger.chain import write_genesis_template

    digest = hashlib.sha256(chain.encoded).hexdigest()[:16]
    path = shared.with_name(f"{shared.stem}.genesis-{digest}.sqlite")
    if not path.exists():
        try:
            write_genesis_template(path, chain)
        except (OSError, sqlite3.Error) as exc:
            logging.getLogger(__name__).warning("no genesis template at %s: %s", path, exc)
            return None
    return path


_CACHE: dict[tuple[str, int, int], SharedRun] = {}


def load(path: str | Path) -> SharedRun:
    """The shared file at `path`, parsed (cached per path, size and modification time)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _parse(path)
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
