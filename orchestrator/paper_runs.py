"""What the paper reproductions (`paper_two_layer`, `paper_bees`, `paper_sfl`) share: a
scenario file read as data, one real run of a scenario as an `Outcome`, small CSVs, and
sweeps that can be continued.

How it works: `execute` runs one scenario with `orchestrator.runner.Run` (the local
backend), prints each round, and, unless Ctrl-C cut the run off, writes ``outcome.json``
beside the run's files: the outcome and a digest of the scenario. A sweep run again with
``--resume`` into the same ``--out`` (`check_out`) reads each run that has its
``outcome.json`` instead of running it (a failed run is a result too: it is not tried
again) and runs the rest; a run directory without one (a run cut off, or one whose
reproduction was killed) is removed and run from the start. A run whose recorded digest is
not its scenario's now (other options than the first time) is an error naming it: mixing
two settings in one figure would be wrong.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
OUTCOME_JSON = "outcome.json"
RESUME_HELP = (
    "continue a sweep in --out: runs done there before (their outcome.json) are read, not run "
    "again; a run that was cut off is run again from the start"
)


class ResumeError(ValueError):
    """A run directory of --out holds a run of another scenario."""


@dataclass(frozen=True)
class Outcome:
    """One run: its directory, whether it completed every round, and its wall time."""

    run_dir: Path
    ok: bool
    rounds: int
    wall_s: float
    problem: str | None
    load_avg: float  # the 1-minute load average when it ended
    interrupted: bool = False  # Ctrl-C: the sweep stops after it


Progress = Callable[[str], None]


def load_base(path: Path) -> dict[str, Any]:
    """A scenario file as a mapping, its relative `dataset.root` made absolute against the
    repository root (where the files say it is relative to)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    dataset = dict(data.get("dataset") or {})
    root = dataset.get("root")
    if isinstance(root, str) and not Path(root).is_absolute():
        dataset["root"] = str((REPO / root).resolve())
        data["dataset"] = dataset
    return data


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A small CSV."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def check_out(out: Path, resume: bool) -> str | None:
    """Why `out` cannot take a sweep (an error line naming --out), or None: it must be new
    or empty, or, with --resume, a directory."""
    if resume:
        return None if not out.exists() or out.is_dir() else f"--out: {out} is not a directory"
    if out.exists() and any(out.iterdir()):
        return (
            f"--out: {out} is not empty; allowed: a new or empty directory "
            "(or --resume to continue the sweep in it)"
        )
    return None


def scenario_digest(data: dict[str, Any]) -> str:
    """SHA-256 of the scenario's data, keys sorted."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _recorded(run_dir: Path, digest: str) -> Outcome | None:
    """The outcome a run recorded in `run_dir` (None if none); ResumeError if it was run
    with another scenario."""
    path = run_dir / OUTCOME_JSON
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("scenario_digest") != digest:
        raise ResumeError(
            f"--resume: {run_dir} was run with another scenario (other options than now); "
            "use a new --out for these options"
        )
    return Outcome(
        run_dir,
        bool(rec["ok"]),
        int(rec["rounds"]),
        float(rec["wall_s"]),
        rec.get("problem"),
        float(rec["load_avg"]),
    )


def _record(outcome: Outcome, digest: str) -> None:
    fields = {k: v for k, v in asdict(outcome).items() if k not in ("run_dir", "interrupted")}
    text = json.dumps({**fields, "scenario_digest": digest}, indent=1)
    (outcome.run_dir / OUTCOME_JSON).write_text(text + "\n")


def execute(data: dict[str, Any], out: Path, say: Progress) -> Outcome:
    """Run one scenario (a real `bcfl run`, local backend), reporting each round; a run
    recorded in `out` before is read instead (see the module's docstring)."""
    scenario = parse_scenario(data, data["name"])
    run_dir = out / scenario.name
    total = scenario.training.rounds
    digest = scenario_digest(data)
    done = _recorded(run_dir, digest)
    if done is not None:
        say(f"  {scenario.name}: done before ({'ok' if done.ok else done.problem}); read")
        return done
    if run_dir.exists():  # cut off before it recorded its outcome: from the start
        say(f"  {scenario.name}: an unfinished run is there; it runs again")
        shutil.rmtree(run_dir)

    def on_round(_run: Run, rec: dict[str, Any]) -> None:
        acc = rec.get("accuracy")
        shown = f"{acc:.4f}" if isinstance(acc, float) else "-"
        say(f"  {scenario.name}: round {rec.get('round')}/{total} accuracy {shown}")

    started = time.monotonic()
    try:
        result = Run(scenario, run_dir, progress=False, on_round=on_round).execute()
    except KeyboardInterrupt:  # before the run's own handler (its nodes are not started)
        wall = time.monotonic() - started
        return Outcome(run_dir, False, 0, wall, "interrupted", os.getloadavg()[0], True)
    except Exception as exc:  # a failed run is a result of the reproduction, not its end
        log.exception("run %s failed", scenario.name)
        why = f"{type(exc).__name__}: {exc}"
        outcome = Outcome(run_dir, False, 0, time.monotonic() - started, why, os.getloadavg()[0])
        if run_dir.is_dir():
            _record(outcome, digest)
        return outcome
    wall = time.monotonic() - started
    ok = result.rounds_completed >= total and not result.failures and result.problem is None
    problem = result.problem or (
        "; ".join(f"{f.node} {f.how}" for f in result.failures) if result.failures else None
    )
    if result.interrupted:
        problem = "interrupted"
    elif result.rounds_completed < total and problem is None:
        problem = f"{result.rounds_completed} of {total} rounds completed"
    load = os.getloadavg()[0]
    outcome = Outcome(run_dir, ok, result.rounds_completed, wall, problem, load, result.interrupted)
    if not outcome.interrupted:
        _record(outcome, digest)
    return outcome
