"""`bcfl run` names the node processes that die unexpectedly (how, and where their log is),
fails when no device took part, and shows node start-up progress; real processes on the
local backend."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

import orchestrator.runner
from orchestrator.cli import main as cli_main
from orchestrator.runner import Run

pytestmark = pytest.mark.integration


def _scenario(tmp_path: Path, **overrides: Any) -> Path:
    """1 BS, 1 MEC, 3 devices on digits with the MLP: 5 node processes."""
    data: dict[str, Any] = {
        "name": "failures",
        "seed": 5,
        "dataset": {"name": "digits"},
        "model": "mlp",
        "training": {"rounds": 2, "local_epochs": 1, "batch_size": 16, "round_deadline_s": 20},
        "topology": {"base_stations": 1, "mecs_per_bs": 1, "devices_per_mec": 3, "t_ms": 2},
        **overrides,
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _use_run(monkeypatch: pytest.MonkeyPatch, run_class: type[Run]) -> None:
    """Make `bcfl run` use `run_class` (`cmd_run` imports Run when it runs)."""
    monkeypatch.setattr(orchestrator.runner, "Run", run_class)


def _break_configs(run: Run, nodes: list[str]) -> None:
    """A config the daemon cannot load: the process exits 1 at start."""
    for node in nodes:
        (run.node_dir(node) / "config.json").write_text('{"node_id": ')


def test_publisher_killed_from_outside_is_named_and_the_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    killed: list[int] = []

    def kill_publisher(run: Run, record: dict[str, Any]) -> None:
        if record["round"] == 2 and not killed:
            os.kill(run.backend.pids()["pub"], signal.SIGKILL)
            killed.append(record["round"])

    class KillPublisher(Run):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, on_round=kill_publisher)

    _use_run(monkeypatch, KillPublisher)
    scenario = _scenario(tmp_path, training={"rounds": 40, "local_epochs": 1, "batch_size": 16})
    out = tmp_path / "run"

    code = cli_main(["run", str(scenario), "--out", str(out)])  # with the progress bar

    err = capsys.readouterr().err
    assert killed == [2]
    assert code == 1
    failures = [ln for ln in err.splitlines() if "died unexpectedly" in ln]
    assert len(failures) == 1, err
    assert re.match(
        r"bcfl: node pub died unexpectedly \(signal SIGKILL\) after round \d+; log ", failures[0]
    ), failures[0]
    assert str(out / "nodes" / "pub" / "node.log") in failures[0]
    meta = json.loads((out / "meta.json").read_text())
    assert [(f["node"], f["how"]) for f in meta["node_failures"]] == [("pub", "signal SIGKILL")]
    assert "starting: 0/5 up, 0/5 ready" in err, "start-up progress is shown"
    assert "starting: 5/5 up, 5/5 ready" in err


def test_a_device_that_dies_at_start_is_named_and_the_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class BrokenDevice(Run):
        def prepare(self) -> list[Any]:
            launches = super().prepare()
            _break_configs(self, ["dev0-1"])
            return launches

    _use_run(monkeypatch, BrokenDevice)
    out = tmp_path / "run"

    # The publisher waits startup_timeout_s for the dead device, and each round its deadline
    # (the outcome does not depend on either: the device is named, the run fails).
    scenario = _scenario(
        tmp_path,
        startup_timeout_s=20,
        training={"rounds": 2, "local_epochs": 1, "batch_size": 16, "round_deadline_s": 4},
    )

    code = cli_main(["run", str(scenario), "--out", str(out), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1, err
    failures = [ln for ln in err.splitlines() if "died unexpectedly" in ln]
    assert len(failures) == 1, err
    assert failures[0].startswith(
        "bcfl: node dev0-1 died unexpectedly (exit code 1) before round 1"
    )
    assert str(out / "nodes" / "dev0-1" / "stdout.log") in failures[0]
    assert "Error" in failures[0], "the log's last line (the exception) is shown"
    assert "starting:" not in err, "--quiet shows no progress"


def test_a_run_in_which_no_device_took_part_is_an_error_not_an_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devices = ["dev0-0", "dev0-1", "dev0-2"]

    class NoDevices(Run):
        def prepare(self) -> list[Any]:
            launches = super().prepare()
            _break_configs(self, devices)
            return launches

    _use_run(monkeypatch, NoDevices)
    out = tmp_path / "run"
    scenario = _scenario(
        tmp_path,
        startup_timeout_s=20,
        training={"rounds": 2, "local_epochs": 1, "batch_size": 16, "round_deadline_s": 3},
    )

    code = cli_main(["run", str(scenario), "--out", str(out), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1, err
    assert sorted(re.findall(r"node (\S+) died unexpectedly \(exit code 1\)", err)) == devices
    errors = [ln for ln in err.splitlines() if ln.startswith("bcfl: error:")]
    assert len(errors) == 1, err
    # Normally both rounds run without devices; on a very slow machine the MEC may also miss
    # the start-up deadline and no round runs. Either way the run says why and fails.
    assert re.search(r"no device contributed in any of the 2 rounds|no round completed", errors[0])
    assert "never said hello" in errors[0] and "dev0-0" in errors[0]
    assert not re.search(r"final test accuracy \d", err), "no accuracy is reported as a result"
    assert json.loads((out / "meta.json").read_text())["problem"] == errors[0].split(": ", 2)[2]
