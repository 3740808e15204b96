"""Unit tests for naming dead nodes, the every-device-missing check and the start-up
progress of `bcfl run`, on files written the way the daemons write them."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

from orchestrator.health import ExitWatch, describe_exit, device_problem, last_log
from orchestrator.progress import RunProgress, startup_counts, startup_text


def _node(run_dir: Path, node: str, records: list[dict[str, object]] | None = None) -> Path:
    node_dir = run_dir / "nodes" / node
    node_dir.mkdir(parents=True)
    if records is not None:
        lines = [json.dumps({"event": r.pop("event"), "node": node, **r}) for r in records]
        (node_dir / "metrics.jsonl").write_text("".join(f"{ln}\n" for ln in lines))
    return node_dir


def test_exit_codes_and_signals_are_described() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "signal SIGTERM"
    assert describe_exit(137) == "exit code 137 (128+SIGKILL)"  # a container's exec


def test_last_log_is_the_latest_written_file_and_its_last_line(tmp_path: Path) -> None:
    node_dir = _node(tmp_path, "dev0-1")
    (node_dir / "node.log").write_text("INFO node: started\n")
    os.utime(node_dir / "node.log", ns=(1, 1))
    (node_dir / "stdout.log").write_text("Traceback ...\nValueError: bad config\n\n")

    path, last = last_log(node_dir)

    assert path == node_dir / "stdout.log"
    assert last == "ValueError: bad config"


def test_unexpected_exits_are_failures_and_scheduled_crashes_are_not(tmp_path: Path) -> None:
    for node in ("pub", "dev0-0", "dev0-1", "dev0-2"):
        _node(tmp_path, node)
    (tmp_path / "nodes" / "pub" / "node.log").write_text("INFO round 8 done\n")
    watch = ExitWatch(tmp_path)
    running = dict.fromkeys(("pub", "dev0-0", "dev0-1", "dev0-2"))

    watch.expect_exit("dev0-1")  # the schedule's crash
    watch.observe({**running, "dev0-1": -9}, after_round=2)
    watch.restarted("dev0-1")
    watch.observe(running, after_round=4)
    new = watch.observe({**running, "pub": -9, "dev0-0": 0, "dev0-2": 3}, after_round=8)
    again = watch.observe({**running, "pub": -9, "dev0-0": 0, "dev0-2": 3}, after_round=8)

    assert [(f.node, f.how) for f in new] == [("dev0-2", "exit code 3"), ("pub", "signal SIGKILL")]
    assert again == [] and watch.failures == new
    line = new[1].line()
    assert "node pub died unexpectedly (signal SIGKILL) after round 8" in line
    assert str(tmp_path / "nodes" / "pub" / "node.log") in line and "round 8 done" in line
    assert "no log written" in new[0].line()


def test_a_restarted_node_that_dies_again_is_a_failure(tmp_path: Path) -> None:
    _node(tmp_path, "dev0-1")
    watch = ExitWatch(tmp_path)
    watch.expect_exit("dev0-1")
    watch.observe({"dev0-1": -9}, 2)
    watch.restarted("dev0-1")

    assert [f.node for f in watch.observe({"dev0-1": 1}, 5)] == ["dev0-1"]


def test_a_run_with_no_contributing_device_is_a_problem(tmp_path: Path) -> None:
    pub = _node(tmp_path, "pub")
    (pub / "node.log").write_text(
        "2026-01-01 WARNING node.schemes.vanilla.publisher: start-up timeout: "
        "2 nodes never said hello: ['dev0-0', 'dev0-1']\n"
    )
    devices = ["dev0-0", "dev0-1"]
    idle = [{"round": 1, "contributors": 0}, {"round": 2, "contributors": 0}]

    problem = device_problem(idle, devices, pub)

    assert problem is not None
    assert "no device contributed in any of the 2 rounds (devices: dev0-0, dev0-1)" in problem
    assert "2 nodes never said hello: ['dev0-0', 'dev0-1']" in problem
    assert device_problem([*idle, {"round": 3, "contributors": 1}], devices, pub) is None
    assert device_problem([], devices, pub) == (
        "no round completed; the publisher's log: start-up timeout: "
        "2 nodes never said hello: ['dev0-0', 'dev0-1']"
    )


def test_startup_counts_follow_the_daemons_files(tmp_path: Path) -> None:
    dirs = {
        "pub": _node(tmp_path, "pub", [{"event": "ready"}]),
        "mec0": _node(tmp_path, "mec0", []),
        "dev0-0": _node(tmp_path, "dev0-0", [{"event": "ready"}, {"event": "round"}]),
        "dev0-1": _node(tmp_path, "dev0-1"),
    }

    assert startup_counts(dirs) == (3, 2)
    assert startup_text(3, 2, 4) == "starting: 3/4 up, 2/4 ready"


def test_progress_shows_startup_then_restarts_its_clock_for_the_rounds(tmp_path: Path) -> None:
    dirs = {"pub": _node(tmp_path, "pub", []), "dev0-0": _node(tmp_path, "dev0-0")}
    out = io.StringIO()
    progress = RunProgress(3, dirs, True, out)
    progress.startup(publisher_started=False)
    progress.bar.start_t -= 40.0  # as if start-up took 40 s

    progress.startup(publisher_started=True)
    progress.rounds_done(1, {"round": 1, "accuracy": 0.5}, 41.0)
    progress.close()

    text = out.getvalue()
    assert "starting: 1/2 up, 0/2 ready" in text
    assert "starting: 2/2 up, 2/2 ready" in text
    assert "round 1" in text and "acc=0.5000" in text and "elapsed=41s" in text
    assert "00:4" not in text.rsplit("round 1", 1)[1], "the bar's clock excludes start-up"


def test_quiet_progress_writes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = RunProgress(3, {"pub": _node(tmp_path, "pub", [])}, False, out)
    progress.startup(publisher_started=False)
    progress.rounds_done(1, {"round": 1, "accuracy": 0.5}, 1.0)
    progress.close()

    assert out.getvalue() == ""
