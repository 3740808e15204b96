"""The start-up counts of `bcfl run`'s progress bar are kept incrementally (1,000 nodes: the
orchestrator must not re-read every node's metrics file on every poll)."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.progress import StartupCounter


def _node(run_dir: Path, node: str, records: list[str] | None = None) -> Path:
    node_dir = run_dir / "nodes" / node
    node_dir.mkdir(parents=True)
    if records is not None:
        lines = [json.dumps({"event": e, "node": node}) for e in records]
        (node_dir / "metrics.jsonl").write_text("".join(f"{ln}\n" for ln in lines))
    return node_dir


def test_startup_counter_reads_each_file_once_and_only_new_lines(tmp_path: Path) -> None:
    dirs = {
        "pub": _node(tmp_path, "pub", ["ready"]),
        "dev0-0": _node(tmp_path, "dev0-0", []),
        "dev0-1": _node(tmp_path, "dev0-1"),
    }
    counter = StartupCounter(dirs)
    assert counter.count() == (2, 1)

    (dirs["pub"] / "metrics.jsonl").unlink()  # a ready node's file is not read again
    with (dirs["dev0-0"] / "metrics.jsonl").open("a") as f:
        f.write('{"event": "ready"}\n{"event": "ro')  # a torn last line waits
    assert counter.count() == (2, 2)
    assert counter._offset["dev0-0"] == len('{"event": "ready"}\n')

    with (dirs["dev0-0"] / "metrics.jsonl").open("a") as f:
        f.write('und"}\n')
    (dirs["dev0-1"] / "metrics.jsonl").write_text('{"event": "started"}\n')
    assert counter.count() == (3, 3)
