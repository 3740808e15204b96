"""The containernet backend's configuration: the `containers:` section, the image tag, and
the errors a user gets without Docker (no root or engine needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.scenario import ScenarioError, parse_scenario
from topologies.backends import image

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


# What `docker build` says when it cannot pull its base image or pip cannot reach its index
# (host names as in real messages, written as labels so no registry host is spelled here).
_REG = ".".join(("registry-1", "example", "io"))
NO_REGISTRY = [
    f'Get "https://{_REG}/v2/": dial tcp: lookup {_REG} on 10.0.2.3:53: no such host',
    f'Get "https://{_REG}/v2/": dial tcp 10.1.2.3:443: i/o timeout',
    "Temporary failure in name resolution",
    "Failed to establish a new connection: [Errno 101] Network is unreachable",
]
NOT_REGISTRY = [
    "COPY failed: file not found in build context: stat pyproject.toml",
    "no space left on device",
    "The command '/bin/sh -c pip install torch' returned a non-zero code: 1",
]


@pytest.mark.parametrize("message", NO_REGISTRY)
def test_no_registry_errors_mean_building_offline(message: str) -> None:
    assert image.registry_unreachable("docker build failed: " + message)


@pytest.mark.parametrize("message", NOT_REGISTRY)
def test_other_build_errors_are_not_hidden_by_the_fallback(message: str) -> None:
    assert not image.registry_unreachable("docker build failed: " + message)


def _fake_build(monkeypatch: pytest.MonkeyPatch, online_error: str, euid: int = 0) -> list[str]:
    calls: list[str] = []

    def online(client: object, tag: str) -> str:
        calls.append("online")
        raise image.ImageError("docker build failed: " + online_error)

    def offline(client: object, tag: str, mirror: str = "") -> str:
        calls.append("offline")
        return tag

    import topologies.backends.docker_engine as engine

    monkeypatch.setattr(engine, "client", lambda: object())
    monkeypatch.setattr(image, "build_online", online)
    monkeypatch.setattr(image, "build_offline", offline)
    monkeypatch.setattr(image.os, "geteuid", lambda: euid)
    return calls


def test_build_falls_back_to_offline_when_no_registry_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_build(monkeypatch, NO_REGISTRY[0])
    assert image.build(offline=False, tag="bcfl-node:t") == "bcfl-node:t"
    assert calls == ["online", "offline"]
    said = [ln for ln in capsys.readouterr().err.splitlines() if "building offline" in ln]
    assert len(said) == 1 and "no registry reachable" in said[0] and "no such host" in said[0]


def test_build_does_not_fall_back_on_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_build(monkeypatch, NOT_REGISTRY[0])
    with pytest.raises(image.ImageError, match="COPY failed"):
        image.build(offline=False, tag="bcfl-node:t")
    assert calls == ["online"]


def test_fallback_without_root_says_the_offline_build_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_build(monkeypatch, NO_REGISTRY[0], euid=1000)
    with pytest.raises(image.ImageError, match="--offline needs root"):
        image.build(offline=False, tag="bcfl-node:t")
    assert calls == ["online"]


def test_the_offline_mirror_comes_from_the_option_the_variable_or_apt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(image.MIRROR_ENV, "http://env.example/debian")
    assert image._mirror("http://opt.example/debian") == "http://opt.example/debian"
    assert image._mirror() == "http://env.example/debian"
    monkeypatch.delenv(image.MIRROR_ENV)
    (tmp_path / "sources.list").write_text("deb http://proxy.example:3142/debian bookworm main\n")
    assert image._mirror(apt_root=tmp_path) == "http://proxy.example:3142/debian"
    with pytest.raises(image.ImageError, match=r"give one with --mirror or BCFL_DEBIAN_MIRROR"):
        image._mirror(apt_root=tmp_path / "nothing")
