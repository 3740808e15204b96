"""The control plane in a real multi-process run on the local backend: `bcfl top --once`
shows every node up, `bcfl control ... malicious` makes a device malicious from a round (its
round records show the behaviour from that round on), a wrong token is refused and counted,
`bcfl control ... stop` ends a device cleanly (exit code 0, counters written), and the run
still completes. Everything is driven from the publisher's round records (`on_round`);
nothing waits on a clock."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.control import ControlError, NodeClient
from orchestrator.runner import Run
from orchestrator.scenario import load_scenario
from tests.integration.test_local_run import paced_scenario

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

ROUNDS = 6
BAD = "dev0-1"
STOPPED = "dev0-3"
REFUSED = "dev0-2"


def _records(run_dir: Path, node: str) -> list[dict[str, Any]]:
    path = run_dir / "nodes" / node / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_top_control_and_stop_in_a_live_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    seen: dict[str, Any] = {}

    def steer(run: Run, record: dict[str, Any]) -> None:
        if record["round"] == 1:
            capsys.readouterr()
            seen["top"] = cli_main(["top", str(run_dir), "--once"])
            seen["top_out"] = capsys.readouterr().out
            code = cli_main(
                [
                    "control", str(run_dir), BAD, "malicious", "label_flip",
                    "--param", "strength=1.0", "--param", "mode=reverse", "--from-round", "3",
                ]
            )  # fmt: skip
            seen["malicious"] = (code, capsys.readouterr().out)
            with NodeClient(run_dir, REFUSED, token="not-the-token") as client:
                try:
                    client.stop()
                except ControlError as exc:
                    seen["refused"] = exc.code
            with NodeClient(run_dir, REFUSED) as client:
                seen["status"] = client.status()
        elif record["round"] == ROUNDS - 1:
            run.watch.expect_exit(STOPPED)
            seen["stop"] = cli_main(["control", str(run_dir), STOPPED, "stop"])

    result = Run(paced_scenario(ROUNDS), run_dir, progress=False, on_round=steer).execute()

    assert stat.S_IMODE((run_dir / "control.token").stat().st_mode) == 0o600
    # bcfl top --once: every node, up
    assert seen["top"] == 0
    lines = [line for line in seen["top_out"].splitlines() if re.match(r"^\W*(pub|mec|dev)", line)]
    shown = {line.strip("│ ").split()[0]: line for line in lines}
    assert set(shown) == {"pub", "mec0", "dev0-0", "dev0-1", "dev0-2", "dev0-3"}, seen["top_out"]
    assert all(" up" in line for line in shown.values()), seen["top_out"]
    # a live SetBehaviour: the device's round records show it from the round it took effect
    code, out = seen["malicious"]
    assert code == 0, out
    match = re.search(r"label_flip from round (\d+)", out)
    assert match is not None, out
    start = int(match.group(1))
    assert 3 <= start < ROUNDS
    rounds = {r["round"]: r["behaviour"] for r in _records(run_dir, BAD) if r["event"] == "round"}
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    assert all(b == ("label_flip" if r >= start else "") for r, b in rounds.items()), rounds
    honest = {r["behaviour"] for r in _records(run_dir, "dev0-0") if r["event"] == "round"}
    assert honest == {""}
    # a wrong token: refused, counted in that node's counters; a read-only Status needs none
    assert seen["refused"] == "PERMISSION_DENIED"
    assert seen["status"].node_id == REFUSED and seen["status"].role == "device"
    counters = [r for r in _records(run_dir, REFUSED) if r["event"] == "counters"]
    assert counters[-1]["dropped"].get("control_refused") == 1
    # Stop: a clean stop (exit code 0, counters written), the run completes without it
    assert seen["stop"] == 0
    assert result.exit_codes[STOPPED] == 0
    assert [r for r in _records(run_dir, STOPPED) if r["event"] == "counters"]
    assert result.rounds_completed == ROUNDS
    assert not result.failures
    assert not list(run_dir.glob("nodes/*/control.sock"))  # every socket removed at exit
    # after the run: nothing to show
    assert cli_main(["top", str(run_dir), "--once"]) == 1
    assert "no node control socket" in capsys.readouterr().err


def test_consecutive_runs_in_one_process_deliver_every_start(tmp_path: Path) -> None:
    # A run directory too long for a Unix socket path, several runs from one orchestrator
    # process (as the paper scripts do): each node's schedule and Start must reach that
    # node. Through /proc/self/fd/N paths, reused between clients, and gRPC's connection
    # sharing between channels of one target, a Start went to another node and a node
    # never started (runs 2 and 3 of 6 lost one).
    deep = tmp_path
    while len(str(deep / "r0" / "nodes" / "dev0-0" / "control.sock")) <= 120:
        deep = deep / ("d" * 30)
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    scenario = scenario.model_copy(
        update={"training": scenario.training.model_copy(update={"rounds": 2})}
    )
    for i in range(3):
        result = Run(scenario, deep / f"r{i}", progress=False).execute()
        assert (result.rounds_completed, result.failures) == (2, []), (i, result)
