"""The cluster preflight against a real OpenSSH server (a private sshd on 127.0.0.1, as root):
a ready server passes with this machine's code and clock; an unreachable one, a refused key,
a missing interpreter, an interpreter without the project, other code and a tunnel kind the
kernel cannot make are each named with the field to fix. `bcfl cluster check` prints it all.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.emu.sshd import PrivateSshd, missing
from topologies.backends.cluster import preflight
from topologies.backends.cluster.settings import ClusterSection, ServerSettings

pytestmark = [pytest.mark.emu, pytest.mark.kernel]

SKIP = missing()
if SKIP is not None:
    pytest.skip(SKIP, allow_module_level=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSshd]:
    server = PrivateSshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


HERE = ServerSettings(name="here", address="localhost")


def section(server: ServerSettings, **fields: object) -> ClusterSection:
    """This machine and `server` (second: cluster.servers[1])."""
    return ClusterSection.model_validate(
        {"servers": [HERE.model_dump(), server.model_dump()], "tunnel": "ssh", **fields}
    )


def only_report(cluster: ClusterSection, run_dir: str | None = None) -> preflight.ServerReport:
    """The report of the second server (this machine's must pass)."""
    here, report = preflight.check(cluster, run_dir)
    assert here.ok, here.problems
    return report


def test_a_ready_server_passes_with_our_code_and_clock(sshd: PrivateSshd) -> None:
    report = only_report(section(sshd.server()))
    assert report.ok, report.problems
    here = preflight.probe(ServerSettings(name="x", address="localhost"), sys.executable, 15)
    assert report.facts["version"] == here["version"]
    assert report.facts["digest"] == here["digest"] and here["digest"]
    assert report.facts["tools"]["mnexec"] and report.facts["tunnels"]["ssh"]
    assert report.clock_offset_ms is not None and abs(report.clock_offset_ms) < 50


def test_unreachable_and_refused_servers_are_named(sshd: PrivateSshd, tmp_path: Path) -> None:
    closed = PrivateSshd(tmp_path)  # keys made, never started: nothing listens on its port
    report = only_report(section(closed.server(name="down")))
    assert not report.ok and "ssh failed" in report.problems[0]
    assert "cluster.servers[1]" in report.problems[0]
    stranger = tmp_path / "client_key"  # a key the running sshd does not know
    refused = only_report(section(sshd.server(name="stranger", key=str(stranger))))
    assert "ssh failed" in refused.problems[0] and "Permission denied" in refused.problems[0]


def test_wrong_interpreters_are_named(sshd: PrivateSshd, tmp_path: Path) -> None:
    gone = only_report(section(sshd.server(python="/nonexistent/bin/python")))
    assert gone.problems == [
        "python /nonexistent/bin/python not found (give cluster.servers[1].python: the "
        "project's venv interpreter on that server)"
    ]
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    bare_python = str(tmp_path / "bare" / "bin" / "python")
    bare = only_report(section(sshd.server(python=bare_python)))
    assert any(
        p.startswith(f"bcfl-testbed is not installed for {bare_python}") for p in bare.problems
    )


def test_a_run_directory_that_cannot_be_made_is_named(sshd: PrivateSshd, tmp_path: Path) -> None:
    fine = only_report(section(sshd.server()), str(tmp_path / "runs" / "new"))
    assert fine.ok and fine.facts["run_dir_free_gb"] > 0
    for report in preflight.check(section(sshd.server()), "/etc/hostname/runs"):
        assert report.problems == ["the run directory /etc/hostname/runs cannot be made by root"]


def test_other_code_is_refused(sshd: PrivateSshd) -> None:
    cluster = section(sshd.server())
    ours = {"version": "0.0.0", "digest": "0123456789abcdef"}
    report = preflight.check_server(0, cluster.servers[1], cluster, ours)
    assert any(
        "differs from this machine's 0.0.0 (source 0123456789abcdef)" in p for p in report.problems
    )


def test_a_tunnel_kind_the_kernel_lacks_is_named(sshd: PrivateSshd) -> None:
    tunnels = only_report(section(sshd.server())).facts["tunnels"]
    lacking = [kind for kind, ok in tunnels.items() if not ok]
    if not lacking:
        pytest.skip(f"this kernel makes every tunnel kind: {tunnels}")
    for report in preflight.check(section(sshd.server(), tunnel=lacking[0])):
        assert any(f"cannot make a {lacking[0]} tunnel interface" in p for p in report.problems)


def test_bcfl_cluster_check(
    sshd: PrivateSshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = sshd.server(name="peer")
    scenario = tmp_path / "cluster.yaml"
    scenario.write_text(
        "name: cluster\ntopology: {base_stations: 1, mecs_per_bs: 2, devices_per_mec: 3}\n"
        "cluster:\n  tunnel: ssh\n  servers:\n    - {name: here, address: localhost}\n"
        f"    - {{name: peer, address: 127.0.0.1, port: {peer.port}, key: {peer.key}, "
        f"known_hosts: {peer.known_hosts}}}\n"
    )
    # the private sshd is this machine: every check passes, but a run would copy its
    # directory onto itself, so the command says so
    assert main(["cluster", "check", str(scenario)]) == 1
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "here: 1 mec, 3 device, 1 publisher, 1 base-station bridge" in out
    assert "peer: 1 mec, 3 device, 1 base-station bridge" in out
    assert "links between servers (shaped tunnels): 1 backhaul" in out
    assert f"peer (root@127.0.0.1:{peer.port}): ok" in out
    assert err.splitlines()[1:] == [
        f"  server peer (root@127.0.0.1:{peer.port}) is this machine (the same boot id): give "
        "it as address: localhost"
    ]
    scenario.write_text(scenario.read_text().replace(f"port: {peer.port}", "port: 1"))
    assert main(["cluster", "check", str(scenario)]) == 1
    err = capsys.readouterr().err
    assert "server peer (root@127.0.0.1:1): ssh failed" in err


def test_bcfl_run_refuses_a_cluster_it_cannot_use(
    sshd: PrivateSshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing starts: no servers given, a placement naming no node, a server that fails the
    preflight, and a "remote" server that is this machine; each one error line (exit 2)."""
    quickstart = str(Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml")
    args = ["--delay-mode", "userspace", "--quiet"]
    assert (
        main(
            ["run", quickstart, "--backend", "mininet-cluster", "--out", str(tmp_path / "a"), *args]
        )
        == 2
    )
    assert "backend: mininet-cluster needs cluster.servers" in capsys.readouterr().err
    peer = sshd.server(name="peer")
    servers = (
        "  servers:\n    - {name: here, address: localhost}\n"
        f"    - {{name: peer, address: 127.0.0.1, port: PORT, key: {peer.key}, "
        f"known_hosts: {peer.known_hosts}}}\n"
    )
    cases = [
        ("  place: {dev9-9: peer}\n", peer.port, "cluster.place.dev9-9: there is no node"),
        ("", 1, "cluster: the preflight failed: server peer (root@127.0.0.1:1): ssh failed"),
        ("", peer.port, "is this machine (the same boot id): give it as address: localhost"),
    ]
    for i, (extra, port, needle) in enumerate(cases):
        scenario = tmp_path / f"c{i}.yaml"
        scenario.write_text(
            "name: c\nbackend: mininet-cluster\ntopology: {devices_per_mec: 2}\n"
            "cluster:\n  tunnel: ssh\n" + servers.replace("PORT", str(port)) + extra
        )
        assert main(["run", str(scenario), "--out", str(tmp_path / f"r{i}"), *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"r{i}" / "nodes").exists()
