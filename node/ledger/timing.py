"""A run's block timings: every node's per-block rows, and the delay per block in units of t.

How it works: each node's store keeps a ``block_times`` row per block above genesis
(`node.ledger.storage_time`): proposed (the header's timestamp), received, validated and
stored, in wall-clock ms, the append's measured duration and the storage time t it emulated.
`block_times(run_dir)` reads them from every ``nodes/<id>/chains/<chain>/ledger.sqlite`` (a
node directory of the layout before several chains, ``nodes/<id>/ledger.sqlite``, is its
``main`` chain); `write_blocks_csv` writes them as ``blocks.csv``; `block_delays` gives per
(chain, height) the delay from the proposal to the moment the last node keeping the chain
stored the block: measured in the run, in ms and in units of t.
"""

from __future__ import annotations

import csv
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from node.ledger.chains import CHAINS_DIR, MAIN_CHAIN
from node.ledger.storage_time import BLOCK_TIMES_SELECT, BlockTime
from node.ledger.store import DB_NAME

__all__ = [
    "BLOCKS_CSV",
    "BlockDelay",
    "BlockRow",
    "block_delays",
    "block_times",
    "write_blocks_csv",
]

log = logging.getLogger(__name__)

BLOCKS_CSV = "blocks.csv"


@dataclass(frozen=True)
class BlockRow:
    """One block at one node (a ``blocks.csv`` row): the `BlockTime` fields with the chain
    and the node."""

    chain: str
    height: int
    node: str
    proposed_ms: int
    received_ms: float
    validated_ms: float
    stored_ms: float
    storage_ms: float
    t_ms: float


@dataclass(frozen=True)
class BlockDelay:
    """One block of a chain: proposed at `proposed_ms`, stored by its last keeper
    (`last_node`, of `keepers` nodes with a row for it) at `stored_ms`; `delay_ms` between
    the two, and `delay_t` the same in units of t (None where t is 0: not emulated)."""

    chain: str
    height: int
    proposed_ms: int
    stored_ms: float
    last_node: str
    keepers: int
    delay_ms: float
    t_ms: float
    delay_t: float | None


def _stores(run_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """(node id, chain id, database) for every ledger of the run, in order."""
    nodes = Path(run_dir) / "nodes"
    if not nodes.is_dir():
        return
    for node_dir in sorted(p for p in nodes.iterdir() if p.is_dir()):
        chains = node_dir / CHAINS_DIR
        found = False
        if chains.is_dir():
            for chain_dir in sorted(chains.iterdir()):
                if (chain_dir / DB_NAME).is_file():
                    found = True
                    yield node_dir.name, chain_dir.name, chain_dir / DB_NAME
        if not found and (node_dir / DB_NAME).is_file():
            yield node_dir.name, MAIN_CHAIN, node_dir / DB_NAME


def _read(path: Path) -> list[BlockTime]:
    """The ``block_times`` rows of one store (none for a store without the table)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA query_only=ON")
        try:
            rows = conn.execute(BLOCK_TIMES_SELECT + " ORDER BY height").fetchall()
        except sqlite3.OperationalError as exc:  # a store of a version without block times
            log.info("no block times in %s: %s", path, exc)
            return []
    finally:
        conn.close()
    return [BlockTime.from_row(r) for r in rows]


def block_times(run_dir: Path) -> list[BlockRow]:
    """Every node's timing row of every block of every chain of the run, by (node, chain,
    height)."""
    return [
        BlockRow(chain, t.height, node, *astuple(t)[1:])
        for node, chain, path in _stores(run_dir)
        for t in _read(path)
    ]


def write_blocks_csv(run_dir: Path, path: Path | None = None) -> Path:
    """Write `block_times(run_dir)` as CSV (default ``run_dir/blocks.csv``); returns its path."""
    out = Path(run_dir) / BLOCKS_CSV if path is None else Path(path)
    rows = block_times(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f.name for f in fields(BlockRow)])
        writer.writerows(astuple(r) for r in rows)
    tmp.replace(out)
    return out


def block_delays(run_dir: Path, t_ms: float | None = None) -> list[BlockDelay]:
    """Per (chain, height), by chain then height: the delay from the block's proposal to its
    storage at the last node that stored it. `t_ms`: the unit t (None: the storage time the
    nodes recorded, their largest)."""
    by_block: dict[tuple[str, int], list[BlockRow]] = {}
    for row in block_times(run_dir):
        by_block.setdefault((row.chain, row.height), []).append(row)
    out = []
    for (chain, height), rows in sorted(by_block.items()):
        last = max(rows, key=lambda r: (r.stored_ms, r.node))
        proposed = min(r.proposed_ms for r in rows)  # one header: equal unless a store lies
        unit = max(r.t_ms for r in rows) if t_ms is None else t_ms
        delay = last.stored_ms - proposed
        out.append(
            BlockDelay(
                chain=chain,
                height=height,
                proposed_ms=proposed,
                stored_ms=last.stored_ms,
                last_node=last.node,
                keepers=len(rows),
                delay_ms=delay,
                t_ms=unit,
                delay_t=delay / unit if unit > 0 else None,
            )
        )
    return out
