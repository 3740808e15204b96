"""A run's block timings: every node's per-block rows, and the delay per block in units of t.

How it works: each node's store keeps a ``block_times`` row per block above genesis
(`node.ledger.storage_time`): proposed (the header's timestamp), received, validated and
stored, in wall-clock ms, the append's measured duration and the storage time t it emulated.
`block_times(run_dir)` reads them from every ``nodes/<id>/chains/<chain>/ledger.sqlite`` (a
node directory of the layout before several chains, ``nodes/<id>/ledger.sqlite``, is its
``main`` chain), with each block's hash; `write_blocks_csv` writes them as ``blocks.csv``;
`block_delays` gives per (chain, height) the delay from the proposal to the moment the last
node keeping the chain stored the block: measured in the run, in ms and in units of t.

Every row also says which FL round its block belongs to (`block_round`), from the ``round``
field every contract that records a round's work has (``task.record_update``/
``record_global``, ``sfl.*``, ``bees.*``, ``flchain.*``, ``gmuc.*``, ...): the round of the
block's update transactions (a method whose name contains ``update``: a device's, an ES's or
an aggregate's update), else the round of its other transactions; the smallest where they
name several; None (an empty cell) where no transaction carries one (a ``task.publish``
block, the rewards, genesis). Our choice, so that each scheme's block of round r says r: a
BlockFL block holds round r's updates with the publisher's ``record_global`` of round r-1,
a BEES block r holds round r's election and updates with the ES reports for round r+1's
election (``bees.report`` naming r+1), a two-layer LMUC records round r's global model in
a block of its own. A block is parsed once per (chain, hash) for the whole run: a light
replica's store keeps the block bytes too, and a store without them (a hand-made one)
leaves the round to another keeper.

What "proposed" and "certified" mean, per finality kind (the same on every node's row of a
block):

- single writer: proposed when the writer built and signed the block (its header timestamp);
- PBFT committee: proposed when the transactions were submitted to the committee (the
  submitter's timestamp, which every validator builds the candidate with: the header's);
- proof of work: proposed when the winning miner started mining the block, and certified
  when it found the proof (its ``block_proposals`` row, `ChainStore.record_proposal`); the
  header's timestamp is where the miners searched, ahead of the clock, and is used only
  where no node recorded the proposal (``proposed_from`` says which);
- certified, where no proposal row says: the earliest moment any node of the run began
  storing the block after checking its certificate (its smallest ``validated_ms``): for a
  single writer the writer's own append, for PBFT the first committee member's append on
  its commit.
"""

from __future__ import annotations

import csv
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from node.core.block import Block, BlockError
from node.ledger.chains import CHAINS_DIR, MAIN_CHAIN
from node.ledger.storage_time import BLOCK_PROPOSALS_SELECT, BLOCK_TIMES_SELECT, BlockTime
from node.ledger.store import DB_NAME

__all__ = [
    "BLOCKS_CSV",
    "BlockDelay",
    "BlockRow",
    "block_delays",
    "block_round",
    "block_times",
    "write_blocks_csv",
]

log = logging.getLogger(__name__)

BLOCKS_CSV = "blocks.csv"


@dataclass(frozen=True)
class BlockRow:
    """One block at one node (a ``blocks.csv`` row): the chain, the block's height and hash
    (hex; empty where the store lacks the block), the node; when the block was proposed and
    certified (see the module docstring; `proposed_from`: ``header`` or ``record``), received,
    validated and stored at this node (wall-clock ms), the append's duration (`storage_ms`,
    monotonic) and the storage time t it emulated; `delay_ms` from the proposal to this
    node's storing it, and `delay_t` the same in units of t (None where t is 0); `round`:
    the FL round the block belongs to (`block_round`; None where unknown). `round` is the
    last column (added after the others, so that no column moved)."""

    chain: str
    height: int
    hash: str
    node: str
    proposed_ms: float
    certified_ms: float
    received_ms: float
    validated_ms: float
    stored_ms: float
    storage_ms: float
    t_ms: float
    delay_ms: float
    delay_t: float | None
    proposed_from: str
    round: int | None = None


@dataclass(frozen=True)
class BlockDelay:
    """One block of a chain: proposed at `proposed_ms`, stored by its last keeper
    (`last_node`, of `keepers` nodes with a row for it) at `stored_ms`; `delay_ms` between
    the two, and `delay_t` the same in units of t (None where t is 0: not emulated);
    `certified_ms` as in the module docstring (the earliest of the rows'), and the block's
    FL `round` (None where unknown)."""

    chain: str
    height: int
    proposed_ms: float
    stored_ms: float
    last_node: str
    keepers: int
    delay_ms: float
    t_ms: float
    delay_t: float | None
    certified_ms: float = 0.0
    round: int | None = None


def block_round(block: Block) -> int | None:
    """The FL round `block` belongs to (see the module docstring): the smallest non-negative
    integer ``round`` of its update transactions' payloads, else of its other transactions';
    None where none has one."""
    updates: list[int] = []
    others: list[int] = []
    for tx in block.txs:
        r = tx.payload.get("round")
        if type(r) is int and r >= 0:  # not a bool, not negative
            (updates if "update" in tx.type.partition(".")[2] else others).append(r)
    rounds = updates or others
    return min(rounds) if rounds else None


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


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows of a read-only query on one store (none for a store of a version without
    the table)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA query_only=ON")
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:  # a store of an earlier version
            log.info("%s: %s", path, exc)
            return []
    finally:
        conn.close()


@dataclass(frozen=True)
class _Stored:
    node: str
    chain: str
    hash: str
    time: BlockTime


def _read(
    node: str, chain: str, path: Path, rounds: dict[tuple[str, str], int | None]
) -> list[_Stored]:
    """The ``block_times`` rows of one store, by height, with each block's hash; the round of
    each of its blocks not yet in `rounds` ((chain, hash hex) -> round) is added there."""
    rows = _query(path, BLOCK_TIMES_SELECT + " ORDER BY height")
    hashes = {int(h): bytes(b).hex() for h, b in _query(path, "SELECT height, hash FROM blocks")}
    timed = {int(row[0]) for row in rows}
    for height, h in hashes.items():
        if height in timed and (chain, h) not in rounds:
            found = _query(path, f"SELECT data FROM blocks WHERE height = {height:d}")
            if found:
                try:
                    rounds[(chain, h)] = block_round(Block.from_bytes(bytes(found[0][0])))
                except BlockError as exc:  # a corrupt block: its round stays unknown
                    log.warning("%s: block %d: %s", path, height, exc)
    return [
        _Stored(node, chain, hashes.get(t.height, ""), t) for t in map(BlockTime.from_row, rows)
    ]


def _proposals(stores: list[tuple[str, str, Path]]) -> dict[tuple[str, str], tuple[float, float]]:
    """(chain, block hash hex) -> (proposed_ms, certified_ms) from every node's
    ``block_proposals`` (the earliest where several nodes recorded one)."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for _, chain, path in stores:
        for h, _height, proposed, certified in _query(path, BLOCK_PROPOSALS_SELECT):
            key = (chain, bytes(h).hex())
            value = (float(proposed), float(certified))
            out[key] = min(out.get(key, value), value)
    return out


def block_times(run_dir: Path) -> list[BlockRow]:
    """Every node's timing row of every block of every chain of the run, by (node, chain,
    height)."""
    stores = list(_stores(run_dir))
    rounds: dict[tuple[str, str], int | None] = {}
    stored = [row for node, chain, path in stores for row in _read(node, chain, path, rounds)]
    proposals = _proposals(stores)
    first_validated: dict[tuple[str, int, str], float] = {}
    for r in stored:
        key = (r.chain, r.time.height, r.hash)
        first_validated[key] = min(
            first_validated.get(key, r.time.validated_ms), r.time.validated_ms
        )
    out = []
    for r in stored:
        t = r.time
        recorded = proposals.get((r.chain, r.hash))
        if recorded is not None:
            (proposed, certified), source = recorded, "record"
        else:
            proposed, source = float(t.proposed_ms), "header"
            certified = first_validated[(r.chain, t.height, r.hash)]
        delay = t.stored_ms - proposed
        out.append(
            BlockRow(
                chain=r.chain,
                height=t.height,
                hash=r.hash,
                node=r.node,
                proposed_ms=proposed,
                certified_ms=certified,
                received_ms=t.received_ms,
                validated_ms=t.validated_ms,
                stored_ms=t.stored_ms,
                storage_ms=t.storage_ms,
                t_ms=t.t_ms,
                delay_ms=delay,
                delay_t=delay / t.t_ms if t.t_ms > 0 else None,
                proposed_from=source,
                round=rounds.get((r.chain, r.hash)),
            )
        )
    return out


def write_blocks_csv(
    run_dir: Path, path: Path | None = None, rows: list[BlockRow] | None = None
) -> Path:
    """Write `block_times(run_dir)` (or `rows`, where the caller has them already) as CSV
    (default ``run_dir/blocks.csv``); returns its path."""
    out = Path(run_dir) / BLOCKS_CSV if path is None else Path(path)
    if rows is None:
        rows = block_times(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f.name for f in fields(BlockRow)])
        writer.writerows(["" if v is None else v for v in astuple(r)] for r in rows)
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
        proposed = min(r.proposed_ms for r in rows)  # one block: equal unless a store lies
        unit = max(r.t_ms for r in rows) if t_ms is None else t_ms
        delay = last.stored_ms - proposed
        known = [r.round for r in rows if r.round is not None]
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
                certified_ms=min(r.certified_ms for r in rows),
                round=min(known) if known else None,
            )
        )
    return out
