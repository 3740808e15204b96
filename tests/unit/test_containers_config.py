"""The containernet backend's configuration: the `containers:` section, the image tag, and
the errors a user gets without Docker (no root or engine needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator import image
from orchestrator.cli import main as cli_main
from orchestrator.scenario import ScenarioError, parse_scenario

REPO = Path(__file__).resolve().parents[2]


def test_role_limits_override_the_defaults() -> None:
    s = parse_scenario(
        {"containers": {"cpus": 0.5, "memory_mb": 512, "mec": {"cpus": 2.0}}}
    ).containers
    assert s.limits("mec").cpus == 2.0 and s.limits("mec").memory_mb == 512
    assert s.limits("device").cpus == 0.5 and s.limits("device").memory_mb == 512
    assert parse_scenario({}).containers.limits("publisher").cpus is None


@pytest.mark.parametrize(
    ("containers", "field"),
    [
        ({"memory_mb": 10}, "containers.memory_mb"),
        ({"cpus": 0}, "containers.cpus"),
        ({"device": {"gpus": 1}}, "containers.device.gpus"),
        ({"image": "Bad Image!"}, "containers.image"),
    ],
)
def test_bad_container_fields_are_named(containers: dict[str, object], field: str) -> None:
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        parse_scenario({"backend": "containernet", "containers": containers})


def test_the_image_tag_follows_the_source(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    for part in ("topologies", "node", "orchestrator"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    assert image.source_digest(copy) == image.source_digest(REPO)
    target = copy / "node" / "daemon.py"
    target.write_text(target.read_text() + "\n# changed\n")
    assert image.source_digest(copy) != image.source_digest(REPO)
    assert image.default_tag().endswith("-" + image.source_digest(REPO))


def test_no_engine_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    assert cli_main(["image", "show"]) == 1
    err = capsys.readouterr().err
    assert "no Docker engine answers" in err and "nothing.sock" in err
