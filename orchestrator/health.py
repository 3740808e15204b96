"""What went wrong in a run: node processes that died unexpectedly, and runs in which no
device ever contributed (the global model was never trained, so its accuracy is no result).

A node's exit is *expected* when it exits 0, when the fault schedule killed it (``crash``,
until a ``restart`` starts it again) or when the orchestrator stopped it at the end; every
other exit (non-zero code, a signal from outside) is a `NodeFailure`.
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOG_NAMES = ("node.log", "stdout.log")
MAX_LINE = 160
START_COMPLAINTS = ("said hello", "no MEC is up")


@dataclass(frozen=True)
class NodeFailure:
    """One node process that ended unexpectedly."""

    node: str
    exit_code: int
    log: str
    last_line: str
    after_round: int

    @property
    def how(self) -> str:
        """'exit code N' or 'signal NAME'."""
        return describe_exit(self.exit_code)

    def line(self) -> str:
        """The one line `bcfl run` prints for this node."""
        last = f': "{self.last_line}"' if self.last_line else ""
        when = f"after round {self.after_round}" if self.after_round else "before round 1"
        return f"bcfl: node {self.node} died unexpectedly ({self.how}) {when}; log {self.log}{last}"

    def to_dict(self) -> dict[str, Any]:
        """For meta.json."""
        return {**asdict(self), "how": self.how}


def describe_exit(code: int) -> str:
    """'signal SIGKILL' for a negative code (killed by a signal), else 'exit code N', with
    the signal for 129-192 (how shells and container engines report a killed process)."""
    if code < 0:
        return f"signal {_signal_name(-code)}"
    if 128 < code <= 192:
        return f"exit code {code} (128+{_signal_name(code - 128)})"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def last_log(node_dir: Path) -> tuple[Path | None, str]:
    """The node's most recently written non-empty log file and its last non-empty line
    (shortened to MAX_LINE characters); (None, '') when it wrote none."""
    logs = [p for p in (node_dir / n for n in LOG_NAMES) if p.is_file() and p.stat().st_size]
    if not logs:
        return None, ""
    path = max(logs, key=lambda p: p.stat().st_mtime_ns)
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 8192))
        tail = f.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if len(last) > MAX_LINE:
        last = last[: MAX_LINE - 3] + "..."
    return path, last


def node_failure(node: str, code: int, node_dir: Path, after_round: int) -> NodeFailure:
    """A failure record for `node`, with the path and last line of its latest log."""
    path, last = last_log(node_dir)
    shown = str(path) if path is not None else f"{node_dir} (no log written)"
    return NodeFailure(node, code, shown, last, after_round)


class ExitWatch:
    """Follows the nodes' exit codes between polls and keeps the unexpected exits.

    `expect_exit(node)` before the fault schedule kills a node; `restarted(node)` when it
    runs again (a later unexpected exit of the new process counts)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.failures: list[NodeFailure] = []
        self._expected: set[str] = set()
        self._last: dict[str, int | None] = {}

    def expect_exit(self, node: str) -> None:
        """The schedule is about to kill `node`: its exit is no failure."""
        self._expected.add(node)

    def restarted(self, node: str) -> None:
        """`node` runs again."""
        self._expected.discard(node)
        self._last[node] = None

    def observe(self, codes: dict[str, int | None], after_round: int) -> list[NodeFailure]:
        """Record the nodes that exited unexpectedly since the last call; returns them."""
        new = []
        for node, code in sorted(codes.items()):
            was_running = self._last.get(node) is None
            self._last[node] = code
            if code is None or code == 0 or not was_running or node in self._expected:
                continue
            new.append(node_failure(node, code, self.run_dir / "nodes" / node, after_round))
        self.failures.extend(new)
        return new


def device_problem(rounds: list[dict[str, Any]], devices: list[str], pub_dir: Path) -> str | None:
    """Why the run is no result: no round completed, or no device contributed to any round
    (the accuracy would be the untrained model's); None when devices took part."""
    if devices and any(int(r.get("contributors") or 0) > 0 for r in rounds):
        return None
    why = _publisher_says(pub_dir)
    if not rounds:
        return f"no round completed{why}"
    if not devices:
        return None
    return (
        f"no device contributed in any of the {len(rounds)} rounds (devices: "
        f"{_span(devices)}){why}; the accuracy is that of the untrained model, not a result"
    )


def _publisher_says(pub_dir: Path) -> str:
    """'; the publisher's log: ...' with its last start-up complaint, or ''."""
    log = pub_dir / "node.log"
    if not log.is_file():
        return ""
    found = [
        ln
        for ln in log.read_text(errors="replace").splitlines()
        if any(k in ln for k in START_COMPLAINTS)
    ]
    if not found:
        return ""
    return "; the publisher's log: " + found[-1].split(": ", 1)[-1][:MAX_LINE]


def _span(ids: list[str]) -> str:
    return ", ".join(ids) if len(ids) <= 8 else f"{', '.join(ids[:8])}, ... ({len(ids)} in all)"
