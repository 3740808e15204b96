"""The progress bar of `bcfl run`: node start-up first (`starting: 9/13 up, 4/13 ready`),
then rounds, with the bar's clock, rate and ETA restarted when the rounds begin so that
start-up does not count in them.

A node is *up* once its daemon has built itself (its `metrics.jsonl` exists: imports done,
key and ledger opened) and *ready* once it wrote its ``ready`` record (its role started:
data loaded, hello sent); the publisher's ``started`` record means every node is ready.
With 1,000 nodes the counts are kept between calls (`StartupCounter`): a node already ready is
not looked at again, and a node's file is read from where the last call stopped, at most every
`REFRESH_S`, so the orchestrator does not re-read a thousand files every poll.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

REFRESH_S = 0.5


def startup_counts(node_dirs: dict[str, Path]) -> tuple[int, int]:
    """(nodes up, nodes ready) from the files the daemons have written so far."""
    up = ready = 0
    for node_dir in node_dirs.values():
        path = node_dir / "metrics.jsonl"
        if not path.exists():
            continue
        up += 1
        with path.open(errors="replace") as f:
            if any(line.startswith(('{"event": "ready"', '{"event": "started"')) for line in f):
                ready += 1
    return up, ready


READY_PREFIXES = (b'{"event": "ready"', b'{"event": "started"')


class StartupCounter:
    """`startup_counts` kept up to date incrementally: ready nodes are done, other nodes'
    files are read from the offset the previous call reached (whole lines only)."""

    def __init__(self, node_dirs: dict[str, Path]) -> None:
        self.node_dirs = node_dirs
        self.up: set[str] = set()
        self.ready: set[str] = set()
        self._offset: dict[str, int] = {}

    def count(self) -> tuple[int, int]:
        """(nodes up, nodes ready) now."""
        for nid, node_dir in self.node_dirs.items():
            if nid in self.ready:
                continue
            try:
                with (node_dir / "metrics.jsonl").open("rb") as f:
                    self.up.add(nid)
                    f.seek(self._offset.get(nid, 0))
                    data = f.read()
            except OSError:
                continue
            whole = data[: data.rfind(b"\n") + 1]
            self._offset[nid] = self._offset.get(nid, 0) + len(whole)
            if any(line.startswith(READY_PREFIXES) for line in whole.splitlines()):
                self.ready.add(nid)
        return len(self.up), len(self.ready)


def startup_text(up: int, ready: int, total: int) -> str:
    """The bar's description during start-up."""
    return f"starting: {up}/{total} up, {ready}/{total} ready"


class RunProgress:
    """A tqdm bar over the rounds, preceded by the start-up counts (silent when disabled)."""

    def __init__(
        self, rounds: int, node_dirs: dict[str, Path], enabled: bool, file: TextIO
    ) -> None:
        self.node_dirs = node_dirs
        self.counter = StartupCounter(node_dirs)
        self.enabled = enabled
        self.bar = tqdm(total=rounds, unit="round", disable=not enabled, file=file, desc="starting")
        self.rounds_begun = False
        self._shown: tuple[int, int] | None = None
        self._next_refresh = 0.0

    def startup(self, publisher_started: bool) -> None:
        """Show how many nodes are up and ready (until the rounds begin)."""
        if not self.enabled or self.rounds_begun:
            return
        now = time.monotonic()
        if publisher_started:
            counts = (len(self.node_dirs), len(self.node_dirs))
            self.begin_rounds()
        elif self._shown is not None and now < self._next_refresh:
            return  # the runner polls every 0.2 s; the files are read at most every REFRESH_S
        else:
            counts = self.counter.count()
        changed = counts != self._shown
        if changed:
            self._shown = counts
            self.bar.set_description(startup_text(*counts, len(self.node_dirs)), refresh=False)
        if changed or now >= self._next_refresh:
            self._next_refresh = now + REFRESH_S
            self.bar.refresh()  # the clock keeps moving while nodes start

    def begin_rounds(self) -> None:
        """Restart the bar's clock: rate and ETA count from here."""
        if not self.rounds_begun:
            self.rounds_begun = True
            self.bar.reset()

    def rounds_done(self, new: int, last: dict[str, Any], elapsed_s: float) -> None:
        """`new` more rounds finished; `last` is the latest round record."""
        self.begin_rounds()
        self.bar.set_description(f"round {last['round']}", refresh=False)
        self.bar.set_postfix(
            acc=f"{last['accuracy']:.4f}", elapsed=f"{elapsed_s:.0f}s", refresh=False
        )
        self.bar.update(new)
        self.bar.refresh()

    def close(self) -> None:
        """Leave the bar as it is."""
        self.bar.close()
