"""The local backend forks its daemons from one fork server: same results, nothing left over."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.forkserver import ForkServer, ForkServerError
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.store import open_store
from orchestrator.runner import Run
from orchestrator.scenario import parse_scenario
from topologies.backends.base import Launch
from topologies.backends.local import LocalBackend

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def short_quickstart(rounds: int) -> Any:
    data = yaml.safe_load((REPO / "scenarios" / "quickstart.yaml").read_text())
    data["training"]["rounds"] = rounds
    return parse_scenario(data)


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def global_models(run_dir: Path) -> dict[int, str]:
    """Round -> the hash of the global model the publisher recorded on its ledger."""
    store = open_store(chain_dir(run_dir / "nodes" / "pub", MAIN_CHAIN))
    try:
        out = {}
        for block in store.blocks():
            for tx in block.txs:
                if tx.type == "task.record_global":
                    blob = tx.payload["blob"]
                    out[int(tx.payload["round"])] = blob.hex() if isinstance(blob, bytes) else blob
        return out
    finally:
        store.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_runs_with_one_seed_give_the_same_global_models(tmp_path: Path) -> None:
    parents: list[tuple[int, set[int]]] = []

    def note_parents(run: Run, record: dict[str, Any]) -> None:
        if record["round"] == 1:
            server = run.backend.server_pid
            parents.append((server, {parent_pid(p) for p in run.backend.pids().values()}))

    results = []
    for name in ("a", "b"):
        run = Run(short_quickstart(3), tmp_path / name, progress=False, on_round=note_parents)
        result = run.execute()
        assert result.rounds_completed == 3 and not result.failures
        accuracies = {int(r["round"]): r["accuracy"] for r in run.publisher_rounds()}
        results.append((global_models(tmp_path / name), accuracies))
        assert (tmp_path / name / "forkserver.log").exists()

    assert len(parents) == 2
    for server, daemon_parents in parents:
        assert daemon_parents == {server}, "every daemon is a child of its run's fork server"
    (models_a, acc_a), (models_b, acc_b) = results
    assert sorted(models_a) == [1, 2, 3]
    assert models_a == models_b
    assert acc_a == acc_b


def test_interrupted_run_leaves_no_daemon_and_no_fork_server(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def interrupt(run: Run, record: dict[str, Any]) -> None:
        seen["server"] = run.backend.server_pid
        seen["pids"] = run.backend.pids()
        raise KeyboardInterrupt  # what Ctrl-C raises in the orchestrator's loop

    run = Run(short_quickstart(50), tmp_path / "run", progress=False, on_round=interrupt)
    result = run.execute()

    assert result.interrupted
    assert seen["server"] is not None and not alive(seen["server"])
    assert seen["pids"] and not any(alive(pid) for pid in seen["pids"].values())
    assert run.backend.server_pid is None
    codes = run.backend.poll()
    assert set(codes) == set(seen["pids"]) and all(c is not None for c in codes.values())


def launch(tmp_path: Path, node_id: str, env: dict[str, str]) -> Launch:
    config = tmp_path / node_id / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    return Launch(node_id, ("python", "-m", "node", str(config)), env, config.parent / "out.log")


def test_a_launch_asking_for_another_environment_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend(log_dir=tmp_path)
    other = {**ENV, "PYTHONHASHSEED": "1"}
    with pytest.raises(ValueError, match=r"dev1: environment .* differs"):
        backend.start([launch(tmp_path, "dev0", ENV), launch(tmp_path, "dev1", other)])
    assert backend.server_pid is None and backend.pids() == {}


def test_a_fork_server_that_cannot_start_fails_the_start_before_any_node(tmp_path: Path) -> None:
    backend = LocalBackend(log_dir=tmp_path)
    broken = {**ENV, "PYTHONHOME": str(tmp_path / "no-such-python")}  # its imports fail
    with pytest.raises(ForkServerError, match="fork server"):
        backend.start([launch(tmp_path, "dev0", broken)])
    assert backend.pids() == {} and backend.server_pid is None
    backend.stop()  # after a failed start: nothing to stop, no error


def test_a_forked_child_gets_the_hard_open_files_limit(tmp_path: Path) -> None:
    """A node with 1,000 peers holds ~3,000 fds: the server raises its soft RLIMIT_NOFILE to
    the hard limit and every child inherits it, whatever soft limit the orchestrator had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server = ForkServer(stderr_path=tmp_path / "server.log", env=ENV)
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        log_path = tmp_path / "probe.log"
        pid = server.spawn([], log=log_path, target="probe")
        deadline = time.monotonic() + 60.0
        while server.poll()[pid] is None:  # the server's status of the child is the event
            assert time.monotonic() < deadline, "the probe child did not exit"
            time.sleep(0.05)  # poll interval
        assert server.poll()[pid] == 0
    finally:
        server.stop()

    record = json.loads(log_path.read_text().splitlines()[-1])
    assert record["nofile"] == [hard, hard]


def test_children_find_the_run_file_the_server_preloaded(tmp_path: Path) -> None:
    """The server parses a run's shared file once; a child forked after `preload` has it
    parsed already (it shares the parse instead of reading a 7 MB topology itself)."""
    from topologies.builders import HierarchyParams, build_hierarchy

    shared = tmp_path / "shared.json"
    topo = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=3), 1)
    shared.write_text(json.dumps({"topology": topo.to_dict()}))
    log_path = tmp_path / "probe.log"
    with ForkServer(stderr_path=tmp_path / "server.log", env=ENV) as server:
        assert server.preload(shared) >= 0.0
        pid = server.spawn([], log=log_path, target="probe")
        deadline = time.monotonic() + 60.0
        while server.poll()[pid] is None:  # the server's status of the child is the event
            assert time.monotonic() < deadline, "the probe child did not exit"
            time.sleep(0.05)  # poll interval
        assert server.poll()[pid] == 0
        with pytest.raises(ForkServerError, match="preload"):
            server.preload(tmp_path / "missing.json")

    record = json.loads(log_path.read_text().splitlines()[-1])
    assert record["runfiles"] == [str(shared)]


def test_a_prestarted_fork_server_is_the_one_start_uses_or_stop_ends(tmp_path: Path) -> None:
    """`prestart` launches the server so its imports overlap with writing the run's files;
    `start` then waits for that same server, and `stop` ends one that never got a start."""
    backend = LocalBackend(log_dir=tmp_path)
    backend.prestart(ENV)
    early = backend.server_pid
    assert early is not None and alive(early)
    backend.start([])
    assert backend.server_pid == early
    backend.stop()
    assert backend.server_pid is None

    unused = LocalBackend(log_dir=tmp_path)
    unused.prestart(ENV)
    pid = unused.server_pid
    assert pid is not None
    unused.stop()
    assert unused.server_pid is None and not alive(pid)
