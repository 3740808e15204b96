"""``bcfl top RUN_DIR``: a live table of a running experiment's nodes (rich).

How it works
------------
The nodes are the directories under ``RUN_DIR/nodes``. Each refresh asks every node's control
plane for its ``Status`` (`orchestrator.control.NodeClient`, 16 at a time, one client per node
kept across refreshes) and shows one row per node: id, role, round, height per chain, PBFT
view, peers, drops, behaviour and its state: ``up`` (it answered), ``stopped`` (no socket and
its metrics end with the counters a clean stop writes) or ``gone`` (no socket otherwise, or a
socket that refuses or does not answer). The table refreshes once a second until the run's
publisher is no longer up, or Ctrl-C; ``--once`` prints one table and exits (scripts, tests).
A run directory with no control socket at all is a one-line error (exit 1).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.control import ControlError, NodeClient
from topologies.builders import PUBLISHER_ID

REFRESH_S = 1.0
CALL_TIMEOUT_S = 1.0
TAIL_BYTES = 8192
COLUMNS = ("node", "role", "round", "heights", "view", "peers", "drops", "behaviour", "state")


@dataclass(frozen=True)
class Row:
    """One node's line of the table."""

    node: str
    state: str  # up | stopped | gone
    role: str = ""
    round: str = ""
    heights: str = ""
    view: str = ""
    peers: str = ""
    drops: str = ""
    behaviour: str = ""
    why: str = ""

    def cells(self) -> tuple[str, ...]:
        """The row's cells, in COLUMNS order."""
        return tuple(getattr(self, c) for c in COLUMNS)


def node_ids(run_dir: Path) -> list[str]:
    """The run's node ids (its node directories), sorted."""
    nodes = run_dir / "nodes"
    return sorted(p.name for p in nodes.iterdir() if p.is_dir()) if nodes.is_dir() else []


def stopped_cleanly(node_dir: Path) -> bool:
    """True if the node's metrics end with the ``counters`` record a clean stop writes."""
    path = node_dir / "metrics.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return False
    return b'"event": "counters"' in tail


def _drops(drops: Any) -> str:
    if not drops:
        return "0"
    total = sum(drops.values())
    top = sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in top) + ")"


def row_of(client: NodeClient) -> Row:
    """A node's row: its status, or why it has none."""
    try:
        s = client.status()
    except ControlError as exc:
        client.close()  # a node restarted later binds a new socket: connect afresh
        if not client.socket.exists() and stopped_cleanly(client.node_dir):
            return Row(client.node_id, "stopped")
        return Row(client.node_id, "gone", why=str(exc))
    return Row(
        node=client.node_id,
        state="up",
        role=s.role,
        round="" if s.round < 0 else str(s.round),
        heights=" ".join(f"{c.chain_id}:{c.height}" for c in s.chains),
        view="" if s.view < 0 else str(s.view),
        peers=str(s.peers),
        drops=_drops(dict(s.drops)),
        behaviour=s.behaviour,
    )


class Top:
    """The rows of a run's nodes, refreshed on demand (`rows`)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.clients = {
            nid: NodeClient(run_dir, nid, timeout_s=CALL_TIMEOUT_S) for nid in node_ids(run_dir)
        }
        self._pool = ThreadPoolExecutor(max_workers=16)

    def rows(self) -> list[Row]:
        """Every node's row, in node order."""
        return list(self._pool.map(row_of, self.clients.values()))

    def close(self) -> None:
        """Close every client."""
        self._pool.shutdown()
        for client in self.clients.values():
            client.close()


def table(rows: list[Row], title: str) -> Any:
    """The rows as a rich Table."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in COLUMNS:
        t.add_column(c, justify="right" if c in ("round", "view", "peers") else "left")
    styles = {"up": "", "stopped": "dim", "gone": "red"}
    for r in rows:
        t.add_row(*r.cells(), style=styles.get(r.state, ""))
    return t


def _title(run_dir: Path, rows: list[Row]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in ("up", "stopped", "gone")}
    return f"{run_dir}  " + "  ".join(f"{k} {v}" for k, v in counts.items())


def run_top(run_dir: Path, once: bool = False, console: Any = None) -> int:
    """``bcfl top``: 0 when done (or Ctrl-C), 1 when there is nothing to show."""
    from rich.console import Console
    from rich.live import Live

    if not (run_dir / "nodes").is_dir():
        print(f"bcfl: error: run_dir: {str(run_dir)!r} is not a run directory", file=sys.stderr)
        return 1
    top = Top(run_dir)
    if not any(c.socket.exists() for c in top.clients.values()):
        top.close()
        print(
            f"bcfl: error: {run_dir}: no node control socket (is the run still running?)",
            file=sys.stderr,
        )
        return 1
    out = console or Console(width=None if sys.stdout.isatty() else 200)
    try:
        rows = top.rows()
        if once:
            out.print(table(rows, _title(run_dir, rows)))
            return 0
        with Live(table(rows, _title(run_dir, rows)), console=out, auto_refresh=False) as live:
            while True:
                publisher = next((r for r in rows if r.node == PUBLISHER_ID), None)
                if publisher is not None and publisher.state != "up":
                    return 0
                time.sleep(REFRESH_S)
                rows = top.rows()
                live.update(table(rows, _title(run_dir, rows)), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        top.close()
