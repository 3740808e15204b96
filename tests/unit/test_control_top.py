"""`bcfl top` and `bcfl control` against a run directory: a node up, one stopped cleanly, one
gone (a stale socket nobody listens on, and one without a socket), none at all; one-line
errors, never a traceback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.control import _params, read_token, write_token
from orchestrator.top import Top, stopped_cleanly
from tests.unit.test_control_server import TOKEN, WAIT_S, Node


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / "run"
    node = Node(run / "nodes" / "dev0-0")
    node.wait_up()
    write_token(run, TOKEN)
    stopped = run / "nodes" / "dev0-1"
    stopped.mkdir(parents=True)
    (stopped / "metrics.jsonl").write_text(json.dumps({"event": "counters"}) + "\n")
    stale = run / "nodes" / "dev0-2"
    stale.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as s:  # bound, then closed: connections are refused
        s.bind(str(stale / "control.sock"))
    (run / "nodes" / "dev0-3").mkdir(parents=True)  # never started: no socket, no counters
    yield run
    node.daemon.stop()
    node.send("t.wake")
    node.thread.join(WAIT_S)


def test_rows_show_up_stopped_and_gone(run_dir: Path) -> None:
    top = Top(run_dir)
    try:
        rows = {r.node: r for r in top.rows()}
    finally:
        top.close()
    assert {n: r.state for n, r in rows.items()} == {
        "dev0-0": "up",
        "dev0-1": "stopped",
        "dev0-2": "gone",
        "dev0-3": "gone",
    }
    up = rows["dev0-0"]
    assert (up.role, up.round, up.peers, up.drops, up.behaviour) == ("device", "3", "0", "0", "")
    assert "does not answer" in rows["dev0-2"].why and "no control socket" in rows["dev0-3"].why
    assert stopped_cleanly(run_dir / "nodes" / "dev0-1")


def test_top_once_prints_every_node(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["top", str(run_dir), "--once"]) == 0
    out = capsys.readouterr().out
    for node, state in (("dev0-0", "up"), ("dev0-1", "stopped"), ("dev0-2", "gone")):
        line = next(line for line in out.splitlines() if f" {node} " in line)
        assert line.rstrip(" │").endswith(state), line
    assert "Traceback" not in out


def test_top_without_sockets_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run" / "nodes" / "dev0-0").mkdir(parents=True)
    assert cli_main(["top", str(tmp_path / "run"), "--once"]) == 1
    assert cli_main(["top", str(tmp_path / "nothing"), "--once"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no node control socket" in err[0] and "not a run" in err[1]


def test_control_cli(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert read_token(run_dir) == TOKEN
    assert (run_dir / "control.token").stat().st_mode & 0o777 == 0o600
    assert cli_main(["control", str(run_dir), "dev0-0", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["node_id"] == "dev0-0"
    assert isinstance(status["round"], int) and isinstance(status["pid"], int)  # not strings
    args = ["malicious", "lazy", "--param", "fraction=0.5", "--from-round", "6"]
    assert cli_main(["control", str(run_dir), "dev0-0", *args]) == 0
    assert capsys.readouterr().out.strip() == "dev0-0: lazy from round 6"
    assert cli_main(["control", str(run_dir), "dev0-0", "malicious", "lazy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bcfl: error: dev0-0: SetBehaviour: INVALID_ARGUMENT: params_json:")
    assert len(err.splitlines()) == 1
    for gone in ("dev0-2", "dev0-3"):
        assert cli_main(["control", str(run_dir), gone, "stop"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{gone}:" in err
    assert cli_main(["control", str(run_dir), "dev0-0", "malicious", "x", "--param", "k"]) == 2
    assert cli_main(["control", str(run_dir), "dev0-0", "recover", "--from-round", "8"]) == 0
    assert capsys.readouterr().out.strip().endswith("dev0-0: recover from round 8")


def test_params_are_json_where_they_parse() -> None:
    assert _params(["a=1", "b=0.5", "c=true", "d=[1, 2]", "mode=reverse", "e="]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": [1, 2],
        "mode": "reverse",
        "e": "",
    }
    with pytest.raises(ValueError, match="--param"):
        _params(["=1"])


def test_live_top_ends_when_the_publisher_is_gone(run_dir: Path) -> None:
    import io

    from rich.console import Console

    from orchestrator.top import run_top

    pub = run_dir / "nodes" / "pub"
    pub.mkdir()
    (pub / "metrics.jsonl").write_text(json.dumps({"event": "counters"}) + "\n")
    out = io.StringIO()
    assert run_top(run_dir, console=Console(file=out, width=200)) == 0
    assert "pub" in out.getvalue() and "stopped" in out.getvalue()
