"""The fork server: children in network namespaces, shared torch pages, a real node daemon."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.forkserver import ForkServer, ForkServerError, setns_net
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario
from topologies.builders import PUBLISHER_ID


def _emu_skip_reason() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, setns)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    return None


SKIP_REASON = _emu_skip_reason()
pytestmark = [
    pytest.mark.emu,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

# A deadline only bounds how long a failure takes to show: every wait ends at its event.
# Generous, because under QEMU's software emulation (vm/test-in-qemu.sh) or at load 10+
# ten children each doing a torch training step took more than 30 s to be ready.
DEADLINE_S = 300.0


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
    """Poll `condition` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def netns_inode(link: str) -> int:
    """The inode from a 'net:[INODE]' namespace link."""
    assert link.startswith("net:[") and link.endswith("]"), link
    return int(link[5:-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    stderr = tmp_path_factory.mktemp("forkserver") / "server.log"
    fs = ForkServer(stderr_path=stderr)
    fs.start()
    try:
        yield fs
    finally:
        try:
            for pid, code in fs.poll().items():
                if code is None:
                    fs.kill(pid, signal.SIGKILL)
        finally:
            fs.stop()


@pytest.fixture
def netns_names() -> Iterator[list[str]]:
    """Three fresh network namespaces, deleted afterwards by their exact names."""
    names = [f"bcfl-t-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    created: list[str] = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            created.append(name)
        yield names
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "delete", name], check=False)


def kernel_made_interfaces(netns: str) -> list[str]:
    """The interfaces the kernel puts into every new namespace: loopback, plus the
    fallback devices of tunnel modules that are loaded (gre0, gretap0, erspan0 once
    ip_gre is: the cluster preflight's GRE probe loads it in the QEMU VM)."""
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())
    assert "lo" in names and not any(n.startswith(("veth", "bcfl", "eth")) for n in names), names
    return names


def probe(server: ForkServer, log: Path, netns: int | str | None) -> dict[str, Any]:
    """Spawn a probe child and return what it reported."""
    pid = server.spawn([], netns=netns, log=log, target="probe", seed=7)
    wait_for(lambda: server.poll().get(pid) is not None, f"probe {pid} to exit")
    assert server.poll()[pid] == 0, read_text(log)
    record: dict[str, Any] = json.loads(read_text(log).splitlines()[-1])
    assert record["pid"] == pid
    return record


def test_probes_land_in_their_namespaces(
    server: ForkServer, netns_names: list[str], tmp_path: Path
) -> None:
    records = {
        name: probe(server, tmp_path / f"{name}.log", f"/run/netns/{name}") for name in netns_names
    }
    root = probe(server, tmp_path / "root.log", None)

    inodes = {netns_inode(r["netns"]) for r in [*records.values(), root]}
    assert len(inodes) == 4, "each child is in a different namespace"
    for name, record in records.items():
        assert netns_inode(record["netns"]) == os.stat(f"/run/netns/{name}").st_ino
        assert sorted(record["interfaces"]) == kernel_made_interfaces(name), (
            "a fresh namespace has only what the kernel puts in every one"
        )
    assert root["netns"] == os.readlink("/proc/self/ns/net")
    assert "lo" in root["interfaces"]


def test_a_pid_names_that_process_namespace(
    server: ForkServer, netns_names: list[str], tmp_path: Path
) -> None:
    holder_log = tmp_path / "holder.log"
    holder = server.spawn([], netns=f"/run/netns/{netns_names[0]}", log=holder_log, target="idle")
    try:
        wait_for(lambda: "ready" in read_text(holder_log), "the namespace holder")

        record = probe(server, tmp_path / "probe.log", holder)

        assert netns_inode(record["netns"]) == os.stat(f"/run/netns/{netns_names[0]}").st_ino
    finally:
        server.kill(holder, signal.SIGKILL)


def test_setns_errors_carry_errno(tmp_path: Path) -> None:
    not_a_namespace = tmp_path / "plain"
    not_a_namespace.write_text("")

    with pytest.raises(OSError) as missing:
        setns_net(str(tmp_path / "absent"))
    with pytest.raises(OSError) as invalid:
        setns_net(str(not_a_namespace))

    assert missing.value.errno == errno.ENOENT
    assert invalid.value.errno == errno.EINVAL


def test_a_failed_namespace_join_is_the_child_exit_code(server: ForkServer, tmp_path: Path) -> None:
    log = tmp_path / "bad.log"

    pid = server.spawn([], netns=str(tmp_path / "absent"), log=log, target="probe")

    code = wait_for(lambda: server.poll().get(pid), "the child to fail")
    assert code == 1
    assert "FileNotFoundError" in read_text(log)


def test_bad_requests_are_refused(server: ForkServer, tmp_path: Path) -> None:
    with pytest.raises(ForkServerError, match="unknown target"):
        server.spawn([], log=tmp_path / "x.log", target="nope")
    with pytest.raises(ForkServerError, match="not a child"):
        server.kill(os.getpid(), signal.SIGTERM)


def smaps_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def test_children_share_torch_pages(server: ForkServer, tmp_path: Path) -> None:
    logs = [tmp_path / f"idle{i}.log" for i in range(10)]
    pids = [server.spawn([], log=log, target="idle_torch", seed=i) for i, log in enumerate(logs)]
    try:
        wait_for(lambda: all("ready" in read_text(log) for log in logs), "children to be ready")

        rollups = [smaps_kb(pid) for pid in pids]

        pss_mb = sum(r["Pss"] for r in rollups) / len(rollups) / 1024
        uss_mb = sum(r["Private_Clean"] + r["Private_Dirty"] for r in rollups) / len(rollups) / 1024
        rss_mb = sum(r["Rss"] for r in rollups) / len(rollups) / 1024
        print(
            f"\n{len(pids)} idle_torch children: mean PSS {pss_mb:.1f} MB, "
            f"private {uss_mb:.1f} MB, RSS {rss_mb:.1f} MB"
        )
        assert pss_mb < 60
    finally:
        for pid in pids:
            server.kill(pid, signal.SIGKILL)
    codes = wait_for(
        lambda: all(server.poll()[p] is not None for p in pids) and server.poll(), "kills"
    )
    assert all(codes[p] == -signal.SIGKILL for p in pids)
    assert not any(Path(f"/proc/{p}").exists() for p in pids), "reaped by the server"
    assert not any(server.kill(p, signal.SIGKILL) for p in pids), "no signal to a reaped PID"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def test_a_forked_child_runs_a_real_node_daemon(server: ForkServer, tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "forkserver",
            "seed": 5,
            "dataset": {"name": "digits"},
            "model": "mlp",
            "training": {
                "rounds": 2,
                "local_epochs": 1,
                "batch_size": 16,
                "learning_rate": 0.1,
                "round_deadline_s": 20,
            },
            "topology": {"base_stations": 1, "mecs_per_bs": 1, "devices_per_mec": 1, "t_ms": 5},
            # the nodes are forked here, not by Run.execute, so nothing would send them the
            # control plane's Start: they start from their configs
            "metrics": {"control_plane": False},
        }
    )
    run = Run(scenario, tmp_path / "run", progress=False)
    launches = run.prepare()

    pids = {
        launch.node_id: server.spawn([launch.argv[-1]], log=launch.log_path) for launch in launches
    }

    metrics = run.node_dir(PUBLISHER_ID) / "metrics.jsonl"
    try:
        wait_for(
            lambda: any(r["event"] == "finished" for r in records(metrics)),
            "the publisher's finished record",
            timeout_s=2 * DEADLINE_S,
        )
        codes = wait_for(
            lambda: all(server.poll()[p] is not None for p in pids.values()) and server.poll(),
            "every node to exit",
            timeout_s=DEADLINE_S,
        )
    finally:
        for pid in pids.values():
            if server.poll().get(pid) is None:
                server.kill(pid, signal.SIGKILL)
    rounds = [r for r in records(metrics) if r["event"] == "round"]
    assert [r["round"] for r in rounds] == [1, 2]
    logs = {nid: read_text(run.node_dir(nid) / "stdout.log") for nid in pids}
    assert all(codes[p] == 0 for p in pids.values()), logs


def test_a_request_interrupted_before_its_reply_does_not_shift_later_replies(
    server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = server._read_reply
    before = set(server.poll())

    def interrupted(timeout_s: float) -> dict[str, Any]:
        monkeypatch.setattr(server, "_read_reply", real_read)
        raise KeyboardInterrupt  # Ctrl-C after the request was sent, before its reply came

    monkeypatch.setattr(server, "_read_reply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        server.spawn(["x"], target="idle", log=tmp_path / "idle.log")

    status = server.poll()  # answered by the status reply, not the spawn's {"pid": N}
    assert all(isinstance(pid, int) for pid in status)
    spawned = [pid for pid in status if pid not in before]
    assert len(spawned) == 1, "the interrupted spawn still forked its child"
    for pid in spawned:
        server.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(server.poll()[p] is not None for p in spawned), "the idle child to die")


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("kill_on_eof", [True, False])
def test_kill_on_eof_kills_the_children_when_the_client_goes(
    tmp_path: Path, kill_on_eof: bool
) -> None:
    """The mininet-cluster backend's remote fork servers (--kill-on-eof): an orchestrator
    killed with -9 closes the ssh connection, and no daemon may stay behind; without the
    flag (one machine) the children outlive the server, as `stop` documents."""
    import sys

    command = [sys.executable, "-m", "node.forkserver", "--serve"]
    fs = ForkServer(command=command + (["--kill-on-eof"] if kill_on_eof else []))
    fs.start()
    child = fs.spawn([], log=tmp_path / "idle.log", target="idle")
    server_pid = fs.pid
    assert server_pid is not None and fs._proc is not None and fs._proc.stdin is not None
    fs._proc.stdin.close()  # what a dropped ssh connection does to the remote server
    fs._proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _gone(child):
        time.sleep(0.05)
    try:
        assert _gone(child) is kill_on_eof
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
