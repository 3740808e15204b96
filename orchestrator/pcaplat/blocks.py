"""Per block and node: proposal -> arrival on the node's wire -> commit -> stored.

How it works
------------
The envelope header does not say which block a message carries (the height and the block
sit in the body, after the block's bytes), so the block's own timing comes from the nodes:
``blocks.csv`` (`node.ledger.timing`; computed from the ledgers where the run has none)
gives per (chain, height, node) when the block was proposed, certified (``committed_ms``
here), received by the node's daemon and stored. Its arrival on the wire is then the last
byte, on the node's own capture, of the block-carrying message (``chain.block``,
``chain.blocks``, ``pow.block``, ``bees.block``) addressed to the node that ended last
before the daemon's ``received_ms`` and not before the proposal (our choice: the message
the daemon was handed just then; a node without a capture gets no arrival).
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from orchestrator.pcaplat.capture import Observation

LATENCY_BLOCKS_CSV = "latency_blocks.csv"
BLOCK_TYPES = frozenset({"chain.block", "chain.blocks", "pow.block", "bees.block"})
PROPOSAL_SLACK_MS = 1.0  # a header's timestamp is whole milliseconds


@dataclass
class BlockRow:
    """One row of latency_blocks.csv."""

    chain: str
    height: int
    hash: str
    node: str
    proposed_ms: float | None
    arrived_ms: float | None
    committed_ms: float | None
    received_ms: float | None
    stored_ms: float | None
    arrived_from: str
    arrived_type: str
    arrival_delay_ms: float | None
    stored_delay_ms: float | None


COLUMNS = tuple(f.name for f in fields(BlockRow))


def block_rows(run_dir: Path, arrivals: Iterable[tuple[str, Observation]]) -> list[BlockRow]:
    """latency_blocks.csv's rows: the run's block timings joined with `arrivals`, the
    messages each node's own capture saw addressed to it, as (node, observation)."""
    by_node: dict[str, list[tuple[float, Observation]]] = {}
    for node, obs in arrivals:
        if obs.header.type in BLOCK_TYPES:
            by_node.setdefault(node, []).append((obs.msg.last_ms, obs))
    for items in by_node.values():
        items.sort(key=lambda item: item[0])
    rows = []
    for rec in _timings(run_dir):
        node = rec["node"]
        proposed, received = _num(rec.get("proposed_ms")), _num(rec.get("received_ms"))
        stored = _num(rec.get("stored_ms"))
        hit = _arrival(by_node.get(node, []), node, proposed, received)
        arrived = hit.msg.last_ms if hit else None
        rows.append(
            BlockRow(
                chain=rec.get("chain", ""),
                height=int(rec.get("height") or 0),
                hash=rec.get("hash", ""),
                node=node,
                proposed_ms=proposed,
                arrived_ms=arrived,
                committed_ms=_num(rec.get("certified_ms")),
                received_ms=received,
                stored_ms=stored,
                arrived_from=hit.header.sender if hit else "",
                arrived_type=hit.header.type if hit else "",
                arrival_delay_ms=None
                if arrived is None or proposed is None
                else arrived - proposed,
                stored_delay_ms=None if stored is None or proposed is None else stored - proposed,
            )
        )
    return rows


def _arrival(
    items: list[tuple[float, Observation]],
    node: str,
    proposed: float | None,
    received: float | None,
) -> Observation | None:
    if received is None or proposed is None:
        return None
    i = bisect.bisect_right([t for t, _ in items], received)
    while i > 0:
        i -= 1
        last_ms, obs = items[i]
        if last_ms < proposed - PROPOSAL_SLACK_MS:
            return None
        if obs.header.sender != node:
            return obs
    return None


def _timings(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "blocks.csv"
    if path.is_file():
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    from node.ledger.timing import block_times

    return [
        {k: "" if v is None else str(v) for k, v in vars(row).items()}
        for row in block_times(run_dir)
    ]


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
